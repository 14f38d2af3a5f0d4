"""The LV blood pool filled to its convex hull, and grown by a margin, in each SA slice-frame (scripts.lv_cavity)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import distance_transform_edt

from scripts.lv_cavity import convex_hull_mask, fill_lv_cavity, grow_lv_blood_pool

LV, MYO, RV = 1, 2, 3


def disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    rows, cols = np.indices(shape)
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def ventricle_with_papillary_muscle() -> tuple[np.ndarray, np.ndarray]:
    """(64, 64) labels: a myocardial ring around an LV with a papillary muscle near its rim labelled myocardium, an RV
    beside it; and the mask of the muscle."""
    labels = np.zeros((64, 64), dtype=np.uint8)
    labels[disc(labels.shape, (32, 26), 18)] = MYO
    labels[disc(labels.shape, (32, 26), 12)] = LV
    muscle = disc(labels.shape, (39, 26), 4)  # two pixels of blood pool between it and the wall
    labels[muscle] = MYO
    labels[disc(labels.shape, (32, 52), 8) & (labels == 0)] = RV
    return labels, muscle


def test_a_papillary_muscle_near_the_rim_becomes_blood_pool_and_nothing_else_changes():
    plane, muscle = ventricle_with_papillary_muscle()
    labels = np.repeat(plane[:, :, None, None], 2, axis=3)
    labels[:, :, 0, 1] = plane.T  # another frame, another shape: each slice-frame has its own hull
    filled = fill_lv_cavity(labels)
    assert (filled[:, :, 0, 0][muscle] == LV).all()
    assert (filled[:, :, 0, 1][muscle.T] == LV).all()
    changed = filled != labels
    assert changed.sum() == 2 * muscle.sum()
    # the myocardial ring outside the cavity and the RV are untouched
    assert (filled == MYO).sum() == (labels == MYO).sum() - 2 * muscle.sum()
    assert ((filled == RV) == (labels == RV)).all()


def test_the_input_labels_are_not_changed():
    plane, muscle = ventricle_with_papillary_muscle()
    labels = plane[:, :, None, None].copy()  # one slice, one frame: the (S, T, X, Y) view of it is contiguous
    before = labels.copy()
    filled = fill_lv_cavity(labels)
    assert (labels == before).all()
    assert (filled[:, :, 0, 0][muscle] == LV).all()


def test_a_blood_pool_wrapped_around_a_structure_is_left_as_it_is():
    """A crescent (solidity well below MIN_SOLIDITY) is not a cavity with bays: its myocardium stays."""
    plane = np.zeros((64, 64), dtype=np.uint8)
    plane[disc(plane.shape, (32, 32), 20)] = LV
    plane[disc(plane.shape, (32, 40), 16)] = MYO
    labels = plane[:, :, None, None]
    assert (fill_lv_cavity(labels) == labels).all()


def test_a_slice_without_an_lv_or_with_a_line_of_lv_is_unchanged():
    labels = np.zeros((16, 16, 2, 1), dtype=np.uint8)
    labels[4:12, 4:12, 0, 0] = MYO
    labels[2, 2:14, 1, 0] = LV  # a line of pixels: no area, no hull
    labels[3, 2:14, 1, 0] = MYO
    assert (fill_lv_cavity(labels) == labels).all()
    assert convex_hull_mask(labels[:, :, 1, 0] == LV) is None


@pytest.mark.parametrize("spacing_mm", [(1.0, 1.0), (1.4, 0.9)])
def test_the_lv_grows_into_the_myocardium_by_the_margin_in_mm_and_nowhere_else(spacing_mm):
    """Myocardium whose pixel centre lies within the margin of the LV (Euclidean, in mm on the pixel grid) becomes LV
    blood pool; the RV touching the LV, the background and farther myocardium stay."""
    plane, _ = ventricle_with_papillary_muscle()
    plane[disc(plane.shape, (32, 40), 3)] = RV  # an RV pocket against the LV, inside the margin
    labels = plane[:, :, None, None]
    grown = grow_lv_blood_pool(labels, spacing_mm, 3.0)
    distance_mm = distance_transform_edt(plane != LV, sampling=spacing_mm)
    expected = plane.copy()
    expected[(plane == MYO) & (distance_mm <= 3.0)] = LV
    assert (grown[:, :, 0, 0] == expected).all()
    assert (grown != labels).any() and ((grown == RV) == (labels == RV)).all()


def test_a_margin_below_a_pixel_changes_nothing_and_a_negative_one_is_refused():
    plane, _ = ventricle_with_papillary_muscle()
    labels = plane[:, :, None, None]
    assert (grow_lv_blood_pool(labels, (1.5, 1.5), 1.2) == labels).all()
    with pytest.raises(ValueError, match=">= 0 mm"):
        grow_lv_blood_pool(labels, (1.5, 1.5), -1.0)
