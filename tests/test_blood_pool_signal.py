"""The LV blood-pool signal: the images' blood pool within a segmentation that lags and flattens the cycle."""

from __future__ import annotations

import numpy as np
import pytest

from scripts.blood_pool_signal import lv_blood_pool_signal, subject_blood_pool_signal
from scripts.files import save_nifti_atomic
from scripts.labels import CLASS_NAMES
from scripts.phases import cardiac_phases, cyclic_frame_distance
from scripts.quality_control import phase_signal_flags

LVBP, LVMYO = CLASS_NAMES.index("LVBP"), CLASS_NAMES.index("LVMYO")
NUM_FRAMES, SIZE, WALL_PX = 30, 64, 5


def ring_maps(radii_px: np.ndarray, num_slices: int) -> np.ndarray:
    """(SIZE, SIZE, S, T) class map: an LV disc of radius ``radii_px[t]`` ringed by ``WALL_PX`` of myocardium."""
    y, x = np.mgrid[:SIZE, :SIZE]
    distance = np.hypot(x - SIZE / 2, y - SIZE / 2)[..., None]
    frames = np.where(distance <= radii_px, LVBP, np.where(distance <= radii_px + WALL_PX, LVMYO, 0))
    return np.repeat(frames[:, :, None].astype(np.uint8), num_slices, axis=2)


def phantom(blood: float, myocardium: float, num_slices: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image and model labels of an SA stack whose true LV radius peaks at frame 0 (ED), while the labels' LV peaks
    3 frames late with half the stroke; and the true LV area curve."""
    phase = 2 * np.pi * np.arange(NUM_FRAMES) / NUM_FRAMES
    true_radii = 10.0 + 4.0 * np.cos(phase)
    truth = ring_maps(true_radii, num_slices)
    rng = np.random.default_rng(0)
    image = np.select([truth == LVBP, truth == LVMYO], [blood, myocardium], 110.0)
    image = image + rng.normal(0.0, 5.0, image.shape)
    labels = ring_maps(10.0 + 2.0 * np.cos(phase - 2 * np.pi * 3 / NUM_FRAMES), num_slices)
    return image.astype(np.float32), labels, (truth == LVBP).sum(axis=(0, 1, 2)).astype(float)


@pytest.mark.parametrize("blood, myocardium", [(220.0, 60.0), (30.0, 150.0)], ids=["bright_blood", "dark_blood"])
def test_signal_follows_the_images_not_the_lagging_labels(blood, myocardium):
    image, labels, true_area = phantom(blood, myocardium)
    signal = lv_blood_pool_signal(image, labels)
    labelled_area = (labels == LVBP).sum(axis=(0, 1, 2)).astype(float)
    truth, from_labels, from_signal = (cardiac_phases(c) for c in (true_area, labelled_area, signal))
    assert cyclic_frame_distance(from_labels["ED"], truth["ED"], NUM_FRAMES) == 3, "the labels lag by construction"
    for name in ("ED", "ES", "mid_systole"):
        assert cyclic_frame_distance(from_signal[name], truth[name], NUM_FRAMES) <= 1, (name, from_signal, truth)
    assert np.median(signal) == pytest.approx(1.0)
    assert np.corrcoef(signal, true_area)[0, 1] > 0.9


def test_slices_without_the_lv_at_every_frame_are_left_out():
    image, labels, _ = phantom(220.0, 60.0)
    apex_image, apex_labels, _ = phantom(220.0, 60.0, num_slices=1)
    apex_labels[..., 5:15][apex_labels[..., 5:15] == LVBP] = 0  # the LV leaves the slice for 10 frames
    stacked = lv_blood_pool_signal(np.concatenate([image, apex_image], 2), np.concatenate([labels, apex_labels], 2))
    np.testing.assert_allclose(stacked, lv_blood_pool_signal(image, labels))


def test_no_signal_without_myocardium_or_with_mismatched_shapes():
    image, labels, _ = phantom(220.0, 60.0)
    assert lv_blood_pool_signal(image, np.where(labels == LVMYO, 0, labels)) is None
    with pytest.raises(ValueError, match="must be the same"):
        lv_blood_pool_signal(image[..., :-1], labels)


def test_quality_control_flags_a_volume_curve_that_disagrees_with_the_signal():
    image, labels, true_area = phantom(220.0, 60.0)
    signal = lv_blood_pool_signal(image, labels)
    assert phase_signal_flags(true_area, signal) == []
    [flag] = phase_signal_flags(np.roll(true_area, NUM_FRAMES // 2), signal)
    assert flag["check"] == "phase_signal" and "correlates -" in flag["reason"]
    assert phase_signal_flags(true_area, None) == [] and phase_signal_flags(np.zeros(NUM_FRAMES), signal) == []


def test_the_signal_of_a_subject_folder_reads_its_sa_file_where_the_image_is_not_in_memory(tmp_path):
    image, labels, _ = phantom(220.0, 60.0)
    save_nifti_atomic(image, np.eye(4), tmp_path / "sa.nii.gz")
    from_file = subject_blood_pool_signal(tmp_path, labels)
    np.testing.assert_allclose(from_file, subject_blood_pool_signal(tmp_path, labels, image))
    np.testing.assert_allclose(from_file, lv_blood_pool_signal(image, labels))
    assert subject_blood_pool_signal(tmp_path / "no_such_subject", labels) is None
