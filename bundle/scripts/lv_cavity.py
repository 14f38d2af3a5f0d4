"""The LV blood pool of an SA slice as a smooth endocardial contour encloses it: papillary muscles and trabeculae in.

Manual SA contours (the Sunnybrook studies, the UK Biobank protocol of Petersen et al. 2016, ACDC) draw the
endocardium as a smooth curve and count the papillary muscles and the trabeculae inside it as blood pool. On a real
scan they are as dark as the wall, and the network labels those that touch it myocardium: an LV with bays cut into
its rim, a smaller LV volume and a heavier myocardium. An SA cut of the LV cavity is convex, so in every slice and
frame the myocardium lying inside the convex hull of the LV blood pool is relabelled LV blood pool. Where the blood
pool is far from convex (a basal slice whose LV wraps around the outflow tract or a mitral leaflet) nothing is
changed.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_dilation
from scipy.ndimage import label as label_components
from scipy.spatial import ConvexHull, QhullError

from scripts.labels import CLASS_NAMES

__all__ = ["fill_lv_cavity", "grow_lv_blood_pool", "convex_hull_mask", "largest_component"]

LV_BLOOD_POOL = CLASS_NAMES.index("LVBP")
LV_MYOCARDIUM = CLASS_NAMES.index("LVMYO")
#: least LV area / hull area for a slice's LV to be filled: a cavity with bays keeps most of its hull, a blood pool
#: wrapped around a structure does not. At 0.7 the ragged LV that the network draws in slices above the mitral valve
#: was filled too, lowering the LV Dice of held-out synthetic hearts twice as much as at 0.85
MIN_SOLIDITY = 0.85
#: fewest LV pixels of a slice for a hull (a few pixels at the apex have no shape to fill)
MIN_PIXELS = 10


def convex_hull_mask(region: np.ndarray) -> np.ndarray | None:
    """bool (X, Y) mask of the pixels whose centres lie in the convex hull of the pixel centres of bool (X, Y)
    ``region``; None where the region spans no area (a line of pixels)."""
    rows = np.nonzero(region.any(1))[0]
    if len(rows) == 0:
        return None
    # the hull of a region is the hull of each row's end pixels: a few points for qhull instead of every pixel
    first = region[rows].argmax(1)
    last = region.shape[1] - 1 - region[rows, ::-1].argmax(1)
    points = np.concatenate([np.stack([rows, first], 1), np.stack([rows, last], 1)])
    try:
        hull = ConvexHull(points)
    except QhullError:
        return None
    low, high = points.min(0), points.max(0) + 1
    grid = np.stack(np.meshgrid(*(np.arange(a, b) for a, b in zip(low, high)), indexing="ij"), -1).reshape(-1, 2)
    # hull.equations: (F, 3) outward normals and offsets, inside where every n . x + d <= 0
    inside = (grid @ hull.equations[:, :2].T + hull.equations[:, 2] <= 1e-9).all(1)
    mask = np.zeros(region.shape, dtype=bool)
    mask[low[0] : high[0], low[1] : high[1]] = inside.reshape(high - low)
    return mask


def largest_component(region: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of bool (X, Y) ``region`` (all of it where it has one component or none)."""
    components, count = label_components(region, structure=np.ones((3, 3), dtype=bool))
    if count <= 1:
        return region
    return components == 1 + int(np.argmax(np.bincount(components.ravel())[1:]))


def fill_lv_cavity(labels: np.ndarray) -> np.ndarray:
    """uint8 (X, Y, S, T) SA ``labels`` with, in each slice and frame, the myocardium inside the convex hull of the
    largest LV blood-pool component relabelled LV blood pool (see the module docstring); other classes untouched.

    Example:
        >>> labels = np.zeros((32, 32, 1, 1), dtype=np.uint8)
        >>> labels[6:26, 6:26] = 2; labels[9:23, 9:23] = 1; labels[9:14, 14:18] = 2  # a bay in the LV
        >>> int((fill_lv_cavity(labels) == 1).sum() - (labels == 1).sum())
        20
    """
    # a copy as (S, T, X, Y) in memory order, so that every slice-frame is one contiguous plane
    planes = np.moveaxis(labels, (2, 3), (0, 1)).copy()
    blood_pool_pixels = (planes == LV_BLOOD_POOL).sum(axis=(2, 3))
    for z, t in zip(*np.nonzero(blood_pool_pixels >= MIN_PIXELS)):
        in_blood_pool = planes[z, t] == LV_BLOOD_POOL
        rows, cols = np.nonzero(in_blood_pool)
        # the hull lies within the blood pool's bounding box: work on that window only
        box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
        window = planes[z, t][box]
        blood_pool = largest_component(in_blood_pool[box])
        hull = convex_hull_mask(blood_pool)
        if hull is None or blood_pool.sum() < MIN_SOLIDITY * hull.sum():
            continue
        window[hull & (window == LV_MYOCARDIUM)] = LV_BLOOD_POOL
    return np.ascontiguousarray(np.moveaxis(planes, (0, 1), (2, 3)))


def in_plane_disc(spacing_mm: tuple[float, float], radius_mm: float) -> np.ndarray:
    """bool (2a + 1, 2b + 1) footprint of the pixel offsets whose centres lie within ``radius_mm`` of the centre pixel's
    on a grid of ``spacing_mm`` (X, Y) pixels."""
    reach = [int(np.floor(radius_mm / spacing)) for spacing in spacing_mm]
    x, y = np.meshgrid(*(np.arange(-r, r + 1) * spacing for r, spacing in zip(reach, spacing_mm)), indexing="ij")
    return x**2 + y**2 <= radius_mm**2


def grow_lv_blood_pool(labels: np.ndarray, spacing_mm: tuple[float, float], margin_mm: float) -> np.ndarray:
    """uint8 (X, Y, S, T) SA ``labels`` with, in each slice and frame, the myocardium whose pixel centre lies within
    ``margin_mm`` (in-plane) of an LV blood-pool pixel's relabelled LV blood pool; other classes untouched.

    ``spacing_mm``: the (X, Y) pixel spacing. Manual endocardial contours run along the outer edge of the blood pool's
    partial-volume rim and the trabecular layer, which the network, trained on synthetic labels drawn at the tissue
    boundary, calls myocardium (``docs/history.md``, 0.29.4).

    Example:
        >>> labels = np.zeros((16, 16, 1, 1), dtype=np.uint8)
        >>> labels[2:14, 2:14] = 2; labels[5:11, 5:11] = 1
        >>> int((grow_lv_blood_pool(labels, (1.5, 1.5), 1.5) == 1).sum())  # a 6 x 6 LV grown by one pixel a side
        60
    """
    if margin_mm < 0:
        raise ValueError(f"the LV blood pool grows by a margin >= 0 mm, got {margin_mm}")
    footprint = in_plane_disc(spacing_mm, margin_mm)
    if footprint.sum() <= 1:  # the margin is shorter than a pixel: nothing to grow
        return labels
    grown = binary_dilation(labels == LV_BLOOD_POOL, structure=footprint[:, :, None, None])
    out = labels.copy()
    out[grown & (labels == LV_MYOCARDIUM)] = LV_BLOOD_POOL
    return out
