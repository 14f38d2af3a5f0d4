"""UNETR-like segmentation decoder of every plane and frame (phase II): :class:`CineSegmenter`.

Shapes: ``image`` (B, 1, P, T, H, W) and the :class:`~scripts.encoder.EncoderOutput` of the encoder's skip layers in,
logits (B, num_classes, P', T', H, W) out (P' = P and T' = T unless a subset of planes or frames is decoded).
Planes are folded into the batch (B * P', C, t, y, x) so that every convolution stays within one plane.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from scripts.encoder import EncoderOutput
from scripts.labels import NUM_CLASSES
from scripts.norms import PlaneNorm
from scripts.tokens import Size3, as_size3, scatter_tokens


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

    Instance norm is per plane (planes are batch entries) so planes stay independent; without a gradient it runs as a
    group norm that keeps the channels-last layout oneDNN's convolutions run fastest in
    (:class:`scripts.norms.PlaneNorm`; instance norm's contiguous output made the next upsampling take 3 times as long
    on CPU). An in-place activation after InstanceNorm (a view) makes autograd copy the whole tensor.
    """
    kernel, padding = ((1, 3, 3), (0, 1, 1)) if in_plane else (3, 1)
    return [
        nn.Conv3d(in_channels, out_channels, kernel_size=kernel, padding=padding, bias=False),
        PlaneNorm(out_channels, affine=True),
        nn.LeakyReLU(0.01),
    ]


def channels_last(volume: torch.Tensor) -> torch.Tensor:
    """(N, C, T, H, W) in channels-last memory order, where oneDNN's 3-D convolutions are fastest; unchanged while
    exporting to ONNX, which has no memory formats."""
    if torch.onnx.is_in_onnx_export():
        return volume
    return volume.contiguous(memory_format=torch.channels_last_3d)


def mean_pool_to(volume: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(N, C, T, H, W) averaged down to ``size`` (T', H', W'): by fixed windows where ``size`` divides the volume
    (what adaptive pooling computes then, and what ONNX can export), else adaptively."""
    factors = [int(full) // int(reduced) for full, reduced in zip(volume.shape[2:], size)]
    if all(int(full) == factor * int(reduced) for full, factor, reduced in zip(volume.shape[2:], factors, size)):
        return F.avg_pool3d(volume, factors)
    return F.adaptive_avg_pool3d(volume, tuple(int(n) for n in size))


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
        pt, ph, pw = as_size3(patch_size, "patch_size")
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
        return channels_last(volume.reshape(-1, channels, *grid))

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
        planes = channels_last(planes)  # (B * P', 1, T, H, W)
        x = self.token_volume(self.skip_proj[-1](encoded.hidden_states[-1]), encoded, grid, num_planes, decode_planes)
        # The token-grid convolutions run in fp32: under CPU bf16 autocast, oneDNN's Conv3d weight gradient on such
        # small volumes (e.g. 2x8x8) came out non-finite in ~1 of 5 steps (measured on torch 2.13); they are cheap.
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = self.bottleneck(x.float())
        for step, (upsample, stage) in enumerate(zip(self.upsample, self.stages)):
            k = self.num_steps - 1 - step
            if k == 0 and decode_frames is not None:
                x = channels_last(x[:, :, decode_frames])
                planes = channels_last(planes[:, :, decode_frames])
            x = upsample(x)
            if k > 0:
                hidden = self.skip_proj[k - 1](encoded.hidden_states[k - 1])
                skip = self.token_volume(hidden, encoded, grid, num_planes, decode_planes)
                x = x + F.interpolate(skip, size=x.shape[2:], mode="trilinear", align_corners=False)
                if k < self.image_levels:
                    pooled = mean_pool_to(planes, x.shape[2:])
                    x = x + self.coarse_image_branches[k - 1](pooled)
            else:
                x = x + self.image_branch(planes)
            x = stage(x)
        logits = self.head(x.permute(0, 2, 3, 4, 1))  # (B * P', T, H, W, classes)
        return logits.reshape(batch, -1, *logits.shape[1:]).permute(0, 5, 1, 2, 3, 4)
