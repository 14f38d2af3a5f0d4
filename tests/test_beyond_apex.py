"""SA slices beyond the LV apex cleared (scripts.beyond_apex)."""

from __future__ import annotations

import numpy as np
import pytest

from scripts.beyond_apex import clear_slices_beyond_apex, slices_beyond_apex

LV, MYO, RV = 1, 2, 3
#: 1.5 mm pixels, slices 10 mm apart; the slice index grows from base to apex (RAS superior to inferior)
AFFINE = np.diag([1.5, 1.5, -10.0, 1.0])


def stack(lv_radii_px: list[float], frames: int = 3) -> np.ndarray:
    """uint8 (48, 48, S, T) SA labels: per slice a disc of LV of the given radius (0: none) in a 3-pixel myocardial
    ring, the LV a little smaller at the later frames (it contracts)."""
    rows, cols = np.indices((48, 48))
    labels = np.zeros((48, 48, len(lv_radii_px), frames), dtype=np.uint8)
    for z, radius in enumerate(lv_radii_px):
        for t in range(frames):
            r = radius * (1 - 0.1 * t)
            distance = np.hypot(rows - 24, cols - 24)
            if radius > 0:
                labels[:, :, z, t][distance <= r + 3] = MYO
                labels[:, :, z, t][distance <= r] = LV
    return labels


def test_an_lv_reappearing_past_the_apex_is_cleared_with_every_slice_beyond():
    labels = stack([12, 14, 13, 10, 6, 1.5, 9, 4])  # slices 6 and 7: a blob below a near-vanished apex
    assert slices_beyond_apex(labels, AFFINE) == [6, 7]
    cleared = clear_slices_beyond_apex(labels, AFFINE)
    assert not cleared[:, :, 6:].any()
    assert np.array_equal(cleared[:, :, :6], labels[:, :, :6])


def test_the_apex_order_comes_from_the_geometry_not_the_slice_index():
    """The same stack stored apex first (the slice axis pointing superior): the slices beyond are the first two."""
    labels = stack([12, 14, 13, 10, 6, 1.5, 9, 4])[:, :, ::-1]
    flipped = AFFINE.copy()
    flipped[2, 2] = 10.0
    assert slices_beyond_apex(labels, flipped) == [1, 0]


@pytest.mark.parametrize(
    "radii",
    [
        [12, 14, 13, 10, 6, 3, 0],  # an LV narrowing to its apex, then a slice below it with nothing
        [12, 14, 13, 1, 8, 5, 2],  # a slice the network missed within the ventricle: the apex after it is smaller
        [12, 14, 13, 1, 13.5, 10, 6, 2],  # one missed in the mid-ventricle, where the LV has not narrowed yet
        [0, 0, 0],  # no LV anywhere
    ],
)
def test_an_lv_that_narrows_to_its_apex_is_left_as_it_is(radii):
    labels = stack(radii)
    assert slices_beyond_apex(labels, AFFINE) == []
    assert clear_slices_beyond_apex(labels, AFFINE) is labels
