"""Instance norms that run as group norms where no gradient is needed: :class:`PlaneFrameNorm` (2D, the refiner's) and
:class:`PlaneNorm` (3D, the segmentation decoder's).

An instance norm with affine parameters is a group norm of one channel per group: the same function and the same
state dict. Without a gradient the group-norm CPU kernel is used, which takes channels-last tensors as they are, where
instance norm converts them to NCHW / NCDHW and back and leaves its output contiguous, so the next convolution (which
oneDNN runs fastest channels-last) converts again. In training instance norm stays: group norm's backward is several
times slower.

Shapes: (N, C, H, W) -> (N, C, H, W) for :class:`PlaneFrameNorm`, (N, C, T, H, W) -> (N, C, T, H, W) for
:class:`PlaneNorm`; N plane-frames or planes, statistics per entry and channel.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class _GroupNormWithoutGrad:
    """The forward of the instance norms below (mixed in before the ``nn.InstanceNorm*d`` they subclass)."""

    num_features: int
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    eps: float

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return super().forward(x)  # type: ignore[misc]
        return F.group_norm(x, self.num_features, self.weight, self.bias, self.eps)


class PlaneFrameNorm(_GroupNormWithoutGrad, nn.InstanceNorm2d):
    """A drop-in for ``nn.InstanceNorm2d(channels, affine=True)`` (same state dict), a group norm without gradient.

    Example::

        >>> PlaneFrameNorm(8, affine=True)(torch.rand(4, 8, 32, 32)).shape
        torch.Size([4, 8, 32, 32])
    """


class PlaneNorm(_GroupNormWithoutGrad, nn.InstanceNorm3d):
    """A drop-in for ``nn.InstanceNorm3d(channels, affine=True)`` (same state dict), a group norm without gradient.

    Example::

        >>> PlaneNorm(8, affine=True)(torch.rand(2, 8, 5, 16, 16)).shape
        torch.Size([2, 8, 5, 16, 16])
    """
