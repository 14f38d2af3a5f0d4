"""Full-resolution refinement of the segmentation: :class:`PlaneRefiner`, a 2D U-Net over each plane-frame.

The all-planes decoder reads its segmentation from 2D+T tokens of 16 x 16 px (29 mm at the small preset) through a
thin full-resolution path, so on real scans its contours follow the average heart rather than the image: an LV of
one size in every SA slice, edges 5-20 px off. The refiner sees one plane-frame at a time (its image, the same
plane's image a few frames before and after, and the decoder's class probabilities) and corrects the logits where the
image's edges say so.

Shapes: ``image`` (N, F, H, W) and ``probabilities`` (N, C, H, W) in, logits (N, C, H, W) out, N plane-frames
(:meth:`scripts.heart_net.CineHeartNet.refine` folds planes and frames into N); F = 1 + the number of
``frame_offsets``, the plane-frame's image then the same plane's at those frame offsets (:func:`frames_with_offsets`),
so the refiner can tell the moving blood-myocardium edge from a still one. H and W divisible by
``2 ** (len(channels) - 1)``.
"""

from __future__ import annotations

import functools
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from scripts.labels import NUM_CLASSES
from scripts.norms import PlaneFrameNorm

#: probabilities are clamped here before the log, so a class the decoder rules out can still be brought back
MIN_PROBABILITY = 1e-4
#: the U-Net levels (0: full resolution) that run in channels-last memory where no gradient is needed: there oneDNN's
#: bf16 convolutions take half the time they take on NCHW tensors, while at 1/8 resolution PyTorch's channels-last
#: group norm is the slower one
CHANNELS_LAST_LEVELS = 3


def frames_with_offsets(image: torch.Tensor, frame_offsets: Sequence[int]) -> torch.Tensor:
    """(B, 1, P, T, H, W) -> (B, 1 + len(frame_offsets), P, T, H, W): each frame, then the frames ``frame_offsets``
    away from it, cyclically (a cine is one cardiac cycle)."""
    return torch.cat([image] + [torch.roll(image, -int(offset), dims=3) for offset in frame_offsets], dim=1)


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, H / 2, W / 2), the max of each 2 x 2 block as the maximum of four strided views: where
    no gradient is needed, several times faster on CPU in bfloat16 than ``F.max_pool2d(x, 2)`` (which also computes
    the indices that only its backward needs)."""
    return torch.maximum(
        torch.maximum(x[..., 0::2, 0::2], x[..., 0::2, 1::2]), torch.maximum(x[..., 1::2, 0::2], x[..., 1::2, 1::2])
    )


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two (3x3 conv + instance norm + LeakyReLU) blocks; instance norm per plane-frame, as the decoder's per plane.
    The activations work in place on the norm's output, which nothing else reads (its backward keeps its input's
    statistics): a fifth less time a pass on CPU than a new tensor each."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        PlaneFrameNorm(out_channels, affine=True),
        nn.LeakyReLU(0.01, inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        PlaneFrameNorm(out_channels, affine=True),
        nn.LeakyReLU(0.01, inplace=True),
    )


class PlaneRefiner(nn.Module):
    """2D U-Net: (image, class probabilities) of a plane-frame -> refined logits = log(probabilities) + correction.

    The correction's last layer starts at zero, so an untrained refiner returns the decoder's log-probabilities
    (the same segmentation) and weights saved without a refiner keep their results.

    Args:
        channels: widths from full resolution down, one max-pooling between entries (e.g. (16, 32, 64, 128): three
            poolings, a receptive field of ~100 px).
        num_classes: C, the segmentation classes.
        frame_offsets: the image frames besides the refined one that the refiner reads, as offsets (e.g. (-3, 3));
            empty: the refined frame only.

    Example::

        >>> refiner = PlaneRefiner((8, 16), frame_offsets=(-3, 3))
        >>> refiner(torch.rand(4, 3, 32, 32), torch.full((4, 6, 32, 32), 1 / 6)).shape
        torch.Size([4, 6, 32, 32])
    """

    def __init__(
        self,
        channels: Sequence[int] = (16, 32, 64, 128),
        num_classes: int = NUM_CLASSES,
        frame_offsets: Sequence[int] = (),
    ) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        if len(channels) < 1 or min(channels) < 1:
            raise ValueError(f"refiner channels must be one or more positive widths, got {tuple(channels)}")
        self.channels = tuple(channels)
        self.frame_offsets = tuple(int(offset) for offset in frame_offsets)
        self.down = nn.ModuleList(
            [_double_conv(1 + len(self.frame_offsets) + num_classes, channels[0])]
            + [_double_conv(channels[k - 1], channels[k]) for k in range(1, len(channels))]
        )
        self.up = nn.ModuleList(
            [nn.ConvTranspose2d(channels[k + 1], channels[k], 2, stride=2) for k in range(len(channels) - 1)]
        )
        self.merge = nn.ModuleList([_double_conv(2 * channels[k], channels[k]) for k in range(len(channels) - 1)])
        self.correction = nn.Conv2d(channels[0], num_classes, 1)
        nn.init.zeros_(self.correction.weight)
        nn.init.zeros_(self.correction.bias)

    @property
    def size_multiple(self) -> int:
        """H and W must be multiples of this (one halving per pooling)."""
        return 2 ** (len(self.channels) - 1)

    def forward(self, image: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
        """image (N, F, H, W) in [0, 1], probabilities (N, C, H, W) -> logits (N, C, H, W)."""
        if image.shape[1] != 1 + len(self.frame_offsets):
            raise ValueError(
                f"the refiner reads {1 + len(self.frame_offsets)} image frames per plane-frame (frame offsets "
                f"{self.frame_offsets}), got {image.shape[1]}"
            )
        if image.shape[-2] % self.size_multiple or image.shape[-1] % self.size_multiple:
            raise ValueError(
                f"the refiner halves H and W {len(self.channels) - 1} times: they must be multiples of "
                f"{self.size_multiple}, got {tuple(image.shape[-2:])}"
            )
        log_probabilities = probabilities.float().clamp_min(MIN_PROBABILITY).log()
        # Without a gradient (inference) the upper levels run channels-last and pool by strided views; training keeps
        # NCHW (instance norm's backward takes it) and max_pool2d, whose backward is faster. PlaneFrameNorm makes the
        # same choice for the norms.
        inference = not torch.is_grad_enabled()
        pool = max_pool_2x2 if inference else functools.partial(F.max_pool2d, kernel_size=2)
        formats = [
            torch.channels_last if inference and level < CHANNELS_LAST_LEVELS else torch.contiguous_format
            for level in range(len(self.channels))
        ]
        x = torch.cat([image.to(probabilities.dtype), probabilities], dim=1)
        skips = []
        for level, block in enumerate(self.down):
            x = x if level == 0 else pool(x)
            x = block(x.contiguous(memory_format=formats[level]))
            skips.append(x)
        for level in range(len(self.channels) - 2, -1, -1):
            up = self.up[level](x).contiguous(memory_format=formats[level])
            x = self.merge[level](torch.cat([up, skips[level]], dim=1))
        return log_probabilities + self.correction(x).float().contiguous()
