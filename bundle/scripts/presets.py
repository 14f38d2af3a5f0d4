"""Network presets (``paper``, ``small``, ``tiny``) and :func:`build_network`, the constructor the configs call.

A preset fixes the network's size (:class:`NetConfig`) and the canonical data grid the network is sized for
(:class:`CineGrid`: frames per cycle, crop size, pixel spacing), from which the configs take their defaults
(``inference.yaml``: ``preset_grid``). Nominal input: ``image`` (B, 1, P, T, H, W) with T = ``num_frames`` and
H = W = ``crop_size``; every network built here accepts any T, H, W divisible by its patch size.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Sequence

from scripts.encoder import CineEncoder
from scripts.heart_net import CineHeartNet
from scripts.mae import CineMAE


@dataclass(frozen=True)
class CineGrid:
    """Canonical data grid of a preset: every subject is resampled to ``num_frames`` frames per cardiac cycle and
    cropped to ``crop_size`` x ``crop_size`` px of ``spacing_mm`` mm around the heart (``canonical.LoadCineSubjectd``);
    also the network's nominal input size."""

    num_frames: int
    crop_size: int
    spacing_mm: float


@dataclass
class NetConfig:
    """Hyper-parameters of a preset and its data grid; any field but ``grid`` can be overridden by name in
    :func:`build_network`."""

    patch_size: tuple[int, int, int]
    hidden_size: int
    num_layers: int
    num_heads: int
    decoder_hidden_size: int
    decoder_layers: int
    decoder_heads: int
    seg_channels: tuple[int, ...]
    grid: CineGrid
    mlp_ratio: float = 4.0
    phenotype_hidden: int = 0
    image_levels: int = 1
    #: widths of the full-resolution refiner (scripts.refiner.PlaneRefiner); empty (every preset): none
    refiner_channels: tuple[int, ...] = ()
    #: the image frames, as offsets from the refined one, that the refiner also reads
    refiner_frame_offsets: tuple[int, ...] = ()
    mask_ratio: float = 0.7
    norm_pix_loss: bool = False


def paper_preset() -> NetConfig:
    """Paper size: width 1024 / 6 layers, patch 25x8x8 (4,608 tokens for 9x50x128x128).

    Heads of 128 channels (8 in the encoder, 4 in the 512-wide MAE decoder; the authors use 5 of 205): CPU fused
    attention ran 1.6-1.7x faster per FLOP on them than on heads of 64, forward and backward (bf16, 1,382 and 4,608
    tokens). The segmentation decoder is 576 wide on the token grid, as the paper's, with UNETR's widths (feature size
    16: 64 / 32 / 16) at 1/4, 1/2 and full resolution, where its convolutions run over every frame of every plane:
    ~0.4 of the ~1.6 TFLOP per subject (wider high-resolution stages, e.g. 288 / 144 / 32, cost ~3.5 TFLOP there).
    """
    return NetConfig(
        patch_size=(25, 8, 8),
        hidden_size=1024,
        num_layers=6,
        num_heads=8,
        decoder_hidden_size=512,
        decoder_layers=2,
        decoder_heads=4,
        seg_channels=(16, 32, 64, 576),
        grid=CineGrid(num_frames=50, crop_size=128, spacing_mm=1.8),
        image_levels=3,
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
        grid=CineGrid(num_frames=50, crop_size=128, spacing_mm=1.8),
        image_levels=3,
    )


def tiny_preset() -> NetConfig:
    """For tests: width 32 / 2 layers, patch 5x8x8 (288 tokens for 9x10x32x32, a 7.2 mm grid covering the 1.8 mm
    grid's field of view)."""
    return NetConfig(
        patch_size=(5, 8, 8),
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        decoder_hidden_size=32,
        decoder_layers=1,
        decoder_heads=2,
        seg_channels=(4, 8, 8, 16),
        grid=CineGrid(num_frames=10, crop_size=32, spacing_mm=7.2),
        image_levels=3,
    )


PRESETS = {"paper": paper_preset, "small": small_preset, "tiny": tiny_preset}


def preset_config(preset: str) -> NetConfig:
    """The :class:`NetConfig` of ``preset``; ValueError naming the presets if there is none of that name."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[preset]()


def preset_grid(preset: str) -> CineGrid:
    """The canonical data grid of ``preset`` (the configs' default ``num_frames``, ``crop_size``, ``spacing_mm``)."""
    return preset_config(preset).grid


def build_network(
    kind: str = "heart",
    preset: str = "small",
    num_planes: int = 9,
    num_frames: int | None = None,
    image_size: int | Sequence[int] | None = None,
    **overrides: Any,
) -> CineMAE | CineHeartNet:
    """Build a :class:`CineMAE` (``kind="mae"``) or :class:`CineHeartNet` (``kind="heart"``) from a preset.

    Args:
        kind: ``"mae"`` or ``"heart"``.
        preset: ``"paper"``, ``"small"`` or ``"tiny"``.
        num_planes: P = SA slices + 3 LA views.
        num_frames: nominal T (must be divisible by the temporal patch size); None: the preset grid's.
        image_size: nominal H = W or (H, W) (divisible by the spatial patch size); None: the preset grid's crop size.
        overrides: :class:`NetConfig` fields replacing the preset's values, e.g. ``num_layers=4``.
    """
    config = preset_config(preset)
    options = {f.name for f in fields(NetConfig)} - {"grid"}
    unknown = sorted(set(overrides) - options)
    if unknown:
        raise ValueError(f"unknown network options {unknown}; valid ones are {sorted(options)}")
    config = replace(config, **overrides)
    encoder = CineEncoder(
        num_planes=num_planes,
        num_frames=config.grid.num_frames if num_frames is None else num_frames,
        image_size=config.grid.crop_size if image_size is None else image_size,
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
            refiner_channels=config.refiner_channels,
            refiner_frame_offsets=config.refiner_frame_offsets,
        )
    raise ValueError(f"unknown network kind {kind!r}; choose 'mae' or 'heart'")
