"""Whole-heart 2D+T cine network: masked-autoencoder pretraining, all-planes segmentation, phenotype regression.

One model file in the spirit of the MAE reference implementation (``models_mae.py``):

- helpers: :func:`patchify`, :func:`unpatchify`, :func:`random_masking`, :func:`mae_loss`, token gather/scatter;
- :class:`CineEncoder`: a ViT over the 2D+T patches of every present plane (SA slices and LA views);
- :class:`CineMAE`: encoder + light decoder reconstructing masked patches (phase I);
- :class:`CineSegmenter`: UNETR-like convolutional decoder producing logits for every plane and frame;
- :class:`PhenotypeHead`: shallow head regressing all phenotypes at once from the subject representation;
- :class:`CineHeartNet`: encoder + segmentation decoder + phenotype head, the network the bundle ships;
- presets (``paper``, ``small``, ``tiny``) and :func:`build_network`, :func:`load_encoder_weights`,
  :func:`autocast_context`.

Shapes (see ``docs/CONTRACTS.md``): ``image`` (B, 1, P, T, H, W), ``plane_mask`` (B, P) bool, segmentation logits
(B, 6, P, T, H, W). A plane is cut into patches of ``patch_size = (pt, ph, pw)``, giving a token grid
``(T / pt, H / ph, W / pw)`` per plane and ``N = P * T/pt * H/ph * W/pw`` tokens per subject, ordered plane-major then
(t, y, x).

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

import contextlib
import math
import os
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from scripts.flags import as_flag
from scripts.labels import NUM_CLASSES, PHENOTYPE_NAMES
from scripts.measures import MEASURE_FEATURE_NAMES

__all__ = [
    "CineEncoder",
    "CineHeartNet",
    "CineMAE",
    "CineSegmenter",
    "EncoderOutput",
    "NetConfig",
    "PRESETS",
    "PhenotypeHead",
    "autocast_context",
    "build_network",
    "load_encoder_weights",
    "mae_loss",
    "paper_preset",
    "patchify",
    "random_masking",
    "small_preset",
    "sincos_position_embedding",
    "temporal_upsampling_factors",
    "tiny_preset",
    "unpatchify",
]

Size3 = tuple[int, int, int]


# --------------------------------------------------------------------------------------------------
# Patches, masking and token bookkeeping
# --------------------------------------------------------------------------------------------------
def patchify(image: torch.Tensor, patch_size: Sequence[int]) -> torch.Tensor:
    """Cut every plane into 2D+T patches.

    Args:
        image: (B, 1, P, T, H, W).
        patch_size: (pt, ph, pw); T, H, W must be divisible by it.

    Returns:
        (B, N, pt * ph * pw) with N = P * T/pt * H/ph * W/pw, tokens ordered plane-major then (t, y, x).
    """
    pt, ph, pw = patch_size
    b, _, p, t, h, w = image.shape
    patches = image.reshape(b, p, t // pt, pt, h // ph, ph, w // pw, pw)
    patches = patches.permute(0, 1, 2, 4, 6, 3, 5, 7)
    return patches.reshape(b, p * (t // pt) * (h // ph) * (w // pw), pt * ph * pw)


def unpatchify(patches: torch.Tensor, num_planes: int, grid: Sequence[int], patch_size: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`patchify`.

    Args:
        patches: (B, N, pt * ph * pw) with N = num_planes * prod(grid).
        num_planes: P.
        grid: the per-plane token grid (T/pt, H/ph, W/pw).
        patch_size: (pt, ph, pw).

    Returns:
        (B, 1, P, T, H, W).
    """
    pt, ph, pw = patch_size
    gt, gh, gw = grid
    b = patches.shape[0]
    image = patches.reshape(b, num_planes, gt, gh, gw, pt, ph, pw)
    image = image.permute(0, 1, 2, 5, 3, 6, 4, 7)
    return image.reshape(b, 1, num_planes, gt * pt, gh * ph, gw * pw)


