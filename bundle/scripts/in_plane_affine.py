"""Random in-plane rotation and scaling of a canonical cine stack: the training augmentation for pose and heart size.

The canonical planes are oriented by the patient's axes (:func:`scripts.geometry.patient_axes`), so where the right
ventricle lies in an SA crop still depends on how the heart lies in the chest, which varies between patients more
than between the synthetic hearts (planned within about 17 degrees of one orientation). Real hearts also span a wider
range of sizes (dilated hearts of 300 mL and more) than the synthetic ones.

This transform draws, per subject, one scale ``s`` (log-uniform in ``scale_range``) shared by every plane, one
rotation for all SA planes (so the stack stays a stack) and a smaller, independent rotation for each long-axis view
(as their in-plane orientation varies between sites). Each plane is resampled about its crop centre (where the heart
centre lies): the image bilinearly with 0 outside the crop, the label by nearest neighbour with 255 (unlabelled)
outside, so no label is invented where the image has none.

Shapes: ``image`` (1, P, T, H, W) float and ``label`` (1, P, T, H, W) uint8, as
:class:`scripts.canonical.LoadCineSubjectd` writes them, P = ``num_sa_slices`` + 3; the same shapes come back.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import MapTransform, RandomizableTransform

from scripts.labels import LA_PLANES, UNLABELLED

__all__ = ["RandInPlaneAffined", "resample_planes"]


def resample_planes(volume: torch.Tensor, angles_rad: Sequence[float], scale: float, nearest: bool) -> torch.Tensor:
    """Rotate plane k of ``volume`` by ``angles_rad[k]`` and magnify every plane by ``scale``, about the crop centre.

    Args:
        volume: (1, P, T, H, W); frames are resampled together (they are channels of one plane).
        angles_rad: P rotation angles (counter-clockwise in the (H, W) pixel grid).
        scale: magnification (> 1 makes the anatomy larger in the crop).
        nearest: nearest-neighbour sampling (labels) instead of bilinear (images).

    Returns:
        (1, P, T, H, W) of ``volume``'s dtype; pixels sampled from outside the crop are 0, or 255 for ``nearest``.
    """
    planes = volume[0].float()
    cos = torch.cos(torch.tensor(angles_rad, dtype=torch.float32)) / scale
    sin = torch.sin(torch.tensor(angles_rad, dtype=torch.float32)) / scale
    zeros = torch.zeros_like(cos)
    # output pixel -> input pixel, in affine_grid's normalised coordinates (square crops: no aspect correction)
    theta = torch.stack([torch.stack([cos, -sin, zeros], -1), torch.stack([sin, cos, zeros], -1)], 1)
    grid = F.affine_grid(theta, list(planes.shape), align_corners=False)
    if nearest:
        # shift labels by one so that the zero padding of grid_sample marks pixels from outside the crop
        shifted = F.grid_sample(planes + 1.0, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        out = torch.where(shifted == 0, torch.full_like(shifted, float(UNLABELLED)), shifted - 1.0)
    else:
        out = F.grid_sample(planes, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.round().to(volume.dtype)[None] if nearest else out.to(volume.dtype)[None]


class RandInPlaneAffined(RandomizableTransform, MapTransform):
    """Rotate and scale the canonical planes in-plane about the crop centre (see the module docstring).

    Args:
        keys: image key(s), (1, P, T, H, W); resampled bilinearly with fill 0.
        label_key: the label key, (1, P, T, H, W) uint8; nearest neighbour with fill 255. Missing: skipped.
        prob: chance that a sample is transformed at all.
        max_sa_rotation_deg: the SA planes' shared rotation is uniform in +- this.
        max_la_rotation_deg: each long-axis view's rotation is uniform in +- this.
        scale_range: (low, high) magnification, drawn log-uniformly.

    Example:
        >>> image, label = torch.rand(1, 9, 50, 128, 128), torch.zeros(1, 9, 50, 128, 128, dtype=torch.uint8)
        >>> RandInPlaneAffined("image", prob=1.0)({"image": image, "label": label})["image"].shape
        torch.Size([1, 9, 50, 128, 128])
    """

    def __init__(
        self,
        keys: Hashable | Sequence[Hashable],
        label_key: Hashable = "label",
        prob: float = 0.5,
        max_sa_rotation_deg: float = 45.0,
        max_la_rotation_deg: float = 10.0,
        scale_range: Sequence[float] = (0.85, 1.25),
    ) -> None:
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        low, high = (float(x) for x in scale_range)
        if not 0 < low <= high:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {tuple(scale_range)}")
        if max_sa_rotation_deg < 0 or max_la_rotation_deg < 0:
            raise ValueError("rotation limits must be >= 0 degrees")
        self.label_key = label_key
        self.max_sa_rotation = math.radians(max_sa_rotation_deg)
        self.max_la_rotation = math.radians(max_la_rotation_deg)
        self.log_scale_range = (math.log(low), math.log(high))

    def random_pose(self, num_planes: int) -> tuple[list[float], float]:
        """Per-plane angles (radians; the SA planes share one) and the shared scale of one subject."""
        num_sa = num_planes - len(LA_PLANES)
        sa_angle = float(self.R.uniform(-self.max_sa_rotation, self.max_sa_rotation))
        la_angles = self.R.uniform(-self.max_la_rotation, self.max_la_rotation, len(LA_PLANES)).tolist()
        scale = float(np.exp(self.R.uniform(*self.log_scale_range)))
        return [sa_angle] * num_sa + la_angles, scale

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        keys = list(self.key_iterator(d))
        if not keys:
            return d
        angles, scale = self.random_pose(d[keys[0]].shape[1])
        for key in keys:
            d[key] = resample_planes(torch.as_tensor(d[key]), angles, scale, nearest=False)
        if self.label_key in d:
            d[self.label_key] = resample_planes(torch.as_tensor(d[self.label_key]), angles, scale, nearest=True)
        return d
