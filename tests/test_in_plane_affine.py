"""The pose and size augmentation: planes rotate and scale about the crop centre, image and label together."""

from __future__ import annotations

import math

import pytest
import torch

from scripts.canonical import LoadCineSubjectd
from scripts.in_plane_affine import RandInPlaneAffined, resample_planes
from scripts.labels import UNLABELLED

GRID = {"num_sa_slices": 6, "num_frames": 10, "crop_size": 48, "spacing_mm": 3.0}


def test_quarter_turns_and_magnification_move_pixels_where_geometry_says():
    label = torch.zeros(1, 2, 3, 32, 32, dtype=torch.uint8)
    label[..., 4:12, 20:24] = 1
    turned = resample_planes(label, [math.pi / 2, -math.pi / 2], 1.0, nearest=True)
    # a quarter turn of a square crop (counter-clockwise for a positive angle, as torch.rot90): nothing from outside
    assert torch.equal(turned[0, 0], torch.rot90(label[0, 0], k=1, dims=(-2, -1)))
    assert torch.equal(turned[0, 1], torch.rot90(label[0, 1], k=-1, dims=(-2, -1)))
    ring = torch.zeros(1, 1, 1, 64, 64)
    ring[..., 24:40, 24:40] = 1.0
    magnified = resample_planes(ring, [0.0], 2.0, nearest=False)
    assert float(magnified.sum()) == pytest.approx(4 * float(ring.sum()), rel=0.05)
    shrunk = resample_planes(ring.to(torch.uint8), [0.0], 0.5, nearest=True)
    assert (shrunk[..., :8, :] == UNLABELLED).all() and (shrunk[..., 28:36, 28:36] == 1).all()


def test_random_pose_keeps_image_and_label_together_and_the_sa_stack_aligned(tiny_cohort):
    item = {"subject": str(sorted(tiny_cohort.glob("subject_*"))[0]), "id": "s0"}
    sample = LoadCineSubjectd(keys="subject", **GRID)(item)
    transform = RandInPlaneAffined("image", prob=1.0, max_sa_rotation_deg=90.0).set_random_state(3)
    outs = [transform(dict(sample)) for _ in range(6)]
    for out in outs:
        assert out["image"].shape == sample["image"].shape and out["label"].dtype == torch.uint8
        # the LV blood pool keeps its intensity: the label moved with the image
        assert float(out["image"][out["label"] == 1].mean()) == pytest.approx(
            float(sample["image"][sample["label"] == 1].mean()), abs=0.05
        )
    angles, scale = transform.random_pose(sample["image"].shape[1])
    assert len(set(angles[: GRID["num_sa_slices"]])) == 1, "the SA planes share one rotation"
    assert all(abs(a) <= math.radians(10.0) for a in angles[GRID["num_sa_slices"] :])
    assert 0.85 <= scale <= 1.25
    again = RandInPlaneAffined("image", prob=1.0, max_sa_rotation_deg=90.0).set_random_state(3)(dict(sample))
    assert torch.equal(again["image"], outs[0]["image"]) and torch.equal(again["label"], outs[0]["label"])
    assert torch.equal(RandInPlaneAffined("image", prob=0.0)(dict(sample))["label"], sample["label"])
    with pytest.raises(ValueError, match="scale_range"):
        RandInPlaneAffined("image", scale_range=(1.2, 0.9))
