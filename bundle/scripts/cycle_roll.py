"""Random cyclic shift of the frames of a canonical cine stack: the training augmentation for where a cycle starts.

Every synthetic cycle starts at end-diastole, so a network trained on them alone can read the cardiac phase from the
frame index instead of the image: the 0.15.0 weights followed the true LV volume curve of synthetic hearts closely
(correlation 0.98) and barely when the same hearts' frames were rolled by 20 of 50 (0.38). Real cine starts where
the trigger and the gating put it. This transform rolls the frames of every plane, image and label together, by one
random number of frames per subject, so the cycle still closes (frame T-1 is followed by frame 0).

Shapes: ``image`` (1, P, T, H, W) float and ``label`` (1, P, T, H, W) uint8, as
:class:`scripts.canonical.LoadCineSubjectd` writes them; the same shapes come back.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.transforms import MapTransform, RandomizableTransform

__all__ = ["RandCycleRolld"]

#: the frame axis of a (1, P, T, H, W) stack
FRAME_AXIS = 2


class RandCycleRolld(MapTransform, RandomizableTransform):
    """With probability ``prob``, roll the frames of ``keys`` and of ``label_key`` by one random offset in [1, T).

    Args:
        keys: image keys, (1, P, T, H, W).
        label_key: the label rolled with them (absent: only the images).
        prob: chance per subject.

    Example::

        >>> rolled = RandCycleRolld("image", prob=1.0)({"image": image, "label": label})
        >>> rolled["image"].shape == image.shape
        True
    """

    def __init__(self, keys: Hashable | Sequence[Hashable], label_key: Hashable = "label", prob: float = 0.5) -> None:
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        self.label_key = label_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        keys = list(self.key_iterator(d))
        if not self._do_transform or not keys:
            return d
        num_frames = d[keys[0]].shape[FRAME_AXIS]
        if num_frames < 2:
            return d
        offset = int(self.R.randint(1, num_frames))
        for key in keys + ([self.label_key] if self.label_key in d else []):
            d[key] = torch.roll(torch.as_tensor(d[key]), offset, dims=FRAME_AXIS)
        return d
