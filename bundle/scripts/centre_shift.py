"""Random displacement of the heart within the canonical crops: the training augmentation for an off-centre heart.

Inference centres every crop on a heart centre that it finds without labels (where the long-axis planes cut the SA
stack, or the SA image centre), and on real studies that centre misses the LV by 5-15 mm. Synthetic subjects are
always cut around their true centre, so a network trained on them alone learns where the heart sits in the crop and
pulls its segmentation of an off-centre heart toward the crop centre.

This transform moves the heart by one random world displacement ``d`` (mm) in the SA plane, the same for all planes
of a subject, as a centre found elsewhere in that plane would: each canonical plane, with axes (u, v), is translated
by (d.u, d.v) / spacing pixels (rounded), so the planes stay consistent where they intersect. Pixels that come in
from outside the crop are 0 in the image and unlabelled (255) in the label.

Shapes: ``image`` (1, P, T, H, W) and ``label`` (1, P, T, H, W), as :class:`scripts.canonical.LoadCineSubjectd`
writes them, with its ``geometry`` record (the planes' u, v and the grid's spacing); the same shapes come back.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform, RandomizableTransform

from scripts.labels import SA_PLANE, UNLABELLED
from scripts.sample_geometry import parse_geometry

__all__ = ["RandCentreShiftd", "plane_pixel_shifts", "translate_planes"]


def plane_pixel_shifts(geometry: Mapping[str, Any], displacement_mm: np.ndarray) -> list[tuple[int, int] | None]:
    """Per canonical plane, the (H, W) pixel translation (integers) that moves its content by the world
    ``displacement_mm`` (3,), or None for a plane the sample does not have."""
    spacing = float(geometry["spacing_mm"])
    shifts: list[tuple[int, int] | None] = []
    for record in geometry["planes"]:
        if record.get("source") is None:
            shifts.append(None)
            continue
        u, v = np.asarray(record["u"], dtype=float), np.asarray(record["v"], dtype=float)
        shifts.append((int(round(displacement_mm @ u / spacing)), int(round(displacement_mm @ v / spacing))))
    return shifts


def translate_planes(volume: torch.Tensor, shifts: Sequence[tuple[int, int] | None], fill: float) -> torch.Tensor:
    """(1, P, T, H, W) with plane k translated by ``shifts[k]`` (H, W) pixels; uncovered pixels get ``fill``."""
    out = volume.clone()
    height, width = volume.shape[-2:]
    for k, shift in enumerate(shifts):
        if shift is None or shift == (0, 0):
            continue
        dh, dw = shift
        plane = torch.full_like(volume[0, k], fill)
        if abs(dh) < height and abs(dw) < width:
            source = volume[0, k, :, max(0, -dh) : height - max(0, dh), max(0, -dw) : width - max(0, dw)]
            plane[:, max(0, dh) : height - max(0, -dh), max(0, dw) : width - max(0, -dw)] = source
        out[0, k] = plane
    return out


class RandCentreShiftd(RandomizableTransform, MapTransform):
    """Move the heart off the crop centre by a random displacement in the SA plane (see the module docstring).

    Args:
        keys: image key(s), (1, P, T, H, W); translated with fill 0.
        label_key: the label key, (1, P, T, H, W) uint8; translated with fill 255 (unlabelled). Missing: skipped.
        geometry_key: the sample's geometry record (JSON string or dict), for the planes' axes and the spacing.
        prob: chance that a sample is displaced at all.
        max_shift_mm: the displacement is drawn uniformly in the disc of this radius in the SA plane (in the plane
            of the first long-axis view for a subject without SA planes).

    Example:
        >>> load = LoadCineSubjectd(keys="subject")  # doctest: +SKIP
        >>> sample = load({"subject": "cohort/subject_0000"})  # doctest: +SKIP
        >>> RandCentreShiftd("image", prob=1.0, max_shift_mm=15.0)(sample)["image"].shape  # doctest: +SKIP
        torch.Size([1, 9, 50, 128, 128])
    """

    def __init__(
        self,
        keys: Hashable | Sequence[Hashable],
        label_key: Hashable = "label",
        geometry_key: Hashable = "geometry",
        prob: float = 0.5,
        max_shift_mm: float = 15.0,
    ) -> None:
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        if max_shift_mm < 0:
            raise ValueError(f"max_shift_mm must be >= 0, got {max_shift_mm}")
        self.label_key = label_key
        self.geometry_key = geometry_key
        self.max_shift_mm = float(max_shift_mm)

    def random_displacement(self, geometry: Mapping[str, Any]) -> np.ndarray:
        """(3,) world mm: uniform in the disc of radius ``max_shift_mm`` spanned by the SA planes' u and v."""
        records = [r for r in geometry["planes"] if r.get("source") is not None]
        reference = next((r for r in records if r["source"] == SA_PLANE), records[0])
        u, v = np.asarray(reference["u"], dtype=float), np.asarray(reference["v"], dtype=float)
        radius = self.max_shift_mm * np.sqrt(self.R.uniform())
        angle = self.R.uniform(0.0, 2.0 * np.pi)
        return radius * (np.cos(angle) * u + np.sin(angle) * v)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        geometry = parse_geometry(d[self.geometry_key])
        if not any(r.get("source") is not None for r in geometry["planes"]):
            return d
        shifts = plane_pixel_shifts(geometry, self.random_displacement(geometry))
        for key in self.key_iterator(d):
            d[key] = translate_planes(d[key], shifts, 0.0)
        if self.label_key in d:
            d[self.label_key] = translate_planes(d[self.label_key], shifts, float(UNLABELLED))
        return d
