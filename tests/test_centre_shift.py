"""The off-centre heart augmentation: a translated canonical stack is the stack cut around a moved heart centre."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scripts.canonical import LoadCineSubjectd
from scripts.centre_shift import RandCentreShiftd, plane_pixel_shifts, translate_planes
from scripts.heart_centre import MIN_LV_PIXELS, lv_offset_px
from scripts.labels import CLASS_NAMES, SA_PLANE, UNLABELLED
from scripts.sample_geometry import parse_geometry, sa_plane_indices

GRID = {"num_sa_slices": 6, "num_frames": 10, "crop_size": 48, "spacing_mm": 3.0}


def first_subject(cohort) -> dict:
    return {"subject": str(sorted(cohort.glob("subject_*"))[0]), "id": "s0"}


def sa_axes(geometry: dict) -> tuple[np.ndarray, np.ndarray]:
    record = next(r for r in geometry["planes"] if r["source"] == SA_PLANE)
    return np.asarray(record["u"]), np.asarray(record["v"])


def test_translated_sa_planes_equal_the_planes_cut_around_the_moved_centre(tiny_cohort):
    item = first_subject(tiny_cohort)
    sample = LoadCineSubjectd(keys="subject", **GRID)(dict(item))
    geometry = parse_geometry(sample["geometry"])
    u, v = sa_axes(geometry)
    shifts = plane_pixel_shifts(geometry, GRID["spacing_mm"] * (3 * u - 2 * v))
    sa = sa_plane_indices(geometry)
    assert [shifts[k] for k in sa] == [(3, -2)] * len(sa)

    moved = translate_planes(sample["image"], shifts, 0.0)
    moved_label = translate_planes(sample["label"], shifts, float(UNLABELLED))
    # the heart 3 px along u and -2 px along v in the crop = the crop centre 3 px along -u and 2 px along v
    recut = LoadCineSubjectd(keys="subject", centre_shift_px=(-3.0, 2.0), **GRID)(dict(item))
    inner = (slice(3, None), slice(0, -2))
    for k in sa:
        torch.testing.assert_close(moved[0, k][:, inner[0], inner[1]], recut["image"][0, k][:, inner[0], inner[1]],
                                   atol=1.5 / 255, rtol=0)  # fmt: skip
        same = moved_label[0, k][:, inner[0], inner[1]] == recut["label"][0, k][:, inner[0], inner[1]]
        assert float(same.float().mean()) > 0.99
        assert (moved[0, k][:, :3] == 0).all() and (moved_label[0, k][:, :3] == UNLABELLED).all()
        assert (moved_label[0, k][:, :, -2:] == UNLABELLED).all()


def test_long_axis_planes_move_by_their_share_of_the_displacement(tiny_cohort):
    sample = LoadCineSubjectd(keys="subject", **GRID)(dict(first_subject(tiny_cohort)))
    geometry = parse_geometry(sample["geometry"])
    u, v = sa_axes(geometry)
    displacement = 12.0 * u + 6.0 * v
    for record, shift in zip(geometry["planes"], plane_pixel_shifts(geometry, displacement)):
        expected = displacement @ np.asarray(record["u"]), displacement @ np.asarray(record["v"])
        assert np.allclose(shift, np.array(expected) / GRID["spacing_mm"], atol=0.5)
    la_shifts = {shift for record, shift in zip(geometry["planes"], plane_pixel_shifts(geometry, displacement))
                 if record["source"] != SA_PLANE}  # fmt: skip
    assert len(la_shifts) > 1, "the views cut the displacement differently"


def test_random_centre_shift_moves_image_and_label_together_and_is_reproducible(tiny_cohort):
    sample = LoadCineSubjectd(keys="subject", **GRID)(dict(first_subject(tiny_cohort)))
    transform = RandCentreShiftd("image", prob=1.0, max_shift_mm=15.0).set_random_state(4)
    outs = [transform(dict(sample)) for _ in range(8)]
    moved = 0
    for out in outs:
        assert out["image"].shape == sample["image"].shape and out["label"].dtype == torch.uint8
        known = out["label"] != UNLABELLED
        # where the shifted label says LV blood pool, the shifted image shows the same pixel as before the shift
        assert float(out["image"][out["label"] == 1].mean()) == pytest.approx(
            float(sample["image"][sample["label"] == 1].mean()), abs=0.05
        )
        moved += int(not torch.equal(out["label"][known], sample["label"][known]))
    assert moved >= 6
    again = RandCentreShiftd("image", prob=1.0, max_shift_mm=15.0).set_random_state(4)(dict(sample))
    assert torch.equal(again["image"], outs[0]["image"]) and torch.equal(again["label"], outs[0]["label"])
    assert torch.equal(RandCentreShiftd("image", prob=0.0)(dict(sample))["image"], sample["image"])
    with pytest.raises(ValueError, match="max_shift_mm"):
        RandCentreShiftd("image", max_shift_mm=-1.0)


def test_lv_offset_is_the_mean_lv_position_in_the_sa_planes_only():
    """The recentring target: the LV blood pool's mean (u, v) pixel in the SA planes, from the crop centre; the LA
    planes' LV and the other classes do not move it; too few LV pixels give no offset."""
    crop = 33
    planes = [{"source": SA_PLANE}] * 2 + [{"source": None}, {"source": "la_4ch"}]
    geometry = {"crop_size": crop, "planes": planes}
    labels = np.zeros((len(planes), 3, crop, crop), dtype=np.uint8)
    labels[0, :, 20:25, 5:10] = CLASS_NAMES.index("LVBP")  # centre (22, 7): (+6, -9) from pixel 16
    labels[1, :, 20:25, 5:10] = CLASS_NAMES.index("LVBP")
    labels[0, :, 0:8, 25:33] = CLASS_NAMES.index("RVBP")
    labels[3, :, 0:10, 0:10] = CLASS_NAMES.index("LVBP")  # a long-axis view's LV is not in the SA stack
    np.testing.assert_allclose(lv_offset_px(geometry, labels), [6.0, -9.0])

    labels[:] = 0
    labels[0, 0, 16, 16 : 16 + MIN_LV_PIXELS - 1] = CLASS_NAMES.index("LVBP")
    assert lv_offset_px(geometry, labels) is None
