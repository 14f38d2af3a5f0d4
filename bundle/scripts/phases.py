"""Cardiac phases of one cycle from the LV blood pool's curve over the cycle.

Five keyframes per cycle, as Koehler et al. name them, found on the cyclically smoothed curve V (an LV volume in mL,
or any quantity that follows it, such as :mod:`scripts.blood_pool_signal`) and its rate dV/dt (central differences,
per frame), all in the input's own frame indices:

- ED: the largest volume; ES: the smallest;
- mid-systole: half-ejection, the frame from ED to ES whose volume is nearest halfway between the ED and ES volumes
  (where ejection is fastest; the steepest frame itself is ill-defined on the broad plateau of a real ejection);
- peak early filling: the E wave, the first peak of dV/dt after ES reaching half the largest filling rate (the first,
  not the largest, so that an atrial kick taller than the E wave is not taken for it);
- diastasis (mid-diastole): the middle of the slow-filling stretch between the E wave and the atrial-contraction
  peak (the largest dV/dt in the second half of the way from the E wave to ED): the run of frames holding the slowest
  filling whose dV/dt stays within :data:`SLOW_FILLING_SHARE` of the E wave's rate above it (the slowest frame of a
  long flat stretch is set by noise); the middle of the way where the two peaks are adjacent.

The cycle wraps: the frame after the last is the first, so ED may sit anywhere in the curve.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

#: names of the keyframes in cycle order from ED
PHASE_NAMES = ("ED", "mid_systole", "ES", "peak_early_filling", "diastasis")
#: what each keyframe is, as written beside the phases in ``volume_curves.json``
PHASE_DEFINITIONS = {
    "ED": "largest LV blood pool",
    "mid_systole": "half-ejection: blood pool nearest halfway between its ED and ES values, from ED to ES",
    "ES": "smallest LV blood pool",
    "peak_early_filling": "first peak of dV/dt after ES reaching half the largest filling rate (E wave)",
    "diastasis": "middle of the slow-filling stretch between the E wave and the atrial-contraction peak",
}
#: width (frames) of the Gaussian that smooths the curve before phases are read
SMOOTHING_SIGMA_FRAMES = 1.0
#: the slow-filling stretch of diastasis: dV/dt within this share of (E-wave rate - slowest rate) above the slowest
SLOW_FILLING_SHARE = 0.25
#: the fewest frames a cycle needs for five distinct keyframes
MIN_FRAMES = 5


def smooth_cyclic(curve: np.ndarray, sigma_frames: float = SMOOTHING_SIGMA_FRAMES) -> np.ndarray:
    """(T,) curve smoothed by a Gaussian of ``sigma_frames`` frames, wrapping around the cycle."""
    # scipy's wrap mode gives the cyclic convolution without building the kernel by hand
    return gaussian_filter1d(np.asarray(curve, dtype=float), sigma_frames, mode="wrap")


def cyclic_rate(curve: np.ndarray) -> np.ndarray:
    """(T,) central-difference dV/dt (per frame) of a cyclic (T,) curve."""
    return (np.roll(curve, -1) - np.roll(curve, 1)) / 2.0


def cyclic_span(start: int, stop: int, num_frames: int) -> np.ndarray:
    """Frame indices from ``start`` to ``stop`` inclusive going forward around a cycle of ``num_frames`` frames."""
    return (start + np.arange((stop - start) % num_frames + 1)) % num_frames


def cyclic_frame_distance(a: int, b: int, num_frames: int) -> int:
    """Frames between ``a`` and ``b`` the short way round a cycle of ``num_frames`` (the cFD of one keyframe)."""
    step = abs(a - b) % num_frames
    return min(step, num_frames - step)


def first_major_peak(values: np.ndarray, fraction: float = 0.5) -> int:
    """Index into (N,) ``values`` of the first local maximum at least ``fraction`` of their maximum (the maximum
    itself where no earlier one is)."""
    threshold = fraction * values.max()
    for i in range(len(values)):
        left = values[i - 1] if i > 0 else -np.inf
        right = values[i + 1] if i + 1 < len(values) else -np.inf
        if values[i] >= threshold and values[i] >= left and values[i] >= right:
            return i
    return int(np.argmax(values))


def half_ejection_frame(volume: np.ndarray, ed: int, es: int) -> int:
    """The frame from ``ed`` to ``es`` whose (T,) ``volume`` is nearest halfway between theirs (mid-systole)."""
    systole = cyclic_span(ed, es, len(volume))
    halfway = (volume[ed] + volume[es]) / 2.0
    return int(systole[np.argmin(np.abs(volume[systole] - halfway))])


def diastasis_frame(rate: np.ndarray, filling: int, ed: int, share: float = SLOW_FILLING_SHARE) -> int:
    """The diastasis frame: the middle of the slow-filling stretch between the E-wave frame ``filling`` and the
    atrial peak (the largest (T,) ``rate`` in the second half of the way from ``filling`` to ``ed``): the run of
    consecutive frames, holding the slowest, whose rate is within ``share`` of (E-wave rate - slowest) of the
    slowest; the middle of the way where the two peaks touch."""
    num_frames = len(rate)
    way = cyclic_span(filling, ed, num_frames)
    late = way[len(way) // 2 :]
    atrial = int(late[np.argmax(rate[late])])
    between = cyclic_span(filling, atrial, num_frames)[1:-1]
    if len(between) == 0:
        return int(way[len(way) // 2])
    slowest = int(np.argmin(rate[between]))
    slow = rate[between] <= rate[between][slowest] + share * max(rate[filling] - rate[between][slowest], 0.0)
    start, stop = slowest, slowest
    while start > 0 and slow[start - 1]:
        start -= 1
    while stop + 1 < len(between) and slow[stop + 1]:
        stop += 1
    return int(between[(start + stop) // 2])


def cardiac_phases(lv_volume_ml: np.ndarray | None) -> dict[str, int | None]:
    """The five keyframes of :data:`PHASE_NAMES` (frame indices) from an LV blood-pool curve.

    Args:
        lv_volume_ml: (T,) LV volume per frame (mL) over one cycle, or a curve that follows it
            (:func:`scripts.blood_pool_signal.lv_blood_pool_signal`); None where the SA stack is missing.

    Returns:
        phase name -> frame index in [0, T); every value None where there is no curve, fewer than
        :data:`MIN_FRAMES` frames, or a flat curve (no LV found).
    """
    if lv_volume_ml is None or len(lv_volume_ml) < MIN_FRAMES or np.ptp(lv_volume_ml) <= 0:
        return dict.fromkeys(PHASE_NAMES)
    volume = smooth_cyclic(lv_volume_ml)
    rate = cyclic_rate(volume)
    num_frames = len(volume)
    ed, es = int(np.argmax(volume)), int(np.argmin(volume))
    mid_systole = half_ejection_frame(volume, ed, es)
    diastole = cyclic_span(es, ed, num_frames)
    filling = int(diastole[first_major_peak(rate[diastole])])
    return {
        "ED": ed,
        "mid_systole": mid_systole,
        "ES": es,
        "peak_early_filling": filling,
        "diastasis": diastasis_frame(rate, filling, ed),
    }