def random_masking(present: torch.Tensor, mask_ratio: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Choose the tokens the encoder sees: a random ``1 - mask_ratio`` share of each sample's present tokens.

    Tokens of absent planes are never kept and never count as masked. Samples keep different numbers of tokens
    (their planes differ), so the kept indices are padded to the longest sample and ``keep_valid`` marks real entries.
    With ``mask_ratio == 0`` every present token is kept, in token order.

    Args:
        present: (B, N) bool, True for tokens of present planes.
        mask_ratio: share of each sample's present tokens to hide, in [0, 1).

    Returns:
        ids_keep: (B, K) long, indices into the N tokens; distinct within a sample (padding points at unused tokens).
        keep_valid: (B, K) bool, False for padding.
        mask: (B, N) float, 1 for hidden tokens of present planes (where the reconstruction loss applies), else 0.
    """
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must lie in [0, 1), got {mask_ratio}")
    batch, num_tokens = present.shape
    # Absent tokens get the largest score so that a (stable) sort puts them last; present ones are shuffled by noise.
    score = torch.rand(batch, num_tokens, device=present.device) if mask_ratio > 0 else present.new_zeros(present.shape)
    score = score.float().masked_fill(~present, 2.0)
    ids_sorted = torch.argsort(score, dim=1, stable=True)
    num_keep = (present.sum(1) * (1.0 - mask_ratio)).floor().long().clamp(min=1)
    if not torch.jit.is_tracing():
        # Eager: drop the tail no sample needs. Tracing keeps all N slots so that the traced graph is valid for any
        # plane mask (the attention mask alone then excludes absent planes).
        ids_sorted = ids_sorted[:, : int(num_keep.max())]
    keep_valid = torch.arange(ids_sorted.shape[1], device=present.device)[None, :] < num_keep[:, None]
    kept = torch.zeros_like(present).scatter(1, ids_sorted, keep_valid)
    mask = (present & ~kept).float()
    return ids_sorted, keep_valid, mask


def gather_tokens(tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Select tokens: (B, N, C), ids (B, K) -> (B, K, C)."""
    return torch.gather(tokens, 1, ids[..., None].expand(-1, -1, tokens.shape[-1]))


def scatter_tokens(tokens: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Put kept tokens back in place: (B, K, C), ids/valid (B, K) -> (B, N, C), zeros where nothing was kept."""
    batch, _, channels = tokens.shape
    out = tokens.new_zeros(batch, num_tokens, channels)
    values = tokens * valid[..., None].to(tokens.dtype)
    return out.scatter(1, ids[..., None].expand(-1, -1, channels), values)


def key_padding_mask(valid: torch.Tensor) -> torch.Tensor | None:
    """SDPA boolean mask (B, 1, 1, K) letting every query attend only to real tokens; None when nothing is padded.

    Skipping the mask when possible keeps the fastest fused kernels; while tracing it is always built because the
    plane mask is an input of the traced graph.
    """
    if not torch.jit.is_tracing() and bool(valid.all()):
        return None
    return valid[:, None, None, :]


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


def sincos_position_embedding(grid: Sequence[int], dim: int, device: torch.device | None = None) -> torch.Tensor:
    """Fixed sin-cos embedding of the (t, y, x) token grid.

    Each axis gets ``2 * (dim // 6)`` channels (half sine, half cosine, MAE's frequencies); leftover channels are zero.

    Returns:
        (prod(grid), dim) float32, rows in (t, y, x) order.
    """
    per_axis = dim // 6
    if per_axis == 0:
        raise ValueError(f"the embedding width must be at least 6 to encode (t, y, x), got {dim}")
    omega = 1.0 / 10000.0 ** (torch.arange(per_axis, dtype=torch.float32, device=device) / per_axis)
    coords = torch.meshgrid(*[torch.arange(n, dtype=torch.float32, device=device) for n in grid], indexing="ij")
    parts = []
    for coord in coords:
        angles = coord.reshape(-1, 1) * omega[None, :]
        parts += [torch.sin(angles), torch.cos(angles)]
    embedding = torch.cat(parts, dim=1)
    return F.pad(embedding, (0, dim - embedding.shape[1]))


# --------------------------------------------------------------------------------------------------
# Transformer block
# --------------------------------------------------------------------------------------------------
class SelfAttention(nn.Module):
    """Multi-head self-attention on PyTorch's fused ``scaled_dot_product_attention`` with an optional key mask."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"width {dim} must be divisible by the number of heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, K, D); attn_mask: (B, 1, 1, K) bool, True = may be attended to. Returns (B, K, D)."""
        batch, length, dim = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=attn_mask)
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


class TransformerBlock(nn.Module):
    """Pre-norm ViT block.

    Written here rather than taken from ``monai.networks.blocks.TransformerBlock`` so that the attention mask always
    goes to the fused kernel with SDPA's broadcast semantics, the state-dict keys do not move with MONAI releases, and
    no unused cross-attention parameters are created. (MONAI's ``MaskedAutoEncoderViT`` has no plane embedding and no
    way to drop the tokens of absent planes, hence the own encoder.)
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), attn_mask)
        return x + self.mlp(self.norm2(x))


def _init_transformer_weights(module: nn.Module) -> None:
    """MAE initialisation: xavier-uniform linears with zero bias, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def _as_size3(value: int | Sequence[int], name: str) -> Size3:
    size = (value,) * 3 if isinstance(value, int) else tuple(int(v) for v in value)
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"{name} must be one positive int or three (t, y, x), got {value!r}")
    return size  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------------
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
        self.patch_size = _as_size3(patch_size, "patch_size")
        height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.token_grid((num_frames, height, width))  # fail at construction on an impossible nominal size
        self.hidden_size = hidden_size
        self.num_layers = num_layers

        self.patch_embed = nn.Linear(math.prod(self.patch_size), hidden_size)
        self.plane_embed = nn.Parameter(torch.zeros(num_planes, hidden_size))
        self.blocks = nn.ModuleList([TransformerBlock(hidden_size, num_heads, mlp_ratio) for _ in range(num_layers)])
        self.norm = nn.LayerNorm(hidden_size)

        self.apply(_init_transformer_weights)
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


# --------------------------------------------------------------------------------------------------
# Masked autoencoder (phase I)
# --------------------------------------------------------------------------------------------------
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
            module.apply(_init_transformer_weights)
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


# --------------------------------------------------------------------------------------------------
# Segmentation decoder (phase II)
# --------------------------------------------------------------------------------------------------
def temporal_upsampling_factors(patch_frames: int, num_steps: int) -> list[int]:
    """Spread the temporal patch size over the decoder's upsampling steps, largest factors at the lowest resolution.

    E.g. 25 over 4 steps -> [5, 5, 1, 1]; 8 over 3 -> [2, 2, 2]. Doing the time upsampling early is cheap (small
    tensors) and lets every later stage see all frames.
    """
    primes, rest, divisor = [], patch_frames, 2
    while rest > 1:
        while rest % divisor == 0:
            primes.append(divisor)
            rest //= divisor
        divisor += 1
    factors = [1] * num_steps
    for prime in sorted(primes, reverse=True):
        factors[factors.index(min(factors))] *= prime
    return factors


def _conv_norm_act(in_channels: int, out_channels: int, in_plane: bool = False) -> list[nn.Module]:
    """Conv (3x3x3, or 1x3x3 ``in_plane``) + instance norm + LeakyReLU.

    Instance norm is per plane (planes are batch entries) so planes stay independent; GroupNorm measured slower on
    CPU, and an in-place activation after InstanceNorm (a view) makes autograd copy the whole tensor.
    """
    kernel, padding = ((1, 3, 3), (0, 1, 1)) if in_plane else (3, 1)
    return [
        nn.Conv3d(in_channels, out_channels, kernel_size=kernel, padding=padding, bias=False),
        nn.InstanceNorm3d(out_channels, affine=True),
        nn.LeakyReLU(0.01),
    ]


class CineSegmenter(nn.Module):
    """UNETR-like decoder: encoder hidden states + raw image -> logits for every plane and frame.

    Planes are folded into the batch, so every convolution is 3D over (t, y, x) within one plane and a plane's logits
    never depend on other planes' decoder features (only through attention in the encoder). Stages run from the token
    grid (stage S) to full resolution (stage 0), doubling y and x per step (``ph = pw = 2**S``) and spreading the
    temporal patch size over the steps (:func:`temporal_upsampling_factors`):

    - stage S: deepest skip (last encoder layer) projected to ``channels[S]`` on the token grid, two conv blocks;
    - stage k = S-1..0: transposed conv (kernel = stride) from stage k + 1 to ``channels[k]``; add the skip of encoder
      layer ``skip_layers[k - 1]`` (projected per token, trilinearly resized to stage k; k >= 1) or, at k = 0, a
      full-resolution in-plane conv of the raw image; for 1 <= k < ``image_levels`` also the raw image average-pooled
      to stage k's grid through its own in-plane conv, so the 3D blocks of the coarser stages see every frame's image
      and not only the encoder's tokens (25 frames each at the paper's patch); conv blocks: two per stage from 1/4
      resolution down, one at half resolution and one in-plane (1x3x3) at full resolution, because the high-resolution
      stages dominate the compute on CPU (temporal context comes from the lower stages);
    - per-voxel linear layer to ``num_classes``.

    Args:
        hidden_size: encoder width D.
        patch_size: encoder patch (pt, ph, pw); ph == pw must be a power of two.
        encoder_layers: encoder depth; the skips come from layers at k/S of it (k = 1..S).
        channels: decoder widths from full resolution to the token grid, ``S + 1`` entries.
        num_classes: output classes.
        image_levels: how many stages, from full resolution up, read the raw image (1 = full resolution only).
    """

    def __init__(
        self,
        hidden_size: int,
        patch_size: Sequence[int],
        encoder_layers: int,
        channels: Sequence[int] = (8, 16, 32, 64),
        num_classes: int = NUM_CLASSES,
        image_levels: int = 1,
    ) -> None:
        super().__init__()
        pt, ph, pw = _as_size3(patch_size, "patch_size")
        num_steps = int(math.log2(ph)) if ph > 1 else 0
        if ph != pw or num_steps < 1 or 2**num_steps != ph:
            raise ValueError(
                f"the segmentation decoder doubles y and x per stage, so the patch height and width must be the same "
                f"power of two >= 2, got patch_size {tuple(patch_size)}"
            )
        if len(channels) != num_steps + 1:
            raise ValueError(
                f"seg_channels needs one width per stage from full resolution to the token grid: "
                f"log2({ph}) + 1 = {num_steps + 1} entries, got {tuple(channels)}"
            )
        if not 1 <= image_levels <= num_steps + 1:
            raise ValueError(
                f"image_levels must lie in [1, {num_steps + 1}] (the decoder's stages), got {image_levels}"
            )
        self.num_steps = num_steps
        self.image_levels = image_levels
        # Evenly spaced encoder layers (UNETR uses 3, 6, 9, 12 of 12); skip_layers[k - 1] feeds stage k.
        self.skip_layers = tuple(math.ceil(encoder_layers * k / num_steps) for k in range(1, num_steps + 1))
        time_factors = temporal_upsampling_factors(pt, num_steps)

        # skip_proj[k - 1] maps encoder layer skip_layers[k - 1] to stage k's width (per token, before any upsampling:
        # projecting first keeps the resized tensors thin).
        self.skip_proj = nn.ModuleList(
            [
                nn.Sequential(nn.LayerNorm(hidden_size), nn.Linear(hidden_size, channels[k]))
                for k in range(1, num_steps + 1)
            ]
        )
        self.bottleneck = nn.Sequential(
            *_conv_norm_act(channels[num_steps], channels[num_steps]),
            *_conv_norm_act(channels[num_steps], channels[num_steps]),
        )
        self.upsample = nn.ModuleList()
        self.stages = nn.ModuleList()
        for k in range(num_steps - 1, -1, -1):
            stride = (time_factors[num_steps - 1 - k], 2, 2)
            self.upsample.append(nn.ConvTranspose3d(channels[k + 1], channels[k], kernel_size=stride, stride=stride))
            if k >= 2:
                blocks = _conv_norm_act(channels[k], channels[k]) + _conv_norm_act(channels[k], channels[k])
            else:
                blocks = _conv_norm_act(channels[k], channels[k], in_plane=k == 0)
            self.stages.append(nn.Sequential(*blocks))
        # Linear in-plane filters of the raw image; the merged stage-0 block supplies norm and nonlinearity.
        self.image_branch = nn.Conv3d(1, channels[0], kernel_size=(1, 3, 3), padding=(0, 1, 1))
        # coarse_image_branches[k - 1] feeds stage k (k = 1 .. image_levels - 1) the pooled image.
        self.coarse_image_branches = nn.ModuleList(
            [nn.Conv3d(1, channels[k], kernel_size=(1, 3, 3), padding=(0, 1, 1)) for k in range(1, image_levels)]
        )
        # A per-voxel Linear on the channels-last features rather than a 1x1x1 Conv3d: same map, but oneDNN's 1x1x1
        # convolution with few channels measured ~10x slower at full resolution on CPU.
        self.head = nn.Linear(channels[0], num_classes)

    def token_volume(
        self,
        tokens: torch.Tensor,
        encoded: EncoderOutput,
        grid: Size3,
        num_planes: int,
        decode_planes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Kept tokens (B, K, C) -> per-plane feature volume (B * P', C, *grid), zeros for absent planes.

        P' = P, or the planes listed in ``decode_planes`` (long (P',)).
        """
        full = scatter_tokens(tokens, encoded.token_ids, encoded.token_valid, encoded.num_tokens)
        batch, _, channels = full.shape
        volume = full.reshape(batch, num_planes, *grid, channels)
        if decode_planes is not None:
            volume = volume[:, decode_planes]
        volume = volume.permute(0, 1, 5, 2, 3, 4)
        return volume.reshape(-1, channels, *grid).contiguous(memory_format=torch.channels_last_3d)

    def forward(
        self,
        image: torch.Tensor,
        encoded: EncoderOutput,
        grid: Size3,
        decode_planes: torch.Tensor | None = None,
        decode_frames: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """image (B, 1, P, T, H, W) + encoder output with ``hidden_states`` of ``skip_layers`` -> (B, C, P', T', H, W).

        ``decode_planes`` (long (P',)) decodes only those planes: the decoder works plane by plane, so training can
        spend its full-resolution compute on a few planes per step while the encoder still sees all of them.
        ``decode_frames`` (long (T',)) runs the full-resolution stage on those frames only. That stage works frame by
        frame (in-plane convolutions, no temporal upsampling), so a frame's logits are those of the whole pass except
        that stage 0's instance norm takes its statistics over the T' frames; it is most of a CPU training step.
        """
        if len(encoded.hidden_states) != self.num_steps:
            raise ValueError(f"expected the encoder hidden states of layers {self.skip_layers}")
        batch, _, num_planes, frames, height, width = image.shape
        if decode_frames is not None:
            if self.upsample[-1].stride[0] != 1:
                raise ValueError(
                    f"decode_frames needs a full-resolution stage without temporal upsampling; this decoder's last "
                    f"step upsamples time by {self.upsample[-1].stride[0]} (more temporal patch factors than steps)"
                )
        planes = image if decode_planes is None else image[:, :, decode_planes]
        planes = planes.permute(0, 2, 1, 3, 4, 5).reshape(-1, 1, frames, height, width)
        planes = planes.contiguous(memory_format=torch.channels_last_3d)  # (B * P', 1, T, H, W)
        x = self.token_volume(self.skip_proj[-1](encoded.hidden_states[-1]), encoded, grid, num_planes, decode_planes)
        # The token-grid convolutions run in fp32: under CPU bf16 autocast, oneDNN's Conv3d weight gradient on such
        # small volumes (e.g. 2x8x8) came out non-finite in ~1 of 5 steps (measured on torch 2.13); they are cheap.
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = self.bottleneck(x.float())
        for step, (upsample, stage) in enumerate(zip(self.upsample, self.stages)):
            k = self.num_steps - 1 - step
            if k == 0 and decode_frames is not None:
                x = x[:, :, decode_frames]
                planes = planes[:, :, decode_frames]
            x = upsample(x)
            if k > 0:
                hidden = self.skip_proj[k - 1](encoded.hidden_states[k - 1])
                skip = self.token_volume(hidden, encoded, grid, num_planes, decode_planes)
                x = x + F.interpolate(skip, size=x.shape[2:], mode="trilinear", align_corners=False)
                if k < self.image_levels:
                    pooled = F.adaptive_avg_pool3d(planes, x.shape[2:])
                    x = x + self.coarse_image_branches[k - 1](pooled)
            else:
                x = x + self.image_branch(planes)
            x = stage(x)
        logits = self.head(x.permute(0, 2, 3, 4, 1))  # (B * P', T, H, W, classes)
        return logits.reshape(batch, -1, *logits.shape[1:]).permute(0, 5, 1, 2, 3, 4)


# --------------------------------------------------------------------------------------------------
# Phenotype head and the shipped network
# --------------------------------------------------------------------------------------------------
class PhenotypeHead(nn.Module):
    """Shallow head predicting all phenotypes at once in normalised units.

    ``target_mean`` / ``target_std`` (buffers, saved with the weights) map predictions to mL / % / g; set them from
    the training targets with :meth:`set_target_stats`. ``feature_mean`` / ``feature_std`` (D,) standardise the
    representation first (:meth:`set_feature_stats`): a mean-pooled ViT embedding is dominated by a component shared
    by all subjects, and its informative directions are small beside it.

    Args:
        in_features: representation width D.
        num_outputs: K, defaults to ``len(labels.PHENOTYPE_NAMES)``.
        hidden_size: width of a hidden layer (Linear-GELU-Linear); 0 (default) for the linear head of the paper,
            which :meth:`set_linear` can set in closed form.
    """

    def __init__(self, in_features: int, num_outputs: int = len(PHENOTYPE_NAMES), hidden_size: int = 0) -> None:
        super().__init__()
        if hidden_size > 0:
            self.mlp = nn.Sequential(
                nn.Linear(in_features, hidden_size), nn.GELU(), nn.Linear(hidden_size, num_outputs)
            )
        else:
            self.mlp = nn.Sequential(nn.Linear(in_features, num_outputs))
        self.register_buffer("target_mean", torch.zeros(num_outputs))
        self.register_buffer("target_std", torch.ones(num_outputs))
        self.register_buffer("feature_mean", torch.zeros(in_features))
        self.register_buffer("feature_std", torch.ones(in_features))

    @staticmethod
    def _checked_stats(
        mean: torch.Tensor | Sequence[float], std: torch.Tensor | Sequence[float], size: int, what: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if mean.numel() != size or std.numel() != size:
            raise ValueError(f"{what} mean and std need {size} values, got {mean.numel()} and {std.numel()}")
        if not bool((std > 0).all()):
            raise ValueError(f"every {what} std must be > 0")
        return mean, std

    def set_feature_stats(self, mean: torch.Tensor | Sequence[float], std: torch.Tensor | Sequence[float]) -> None:
        """Store the mean and standard deviation (D,) of the training representations."""
        mean, std = self._checked_stats(mean, std, self.feature_mean.numel(), "feature")
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std)

    def set_target_stats(self, mean: torch.Tensor | Sequence[float], std: torch.Tensor | Sequence[float]) -> None:
        """Store the per-phenotype mean and standard deviation (K,) of the training targets (physical units)."""
        mean, std = self._checked_stats(mean, std, self.target_mean.numel(), "target")
        self.target_mean.copy_(mean)
        self.target_std.copy_(std)

    @property
    def is_linear(self) -> bool:
        return len(self.mlp) == 1

    def set_linear(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Set a linear head's weight (K, D) and bias (K,) (tensors or arrays), on standardised features and
        normalised targets."""
        if not self.is_linear:
            raise ValueError("set_linear needs a linear phenotype head (hidden_size 0)")
        layer = self.mlp[0]
        weight = torch.as_tensor(weight, dtype=layer.weight.dtype)
        bias = torch.as_tensor(bias, dtype=layer.bias.dtype)
        if weight.shape != layer.weight.shape or bias.shape != layer.bias.shape:
            raise ValueError(
                f"linear head needs weight {tuple(layer.weight.shape)} and bias {tuple(layer.bias.shape)}, "
                f"got {tuple(weight.shape)} and {tuple(bias.shape)}"
            )
        with torch.no_grad():
            layer.weight.copy_(weight)
            layer.bias.copy_(bias)

    def forward(self, representation: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, K) normalised predictions (train against (target - mean) / std)."""
        standardised = (representation.float() - self.feature_mean) / self.feature_std
        return self.mlp(standardised.to(representation.dtype))

    def predict_physical(self, representation: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, K) in physical units (order of ``labels.PHENOTYPE_NAMES``)."""
        return self.forward(representation).float() * self.target_std + self.target_mean


class MeasureHead(PhenotypeHead):
    """Linear phenotype head on what is measured on the network's own segmentation (``measures.measure_features``:
    the 17 measured phenotypes and the ventricular volume curves' quantiles), fit in closed form by
    :func:`scripts.engines.fit_measure_head`.

    Measures on a segmentation are biased where the segmentation is (a decoder that flattens the cycle reads ED too
    small and ES too large); a linear map fit on labelled subjects removes what is systematic. A measure that a
    missing view leaves NaN enters as the training mean. ``fitted`` (a buffer, saved with the weights) says whether
    the head has been fit; weights saved before the head existed load with it unfit.
    """

    def __init__(self, in_features: int, num_outputs: int = len(PHENOTYPE_NAMES)) -> None:
        super().__init__(in_features, num_outputs)
        self.register_buffer("fitted", torch.tensor(False))
        # fit in closed form only: no optimiser of the network's training moves (or weight-decays) it
        self.mlp.requires_grad_(False)

    def set_linear(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().set_linear(weight, bias)
        self.fitted.fill_(True)

    def forward(self, representation: torch.Tensor) -> torch.Tensor:
        """(B, F) measures (NaN where unmeasured) -> (B, K) normalised predictions."""
        standardised = torch.nan_to_num((representation.float() - self.feature_mean) / self.feature_std, nan=0.0)
        return self.mlp(standardised)


class CineHeartNet(nn.Module):
    """The bundle's network: shared encoder, all-planes segmentation decoder, phenotype head on the embedding and
    measure head on what is measured on the segmentation (applied by inference, outside ``forward``).

    ``forward(image)`` is the one-tensor segmentation call used by MONAI inferers, ``verify_net_in_out`` and
    ``torch.jit.trace``.

    Args:
        encoder: the :class:`CineEncoder` (state-dict prefix ``encoder.``, shared with :class:`CineMAE`).
        seg_channels: segmentation decoder widths, full resolution first (see :class:`CineSegmenter`).
        num_classes: segmentation classes.
        num_phenotypes: phenotype outputs.
        phenotype_hidden: hidden width of the phenotype head (0 = linear, the paper's).
        image_levels: decoder stages that read the raw image (see :class:`CineSegmenter`).
    """

    def __init__(
        self,
        encoder: CineEncoder,
        seg_channels: Sequence[int] = (32, 144, 288, 576),
        num_classes: int = NUM_CLASSES,
        num_phenotypes: int = len(PHENOTYPE_NAMES),
        phenotype_hidden: int = 0,
        image_levels: int = 1,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.segmenter = CineSegmenter(
            encoder.hidden_size, encoder.patch_size, encoder.num_layers, seg_channels, num_classes, image_levels
        )
        self.phenotype_head = PhenotypeHead(encoder.hidden_size, num_phenotypes, phenotype_hidden)
        self.measure_head = MeasureHead(len(MEASURE_FEATURE_NAMES), num_phenotypes)

    def segment_and_embed(
        self,
        image: torch.Tensor,
        plane_mask: torch.Tensor | None = None,
        decode_planes: torch.Tensor | None = None,
        decode_frames: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One encoder pass for multi-task training: (logits (B, C, P', T', H, W), representation (B, D)).

        P' = P and T' = T, or the planes of ``decode_planes`` and the frames of ``decode_frames`` (long tensors, see
        :meth:`CineSegmenter.forward`).
        """
        plane_mask = self.encoder.check_inputs(image, plane_mask)
        encoded = self.encoder(image, plane_mask, return_layers=self.segmenter.skip_layers)
        grid = self.encoder.token_grid(image.shape[3:])
        logits = self.segmenter(image, encoded, grid, decode_planes, decode_frames)
        return logits, encoded.mean_token()

    def forward(
        self,
        image: torch.Tensor,
        plane_mask: torch.Tensor | None = None,
        decode_planes: torch.Tensor | None = None,
        decode_frames: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Segmentation logits (B, num_classes, P, T, H, W); absent planes get logits too (ignore them)."""
        return self.segment_and_embed(image, plane_mask, decode_planes, decode_frames)[0]

    def embed(self, image: torch.Tensor, plane_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D) subject representation."""
        return self.encoder.embed(image, plane_mask)

    def predict_phenotypes(self, image: torch.Tensor, plane_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K) phenotypes in physical units."""
        return self.phenotype_head.predict_physical(self.embed(image, plane_mask))


# --------------------------------------------------------------------------------------------------
# Presets and construction
# --------------------------------------------------------------------------------------------------
@dataclass
class NetConfig:
    """Hyper-parameters of a preset; any field can be overridden by name in :func:`build_network`."""

    patch_size: tuple[int, int, int]
    hidden_size: int
    num_layers: int
    num_heads: int
    decoder_hidden_size: int
    decoder_layers: int
    decoder_heads: int
    seg_channels: tuple[int, ...]
    mlp_ratio: float = 4.0
    phenotype_hidden: int = 0
    image_levels: int = 1
    mask_ratio: float = 0.7
    norm_pix_loss: bool = False


def paper_preset() -> NetConfig:
    """Paper size (GPU): width 1024 / 16 heads / 6 layers, patch 25x8x8 (4,608 tokens for 9x50x128x128)."""
    return NetConfig(
        patch_size=(25, 8, 8),
        hidden_size=1024,
        num_layers=6,
        num_heads=16,
        decoder_hidden_size=512,
        decoder_layers=2,
        decoder_heads=16,
        seg_channels=(32, 144, 288, 576),
    )


def small_preset() -> NetConfig:
    """CPU-trainable: width 256 / 8 heads / 6 layers, patch 25x16x16 (1,152 tokens for 9x50x128x128)."""
    return NetConfig(
        patch_size=(25, 16, 16),
        hidden_size=256,
        num_layers=6,
        num_heads=8,
        decoder_hidden_size=128,
        decoder_layers=2,
        decoder_heads=4,
        seg_channels=(8, 16, 32, 64, 128),
        image_levels=3,
    )


def tiny_preset() -> NetConfig:
    """For tests: width 32 / 2 layers, patch 5x8x8 (e.g. 9x10x32x32 -> 288 tokens)."""
    return NetConfig(
        patch_size=(5, 8, 8),
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        decoder_hidden_size=32,
        decoder_layers=1,
        decoder_heads=2,
        seg_channels=(4, 8, 8, 16),
        image_levels=3,
    )


PRESETS = {"paper": paper_preset, "small": small_preset, "tiny": tiny_preset}


def build_network(
    kind: str = "heart",
    preset: str = "small",
    num_planes: int = 9,
    num_frames: int = 50,
    image_size: int | Sequence[int] = 128,
    **overrides: Any,
) -> CineMAE | CineHeartNet:
    """Build a :class:`CineMAE` (``kind="mae"``) or :class:`CineHeartNet` (``kind="heart"``) from a preset.

    Args:
        kind: ``"mae"`` or ``"heart"``.
        preset: ``"paper"``, ``"small"`` or ``"tiny"``.
        num_planes: P = SA slices + 3 LA views.
        num_frames: nominal T (must be divisible by the temporal patch size).
        image_size: nominal H = W or (H, W) (divisible by the spatial patch size).
        overrides: :class:`NetConfig` fields replacing the preset's values, e.g. ``num_layers=4``.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    known = {f.name for f in fields(NetConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown network options {unknown}; valid ones are {sorted(known)}")
    config = NetConfig(**{**asdict(PRESETS[preset]()), **overrides})
    encoder = CineEncoder(
        num_planes=num_planes,
        num_frames=num_frames,
        image_size=image_size,
        patch_size=config.patch_size,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        mlp_ratio=config.mlp_ratio,
    )
    if kind == "mae":
        return CineMAE(
            encoder,
            decoder_hidden_size=config.decoder_hidden_size,
            decoder_layers=config.decoder_layers,
            decoder_heads=config.decoder_heads,
            mask_ratio=config.mask_ratio,
            norm_pix_loss=config.norm_pix_loss,
        )
    if kind == "heart":
        return CineHeartNet(
            encoder,
            seg_channels=config.seg_channels,
            phenotype_hidden=config.phenotype_hidden,
            image_levels=config.image_levels,
        )
    raise ValueError(f"unknown network kind {kind!r}; choose 'mae' or 'heart'")


# --------------------------------------------------------------------------------------------------
# Weights and precision
# --------------------------------------------------------------------------------------------------
_CHECKPOINT_WRAPPER_KEYS = ("network", "model", "state_dict", "net")


def _unwrap_state_dict(checkpoint: Mapping[str, Any]) -> Mapping[str, Any]:
    """The tensor dict inside an ignite/Lightning-style checkpoint ({"network": sd}, {"model": sd}, ...), or itself."""
    for key in _CHECKPOINT_WRAPPER_KEYS:
        if isinstance(checkpoint.get(key), Mapping):
            return _unwrap_state_dict(checkpoint[key])
    return checkpoint


def load_encoder_weights(
    model: nn.Module, state_dict_or_path: Mapping[str, Any] | str | os.PathLike, strict: bool = True
) -> dict[str, Any]:
    """Load encoder weights into ``model.encoder`` from a CineMAE / CineHeartNet checkpoint.

    Accepts a state dict, a checkpoint dict wrapping one (``{"network": sd}``, ``{"model": sd}``, ...) or a path to
    either (read with ``torch.load(weights_only=True)``). Keys are matched by the ``encoder.`` prefix (a leading
    ``module.`` from DataParallel is ignored); a bare encoder state dict also works.

    Returns:
        dict(loaded=number of tensors loaded, missing_keys=[...], unexpected_keys=[...]).

    Raises:
        ValueError: if no encoder weights are found.
    """
    if not isinstance(getattr(model, "encoder", None), CineEncoder):
        raise TypeError(f"model must have a CineEncoder at .encoder (CineMAE or CineHeartNet), got {type(model)}")
    if isinstance(state_dict_or_path, (str, os.PathLike)):
        checkpoint = torch.load(state_dict_or_path, map_location="cpu", weights_only=True)
    else:
        checkpoint = state_dict_or_path
    state_dict = {k.removeprefix("module."): v for k, v in _unwrap_state_dict(checkpoint).items()}
    encoder_state = {k.removeprefix("encoder."): v for k, v in state_dict.items() if k.startswith("encoder.")}
    if not encoder_state and set(model.encoder.state_dict()) & set(state_dict):
        encoder_state = state_dict
    if not encoder_state:
        sample = sorted(state_dict)[:5]
        raise ValueError(
            "no encoder weights found: expected keys starting with 'encoder.' (CineMAE / CineHeartNet checkpoint, "
            f"possibly wrapped as {{'network': state_dict}}), got keys like {sample}"
        )
    result = model.encoder.load_state_dict(encoder_state, strict=strict)
    return {
        "loaded": len(encoder_state) - len(result.unexpected_keys),
        "missing_keys": list(result.missing_keys),
        "unexpected_keys": list(result.unexpected_keys),
    }


def autocast_context(device: torch.device | str) -> contextlib.AbstractContextManager:
    """bf16 autocast where the device computes bf16 natively (CUDA with bf16, CPU with AVX512-BF16 or AMX), else a
    null context (bf16 emulated on older CPUs is slower than fp32)."""
    device = torch.device(device)
    if device.type == "cuda":
        supported = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    elif device.type == "cpu":
        supported = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    else:
        supported = False
    if supported:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
