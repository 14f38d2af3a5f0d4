"""Masked autoencoder across planes (phase I): :class:`CineMAE` and its loss :func:`mae_loss`.

Random masking over all tokens of all present planes, the :class:`~scripts.encoder.CineEncoder` on the visible tokens,
a light transformer decoder over all tokens of the present planes, MSE on the masked patches (MAE's recipe).

Shapes: ``image`` (B, 1, P, T, H, W), ``plane_mask`` (B, P) bool; reconstruction ``pred`` (B, N, pt * ph * pw) and
``mask`` (B, N) over the subject's N tokens (:func:`scripts.tokens.patchify` order; :func:`scripts.tokens.unpatchify`
turns ``pred`` into an image). Training draws the mask at random, so the MAE is not traceable.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from scripts.encoder import CineEncoder, EncoderOutput
from scripts.flags import as_flag
from scripts.tokens import (
    Size3,
    gather_tokens,
    key_padding_mask,
    patchify,
    random_masking,
    scatter_tokens,
    sincos_position_embedding,
)
from scripts.transformer import TransformerBlock, init_transformer_weights


def mae_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix_loss: bool = False) -> torch.Tensor:
    """Mean squared error over the masked patches only.

    Args:
        pred: (B, N, patch_dim) reconstruction.
        target: (B, N, patch_dim) patches of the input (:func:`patchify`).
        mask: (B, N), 1 where the loss applies (hidden tokens of present planes).
        norm_pix_loss: normalise each target patch to zero mean and unit variance first (MAE's ``norm_pix_loss``).

    Returns:
        scalar float32 loss (0 when nothing is masked).
    """
    target = target.float()
    if norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6).sqrt()
    per_patch = (pred.float() - target).pow(2).mean(dim=-1)
    mask = mask.float()
    return (per_patch * mask).sum() / mask.sum().clamp(min=1.0)


class CineMAE(nn.Module):
    """Masked autoencoder across planes: random masking over all tokens of all present planes, encoder on the visible
    tokens, light transformer decoder over all tokens of the present planes, MSE on the masked patches.

    Args:
        encoder: the :class:`CineEncoder` (state-dict prefix ``encoder.``).
        decoder_hidden_size: decoder width.
        decoder_layers: decoder blocks.
        decoder_heads: decoder attention heads.
        mask_ratio: default share of masked tokens.
        norm_pix_loss: per-patch normalised reconstruction target.
    """

    def __init__(
        self,
        encoder: CineEncoder,
        decoder_hidden_size: int = 512,
        decoder_layers: int = 2,
        decoder_heads: int = 16,
        mask_ratio: float = 0.7,
        norm_pix_loss: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must lie in (0, 1) for pretraining, got {mask_ratio}")
        self.encoder = encoder
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = as_flag(norm_pix_loss, "norm_pix_loss")
        patch_dim = math.prod(encoder.patch_size)

        self.decoder_embed = nn.Linear(encoder.hidden_size, decoder_hidden_size)
        self.mask_token = nn.Parameter(torch.zeros(decoder_hidden_size))
        self.decoder_plane_embed = nn.Parameter(torch.zeros(encoder.num_planes, decoder_hidden_size))
        self.decoder_blocks = nn.ModuleList(
            [TransformerBlock(decoder_hidden_size, decoder_heads) for _ in range(decoder_layers)]
        )
        self.decoder_norm = nn.LayerNorm(decoder_hidden_size)
        self.decoder_pred = nn.Linear(decoder_hidden_size, patch_dim)

        for module in (self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_pred):
            module.apply(init_transformer_weights)
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.decoder_plane_embed, std=0.02)

    def forward_decoder(self, encoded: EncoderOutput, present: torch.Tensor, grid: Size3) -> torch.Tensor:
        """Reconstruct every patch of the present planes: returns (B, N, patch_dim), zeros for absent planes."""
        num_tokens = encoded.num_tokens
        visible = scatter_tokens(self.decoder_embed(encoded.tokens), encoded.token_ids, encoded.token_valid, num_tokens)
        is_visible = (present & (encoded.mask == 0))[..., None]
        x = torch.where(is_visible, visible, self.mask_token.to(visible.dtype))
        position = sincos_position_embedding(grid, x.shape[-1], device=x.device).repeat(self.encoder.num_planes, 1)
        x = x + position + self.decoder_plane_embed.repeat_interleave(math.prod(grid), dim=0)

        # The decoder also drops absent planes: it attends over all tokens of the present planes only.
        ids, valid, _ = random_masking(present, 0.0)
        x = gather_tokens(x, ids)
        attn_mask = key_padding_mask(valid)
        for block in self.decoder_blocks:
            x = block(x, attn_mask)
        pred = self.decoder_pred(self.decoder_norm(x))
        return scatter_tokens(pred, ids, valid, num_tokens)

    def forward(
        self, image: torch.Tensor, plane_mask: torch.Tensor | None = None, mask_ratio: float | None = None
    ) -> dict[str, torch.Tensor]:
        """Returns dict(loss=scalar, pred=(B, N, patch_dim), mask=(B, N) float, 1 = masked token).

        ``unpatchify(pred, P, grid, patch_size)`` gives the reconstruction as an image.
        """
        plane_mask = self.encoder.check_inputs(image, plane_mask)
        grid = self.encoder.token_grid(image.shape[3:])
        present = plane_mask.repeat_interleave(math.prod(grid), dim=1)
        encoded = self.encoder(image, plane_mask, mask_ratio=self.mask_ratio if mask_ratio is None else mask_ratio)
        pred = self.forward_decoder(encoded, present, grid)
        loss = mae_loss(pred, patchify(image, self.encoder.patch_size), encoded.mask, self.norm_pix_loss)
        return {"loss": loss, "pred": pred, "mask": encoded.mask}
