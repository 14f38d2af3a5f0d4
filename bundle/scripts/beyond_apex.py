"""SA slices beyond the LV apex: labels the network draws below the heart are cleared.

A scanner's SA stack often runs past the apex into the liver, the stomach or the diaphragm, and the network can label
a blob of those LV and myocardium (a real study: 40 mL of "LV" at end-diastole in the two slices below the apex). The
largest connected heart of each slice (:func:`scripts.subject_segmenter.largest_heart_component`) keeps such a blob,
because it is all the slice has. Anatomy gives it away: from its widest slice towards the apex the LV narrows, so an
LV that reappears past a slice where it had nearly vanished, as large as it was before that slice, is not the LV.

Walking base to apex (:func:`scripts.geometry.sa_slice_order`) from the slice of largest LV area (each slice's
largest over the cycle), the first slice whose LV area exceeds ``growth`` times the smallest area seen so far plus
``slack_mm2``, and is at least the area of the slice just basal to that smallest one, starts the slices beyond the
apex, provided that basal slice had narrowed to :data:`NARROWED` of the largest area (the dip lies towards the apex);
their labels are cleared. A slice the network missed within the ventricle is followed by an LV smaller than the
slice before it (towards the apex) or lies where the LV has not narrowed (mid-ventricle), so nothing is cleared.
"""

from __future__ import annotations

import numpy as np

from scripts.geometry import sa_slice_order
from scripts.labels import CLASS_NAMES
from scripts.measures import pixel_spacing_mm

__all__ = ["slices_beyond_apex", "clear_slices", "clear_slices_beyond_apex"]

LV_BLOOD_POOL = CLASS_NAMES.index("LVBP")
#: an LV reappearing past the apex is at least this many times the smallest area before it ...
GROWTH = 1.5
#: ... plus this many mm^2 (a few pixels of noise at the apex do not count)
SLACK_MM2 = 100.0
#: the slice before the dip has at most this fraction of the largest LV area: the LV narrows there, towards the apex
NARROWED = 0.6


def lv_area_mm2(labels: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """(S,) largest LV blood-pool area over the frames of each slice of uint8 (X, Y, S, T) SA ``labels``, in mm^2
    (pixel size from ``affine``, the stack's (4, 4) voxel-to-world matrix)."""
    pixel_mm2 = float(np.prod(pixel_spacing_mm(affine)))
    return (labels == LV_BLOOD_POOL).sum(axis=(0, 1)).max(axis=1) * pixel_mm2


def slices_beyond_apex(
    labels: np.ndarray,
    affine: np.ndarray,
    growth: float = GROWTH,
    slack_mm2: float = SLACK_MM2,
    narrowed: float = NARROWED,
) -> list[int]:
    """Indices of the slices of uint8 (X, Y, S, T) SA ``labels`` (voxel-to-world ``affine``) beyond the LV apex, in
    base-to-apex order (see the module docstring); empty where the LV narrows to the last slice.

    Example:
        >>> labels = np.zeros((20, 20, 5, 1), dtype=np.uint8)
        >>> for z, half in enumerate((8, 6, 1, 7, 0)):  # the LV all but gone in slice 2, larger again in 3
        ...     labels[10 - half : 10 + half, 10 - half : 10 + half, z] = 1
        >>> affine = np.diag([1.0, 1.0, -10.0, 1.0])  # slice index grows towards the apex (RAS superior to inferior)
        >>> slices_beyond_apex(labels, affine)
        [3, 4]
    """
    order = sa_slice_order(affine, labels.shape)
    areas = lv_area_mm2(labels, affine)[order]
    start = int(np.argmax(areas))
    smallest = before_smallest = areas[start]
    for i in range(start + 1, len(order)):
        regrown = areas[i] > growth * smallest + slack_mm2 and areas[i] >= before_smallest
        if regrown and before_smallest <= narrowed * areas[start]:
            return order[i:]
        if areas[i] < smallest:
            smallest, before_smallest = areas[i], areas[i - 1]
    return []


def clear_slices(labels: np.ndarray, slices: list[int]) -> np.ndarray:
    """uint8 (X, Y, S, T) ``labels`` with every label of ``slices`` set to 0 (background); ``labels`` itself when
    there are none."""
    if not slices:
        return labels
    cleared = labels.copy()
    cleared[:, :, slices] = 0
    return cleared


def clear_slices_beyond_apex(labels: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """uint8 (X, Y, S, T) SA ``labels`` with every label of the slices beyond the LV apex set to 0 (background)."""
    return clear_slices(labels, slices_beyond_apex(labels, affine))
