"""Scores at the contoured phases (scripts.labelled_phases) on a disc-shaped LV whose radius follows a cycle."""

import numpy as np
import pytest

from scripts.labelled_phases import VOLUME_RANGE_TOLERANCE, labelled_phase_scores
from scripts.labels import UNLABELLED

SIZE, SLICES, FRAMES = 48, 4, 20
ED, ES = 0, 10


def lv_radius_px(frame: int) -> float:
    """A smooth cycle: largest at ED (frame 0), smallest at ES (frame 10)."""
    return 10.0 + 3.5 * np.cos(2 * np.pi * frame / FRAMES)


def disc(radius: float) -> np.ndarray:
    y, x = np.mgrid[:SIZE, :SIZE]
    return (x - SIZE / 2) ** 2 + (y - SIZE / 2) ** 2 <= radius**2


def heart(radii: list[float]) -> np.ndarray:
    """(X, Y, S, T): LV blood pool (1) inside a 4 px myocardial ring (2) on every slice."""
    segmentation = np.zeros((SIZE, SIZE, SLICES, FRAMES), np.uint8)
    for t, radius in enumerate(radii):
        frame = np.where(disc(radius + 4), 2, 0)
        frame[disc(radius)] = 1
        segmentation[:, :, :, t] = frame[..., None]
    return segmentation


def sunnybrook_style_label(truth: np.ndarray) -> np.ndarray:
    """Contours at ED (endo- and epicardium: fully annotated) and ES (endocardium only: LV inside, rest unknown)."""
    label = np.full_like(truth, UNLABELLED)
    label[..., ED] = truth[..., ED]
    label[..., ES] = np.where(truth[..., ES] == 1, 1, UNLABELLED)
    return label


RADII = [lv_radius_px(t) for t in range(FRAMES)]


def test_exact_segmentation_scores_perfectly():
    truth = heart(RADII)
    scores = labelled_phase_scores(truth, sunnybrook_style_label(truth), voxel_ml=0.01)
    assert (scores["ed_frame"], scores["es_frame"]) == (ED, ES)
    assert scores["dice_ed"]["LVBP"] == 1.0 and scores["dice_ed"]["LVMYO"] == 1.0
    assert scores["dice_es"]["LVBP"] == 1.0 and scores["dice_es"]["LVMYO"] is None
    assert scores["lvef_error"] == pytest.approx(0.0, abs=1e-9)
    assert scores["frames_outside_range"] == []
    assert (scores["ed_frame_difference"], scores["es_frame_difference"]) == (0, 0)
    assert scores["lv_curve_correlation"] is None  # two contoured frames: no curve to correlate


def test_lv_spilling_out_of_the_es_contour_and_between_phases_is_seen():
    truth = heart(RADII)
    spilled = list(RADII)
    spilled[ES] = RADII[ES] * 1.4  # beyond the endocardium drawn at ES, where the label is otherwise unknown
    spilled[15] = RADII[ED] * 1.3  # an unlabelled mid-diastolic frame far above the ED volume
    scores = labelled_phase_scores(heart(spilled), sunnybrook_style_label(truth), voxel_ml=0.01)
    assert scores["dice_es"]["LVBP"] < 0.9
    assert scores["dice_ed"]["LVBP"] == 1.0
    assert 15 in scores["frames_outside_range"]
    reference = scores["lv_volume_ml_reference"]
    assert scores["lv_volume_ml_model"][15] > reference["ED"] * (1 + VOLUME_RANGE_TOLERANCE)


def test_fewer_than_two_labelled_frames_give_no_scores():
    truth = heart(RADII)
    label = np.full_like(truth, UNLABELLED)
    label[..., ED] = truth[..., ED]
    assert labelled_phase_scores(truth, label, voxel_ml=0.01) is None


def test_a_fully_labelled_cycle_scores_the_curve_and_a_late_systole_is_seen():
    truth = heart(RADII)
    assert labelled_phase_scores(truth, truth, voxel_ml=0.01)["lv_curve_correlation"] == pytest.approx(1.0)
    late = heart([lv_radius_px(t - 4) for t in range(FRAMES)])  # the same cycle four frames late
    scores = labelled_phase_scores(late, truth, voxel_ml=0.01)
    # the discs' volumes are whole pixels: the smoothed curve's extremes may land a frame off the cosine's
    assert 3 <= scores["ed_frame_difference"] <= 5 and 3 <= scores["es_frame_difference"] <= 5
    assert scores["lv_curve_correlation"] < 0.8


def test_phases_as_written_come_from_the_images_where_they_are_given():
    """A segmentation four frames late over images of the on-time cycle: its volume curve's ED and ES are off, the
    ones read from the blood pool the images show within its LV are not."""
    truth = heart(RADII)
    image = np.select([truth == 1, truth == 2], [200.0, 60.0], 100.0).astype(np.float32)
    late = heart([lv_radius_px(t - 4) for t in range(FRAMES)])
    scores = labelled_phase_scores(late, sunnybrook_style_label(truth), voxel_ml=0.01, image=image)
    assert scores["ed_frame_difference"] >= 3 and scores["es_frame_difference"] >= 3
    assert scores["signal_ed_frame_difference"] <= 1 and scores["signal_es_frame_difference"] <= 1
    without = labelled_phase_scores(late, sunnybrook_style_label(truth), voxel_ml=0.01)
    assert without["signal_ed_frame_difference"] is None and without["signal_es_frame_difference"] is None
