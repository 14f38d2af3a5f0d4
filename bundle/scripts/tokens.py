"""Tokens of a 2D+T cine subject: patches, the random choice of visible tokens, gather/scatter and position embedding.

The helpers every network of the bundle shares, in the spirit of the MAE reference implementation (``models_mae.py``).
Shapes (see ``docs/CONTRACTS.md``): ``image`` (B, 1, P, T, H, W) with P canonical planes (SA slices and LA views). A
plane is cut into patches of ``patch_size = (pt, ph, pw)``, giving a token grid ``(T / pt, H / ph, W / pw)`` per plane
and ``N = P * T/pt * H/ph * W/pw`` tokens per subject, ordered plane-major then (t, y, x).

Tokens of missing planes are *dropped*, not zeroed: :func:`random_masking` keeps a sample's present tokens only and
pads the batch to the longest kept sequence, and :func:`key_padding_mask` excludes the padding as attention keys.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

#: a (t, y, x) size: frames, rows and columns (of an image, a patch or a token grid)
Size3 = tuple[int, int, int]


def as_size3(value: int | Sequence[int], name: str) -> Size3:
    """One int or three as a (t, y, x) size; ValueError naming ``name`` if it is not one or three positive ints."""
    size = (value,) * 3 if isinstance(value, int) else tuple(int(v) for v in value)
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"{name} must be one positive int or three (t, y, x), got {value!r}")
    return size  # type: ignore[return-value]


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
    if mask_ratio > 0:
        # Absent tokens get the largest score so that a (stable) sort puts them last; present ones are shuffled.
        score = torch.rand(batch, num_tokens, device=present.device).masked_fill(~present, 2.0)
        ids_sorted = torch.argsort(score, dim=1, stable=True)
    else:
        ids_sorted = present_tokens_first(present)
    num_keep = (present.sum(1) * (1.0 - mask_ratio)).floor().long().clamp(min=1)
    if not torch.jit.is_tracing():
        # Eager: drop the tail no sample needs. Tracing keeps all N slots so that the traced graph is valid for any
        # plane mask (the attention mask alone then excludes absent planes).
        ids_sorted = ids_sorted[:, : int(num_keep.max())]
    keep_valid = torch.arange(ids_sorted.shape[1], device=present.device)[None, :] < num_keep[:, None]
    kept = torch.zeros_like(present).scatter(1, ids_sorted, keep_valid)
    mask = (present & ~kept).float()
    return ids_sorted, keep_valid, mask


def present_tokens_first(present: torch.Tensor) -> torch.Tensor:
    """Token indices (B, N) long: each sample's present tokens in token order, then its absent ones in token order.

    The stable sort of "absent after present", computed by ranks and a scatter rather than a sort, so that it exports
    to ONNX (whose sort is not stable and whose exporter rejects ``argsort(stable=True)``).
    """
    present_rank = present.long().cumsum(1) - 1
    absent_rank = present.sum(1, keepdim=True) + (~present).long().cumsum(1) - 1
    rank = torch.where(present, present_rank, absent_rank)
    order = torch.arange(present.shape[1], device=present.device).expand_as(rank)
    return torch.empty_like(rank).scatter(1, rank, order)


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
