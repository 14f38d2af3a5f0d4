"""The frame axis of a cine: one cardiac cycle sampled at ``T`` frames, cyclic.

Frame ``k`` of ``T`` lies at ``k / T`` of the cycle, so frame 0 of every frame count is the same instant (the first
acquired frame) and frame ``T`` would be frame 0 again. Mapping ``T_source`` frames onto ``T_target`` places target
frame ``k`` at source frame position ``k * T_source / T_target`` (a float in [0, T_source)); the nearest source frame
rounds it half up and wraps past the last frame to frame 0, linear interpolation blends the two source frames around
it (the last with frame 0).
"""

from __future__ import annotations

import numpy as np


def nearest_cyclic_frames(source_count: int, target_count: int) -> np.ndarray:
    """int64 (target_count,): the nearest of ``source_count`` frames to each of ``target_count`` frames of the same
    cycle (half rounds up; past the last source frame: frame 0)."""
    return np.floor(np.arange(target_count) * source_count / target_count + 0.5).astype(np.int64) % source_count


def cyclic_linear_frames(source_count: int, target_count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The two of ``source_count`` frames around each of ``target_count`` frames of the same cycle, and the weight
    of the second: int64 ``before``, int64 ``after`` (= before + 1, the last source frame followed by frame 0) and
    float32 ``weight`` in [0, 1), each (target_count,); target frame k = (1 - weight) before + weight after."""
    positions = np.arange(target_count) * source_count / target_count
    before = np.floor(positions).astype(np.int64)
    return before, (before + 1) % source_count, (positions - before).astype(np.float32)


def resample_time(frames: np.ndarray, num_frames: int, nearest: bool = False) -> np.ndarray:
    """Cyclic resampling of ``frames`` (T_source, ...) to (num_frames, ...): linear, or the nearest frame (labels)."""
    source_count = frames.shape[0]
    if source_count == num_frames:
        return frames
    if nearest:
        return frames[nearest_cyclic_frames(source_count, num_frames)]
    before, after, weight = cyclic_linear_frames(source_count, num_frames)
    weight = weight.reshape((-1,) + (1,) * (frames.ndim - 1))
    return (1 - weight) * frames[before] + weight * frames[after]
