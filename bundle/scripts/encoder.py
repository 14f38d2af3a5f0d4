"""The ViT encoder shared by every network of the bundle: the 2D+T patches of every present plane, one token each.

Shapes (see ``docs/CONTRACTS.md``): ``image`` (B, 1, P, T, H, W), ``plane_mask`` (B, P) bool; the encoder returns an
:class:`EncoderOutput` of K kept token slots of width D, ``tokens`` (B, K, D), out of the subject's
``N = P * T/pt * H/ph * W/pw`` tokens (ordered plane-major then (t, y, x), :mod:`scripts.tokens`).

Missing planes: their tokens are *dropped*, not zeroed. Every sample keeps its present tokens, the batch is padded to
the longest kept sequence, and padded tokens are excluded as attention keys (``attn_mask`` of PyTorch's fused
``scaled_dot_product_attention``), so a subject's outputs do not depend on the pixels of its missing planes nor on the
other samples of the batch.

Tracing (``torch.jit.trace``, used by MONAI ``ckpt_export``): the one-tensor path (``plane_mask=None``) derives the
plane mask with tensor ops. While tracing, the encoder keeps all ``N`` token slots (absent planes are then excluded by
the attention mask alone), so a traced network stays correct for any set of missing planes, at the cost of not
skipping their compute. Masked-autoencoder training (``mask_ratio > 0``) has data-dependent shapes and is not traceable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn

from scripts.tokens import (
    Size3,
    as_size3,
    gather_tokens,
    key_padding_mask,
    patchify,
    random_masking,
    sincos_position_embedding,
)
from scripts.transformer import TransformerBlock, init_transformer_weights


@dataclass
class EncoderOutput:
    """What :meth:`CineEncoder.forward` returns; K = number of token slots kept (padded over the batch).

    Attributes:
        tokens: (B, K, D) final-norm token features.
        token_ids: (B, K) long, index of each slot among the N tokens of the subject.
        token_valid: (B, K) bool, False for padding slots.
        hidden_states: (B, K, D) outputs of the requested blocks, in the order requested.
        mask: (B, N) float, 1 for tokens hidden by random masking.
        num_tokens: N.
    """

    tokens: torch.Tensor
    token_ids: torch.Tensor
    token_valid: torch.Tensor
    hidden_states: list[torch.Tensor]
    mask: torch.Tensor
    num_tokens: int

    def mean_token(self) -> torch.Tensor:
        """(B, D) mean over the real tokens: the subject representation."""
        weights = self.token_valid[..., None].to(self.tokens.dtype)
        return (self.tokens * weights).sum(1) / weights.sum(1)


class CineEncoder(nn.Module):
    """ViT over the 2D+T patches of every present plane.

    Each token = linear patch embedding + fixed sin-cos (t, y, x) embedding + a learned embedding of its canonical
    plane (SA slice index or LA view). Tokens of absent planes are dropped.

    Args:
        num_planes: P, the canonical number of planes (SA slices + 3 LA views); one learned embedding each.
        num_frames: nominal T; checked against ``patch_size`` here, any divisible T is accepted at run time.
        image_size: nominal (H, W) or one int; as ``num_frames``.
        patch_size: (pt, ph, pw).
        hidden_size: token width D.
        num_layers: number of transformer blocks.
        num_heads: attention heads (D must be divisible by it).
        mlp_ratio: MLP width / D.
    """

    def __init__(
        self,
        num_planes: int = 9,
        num_frames: int = 50,
        image_size: int | Sequence[int] = 128,
        patch_size: int | Sequence[int] = (25, 8, 8),
        hidden_size: int = 1024,
        num_layers: int = 6,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if num_planes < 1 or num_layers < 1:
            raise ValueError(f"num_planes and num_layers must be >= 1, got {num_planes} and {num_layers}")
        self.num_planes = num_planes
        self.patch_size = as_size3(patch_size, "patch_size")
        height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.token_grid((num_frames, height, width))  # fail at construction on an impossible nominal size
        self.hidden_size = hidden_size
        self.num_layers = num_layers

        self.patch_embed = nn.Linear(math.prod(self.patch_size), hidden_size)
        self.plane_embed = nn.Parameter(torch.zeros(num_planes, hidden_size))
        self.blocks = nn.ModuleList([TransformerBlock(hidden_size, num_heads, mlp_ratio) for _ in range(num_layers)])
        self.norm = nn.LayerNorm(hidden_size)

        self.apply(init_transformer_weights)
        nn.init.trunc_normal_(self.plane_embed, std=0.02)

    def token_grid(self, size: Sequence[int]) -> Size3:
        """Per-plane token grid (T/pt, H/ph, W/pw) of an input of size (T, H, W); ValueError if not divisible."""
        if any(s % p for s, p in zip(size, self.patch_size)):
            raise ValueError(
                f"frames x height x width {tuple(size)} must be divisible by the patch size {self.patch_size}; "
                "resample the frames or crop/pad the image, or choose another patch_size"
            )
        return tuple(s // p for s, p in zip(size, self.patch_size))  # type: ignore[return-value]

    def check_inputs(self, image: torch.Tensor, plane_mask: torch.Tensor | None) -> torch.Tensor:
        """Validate ``image`` (B, 1, P, T, H, W) and return the (B, P) bool plane mask (derived when None)."""
        if image.ndim != 6 or image.shape[1] != 1 or image.shape[2] != self.num_planes:
            raise ValueError(
                f"image must have shape (B, 1, {self.num_planes}, T, H, W) (one channel, {self.num_planes} canonical "
                f"planes), got {tuple(image.shape)}"
            )
        self.token_grid(image.shape[3:])
        if plane_mask is None:
            # Missing planes are zero-filled by the data layer; a tensor op keeps this traceable.
            return image.abs().amax(dim=(1, 3, 4, 5)) > 0
        if tuple(plane_mask.shape) != tuple(image.shape[:1]) + (self.num_planes,):
            expected = (image.shape[0], self.num_planes)
            raise ValueError(f"plane_mask must have shape (B, P) = {expected}, got {tuple(plane_mask.shape)}")
        plane_mask = plane_mask.to(device=image.device, dtype=torch.bool)
        if not torch.jit.is_tracing() and not bool(plane_mask.any(dim=1).all()):
            raise ValueError("every sample needs at least one present plane (plane_mask has an all-False row)")
        return plane_mask

    def position_embedding(self, grid: Size3, device: torch.device) -> torch.Tensor:
        """(P * prod(grid), D): sin-cos (t, y, x) embedding plus the learned plane embedding, in token order."""
        tokens_per_plane = math.prod(grid)
        position = sincos_position_embedding(grid, self.hidden_size, device=device)
        return position.repeat(self.num_planes, 1) + self.plane_embed.repeat_interleave(tokens_per_plane, dim=0)

    def forward(
        self,
        image: torch.Tensor,
        plane_mask: torch.Tensor | None = None,
        mask_ratio: float = 0.0,
        return_layers: Sequence[int] = (),
    ) -> EncoderOutput:
        """Encode the present planes.

        Args:
            image: (B, 1, P, T, H, W).
            plane_mask: (B, P) bool, or None to treat all-zero planes as absent.
            mask_ratio: share of present tokens hidden from the encoder (MAE pretraining); 0 at inference.
            return_layers: 1-based block numbers whose outputs to return in ``hidden_states``.
        """
        plane_mask = self.check_inputs(image, plane_mask)
        bad_layers = [layer for layer in return_layers if not 1 <= layer <= self.num_layers]
        if bad_layers:
            raise ValueError(f"return_layers must lie in 1..{self.num_layers}, got {bad_layers}")
        grid = self.token_grid(image.shape[3:])
        tokens_per_plane = math.prod(grid)
        present = plane_mask.repeat_interleave(tokens_per_plane, dim=1)
        ids, valid, mask = random_masking(present, mask_ratio)

        # Embed only the kept patches: with 70 % masking or absent planes most of the N patches are never needed.
        patches = gather_tokens(patchify(image, self.patch_size), ids)
        position = self.position_embedding(grid, image.device)[ids]
        x = self.patch_embed(patches) + position
        attn_mask = key_padding_mask(valid)
        hidden_by_layer = {}
        for layer, block in enumerate(self.blocks, start=1):
            x = block(x, attn_mask)
            if layer in return_layers:
                hidden_by_layer[layer] = x
        return EncoderOutput(
            tokens=self.norm(x),
            token_ids=ids,
            token_valid=valid,
            hidden_states=[hidden_by_layer[layer] for layer in return_layers],
            mask=mask,
            num_tokens=present.shape[1],
        )

    def embed(self, image: torch.Tensor, plane_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D) subject representation: mean of the final-norm tokens of the present planes."""
        return self.forward(image, plane_mask).mean_token()
