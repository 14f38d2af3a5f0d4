"""The cycle-start augmentation: every plane's frames, image and label, rolled by one offset, the cycle kept closed."""

from __future__ import annotations

import torch

from scripts.cycle_roll import RandCycleRolld


def stack(planes: int = 4, frames: int = 7) -> dict[str, torch.Tensor]:
    """(1, P, T, 3, 3) image whose value is 10 * plane + frame, and a label equal to the frame index."""
    plane_index = torch.arange(planes).view(1, planes, 1, 1, 1)
    frame_index = torch.arange(frames).view(1, 1, frames, 1, 1)
    image = (10 * plane_index + frame_index).float().expand(1, planes, frames, 3, 3).clone()
    label = frame_index.to(torch.uint8).expand(1, planes, frames, 3, 3).clone()
    return {"image": image, "label": label}


def test_every_plane_and_the_label_roll_by_one_offset_and_the_cycle_closes():
    data = stack()
    offsets = set()
    for seed in range(20):
        roll = RandCycleRolld("image", prob=1.0)
        roll.set_random_state(seed)
        rolled = roll(data)
        # frame 0 now shows what frame (T - offset) showed; the same offset in every plane and in the label
        offset = (-int(rolled["label"][0, 0, 0, 0, 0])) % 7
        assert 1 <= offset < 7
        offsets.add(offset)
        torch.testing.assert_close(rolled["image"], torch.roll(data["image"], offset, dims=2))
        torch.testing.assert_close(rolled["label"], torch.roll(data["label"], offset, dims=2))
    assert len(offsets) > 3, "the offset is drawn per call"


def test_probability_zero_leaves_the_stack_unchanged():
    data = stack()
    kept = RandCycleRolld("image", prob=0.0)(data)
    assert torch.equal(kept["image"], data["image"]) and torch.equal(kept["label"], data["label"])
