"""The refiner's training data: which subjects are read, and the real share of its batches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from scripts.canonical import LoadCineSubjectd
from scripts.labels import NUM_CLASSES, UNLABELLED
from scripts.presets import build_network
from scripts.refiner_training import PlaneFrames, RefinerTraining, collect_plane_frames

TINY_GRID = dict(num_sa_slices=6, num_frames=10, crop_size=32, spacing_mm=7.2)


def _plane_frames(num_partly: int, num_full: int) -> PlaneFrames:
    count = num_partly + num_full
    class_mask = torch.ones(count, NUM_CLASSES, dtype=torch.bool)
    class_mask[:num_partly, 3:] = False  # a real study labels the LV classes only
    return PlaneFrames(
        image=torch.rand(count, 3, 32, 32).half(),
        probabilities=torch.full((count, NUM_CLASSES, 32, 32), 1 / NUM_CLASSES).half(),
        label=torch.full((count, 32, 32), UNLABELLED, dtype=torch.uint8),
        class_mask=class_mask,
    )


def _trainer(tmp_path: Path, **kwargs) -> RefinerTraining:
    network = build_network("heart", "tiny", 9, 10, 32, refiner_channels=(4, 8), refiner_frame_offsets=(-3, 3))
    return RefinerTraining(network, tmp_path, batch_size=16, **kwargs)


@pytest.mark.parametrize("fraction, expected", [(0.5, 8), (0.875, 14), (0.99, 15), (0.01, 1)])
def test_a_batch_holds_the_chosen_share_of_real_plane_frames(tmp_path, fraction, expected):
    frames = _plane_frames(num_partly=5, num_full=50)
    trainer = _trainer(tmp_path, partly_labelled_fraction=fraction)
    for _ in range(3):
        index = trainer.batch_indices(frames)
        assert len(index) == 16 and int(frames.partly_labelled[index].sum()) == expected


def test_a_batch_of_one_kind_of_plane_frames_draws_from_all_of_them(tmp_path):
    frames = _plane_frames(num_partly=0, num_full=7)
    index = _trainer(tmp_path, partly_labelled_fraction=0.875).batch_indices(frames)
    assert len(index) == 16 and index.min() >= 0 and index.max() < 7
    with pytest.raises(ValueError, match="partly_labelled_fraction must lie in"):
        _trainer(tmp_path, partly_labelled_fraction=1.0)


def test_subjects_past_the_fully_labelled_cap_are_not_read(tiny_cohort, monkeypatch):
    """Synthetic subjects say in their sidecar that every class is labelled: past the cap they are skipped unread."""
    subjects = sorted(path for path in tiny_cohort.iterdir() if (path / "subject.json").is_file())
    assert len(subjects) >= 3 and all(
        len(json.loads((path / "subject.json").read_text())["annotated_classes"]) == NUM_CLASSES - 1
        for path in subjects
    )
    loader = LoadCineSubjectd(keys="subject", **TINY_GRID)
    read = []
    original = LoadCineSubjectd.read_files
    monkeypatch.setattr(LoadCineSubjectd, "read_files", lambda self, item: read.append(item) or original(self, item))
    network = build_network("heart", "tiny", 9, 10, 32, refiner_channels=(4, 8), refiner_frame_offsets=(-3, 3))
    items = [{"subject": str(path)} for path in subjects]
    frames = collect_plane_frames(network, items, loader, frames_per_plane=2, max_fully_labelled_subjects=1)
    assert len(read) == 1, "one fully labelled subject read, the others skipped by their sidecar"
    assert len(frames) > 0 and not bool(frames.partly_labelled.any())
    assert frames.image.shape[1:] == (3, 32, 32) and frames.probabilities.shape[1:] == (NUM_CLASSES, 32, 32)
