"""Scores at the phases a reader contoured: Dice per labelled frame, LVEF, and the LV volume curve between them.

Real cine studies are contoured at a few frames only (Sunnybrook: the LV endocardium at end-diastole and
end-systole, the epicardium at end-diastole). A Dice over all labelled voxels mixes those phases, and says nothing
about the frames in between, where a model can spread the LV into the RV unseen. This module scores an SA
segmentation (all frames) against such labels:

- Dice per class at ED and at ES, taken as the labelled frames with the largest and smallest LV blood pool;
- LVEF from the contours against the model's LVEF from its own volume curve (its own ED and ES, by
  :func:`scripts.phases.cardiac_phases`), both over the slices contoured at both phases, so the two volumes are of
  the same part of the ventricle;
- the frames whose model LV volume (same slices) is outside the contours' ES..ED range by more than a tolerance,
  the failure that per-frame Dice at two phases cannot see;
- the model's own ED and ES against the contoured frames (cyclic frame difference), and, where three or more frames
  are contoured (synthetic subjects: all), the correlation of the model's LV volume with the contoured one over
  those frames: a model whose volume barely follows the cycle can still score well at two frames;
- given the SA images, the ED and ES that inference writes (read from the LV blood-pool signal,
  :mod:`scripts.blood_pool_signal`) against the contoured frames.

Shapes: ``predicted`` and ``label`` are (X, Y, S, T) class maps of one SA stack in its own grid; ``label`` is
:data:`scripts.labels.UNLABELLED` where not annotated.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from scripts.blood_pool_signal import lv_blood_pool_signal
from scripts.labels import CLASS_NAMES
from scripts.measures import ejection_fraction_percent
from scripts.phases import cardiac_phases, cyclic_frame_distance

__all__ = ["VOLUME_RANGE_TOLERANCE", "binary_dice", "frame_dice", "labelled_phase_scores"]

LVBP = CLASS_NAMES.index("LVBP")
#: A frame's LV volume may exceed the contoured ED volume, or fall below the ES volume, by this fraction.
VOLUME_RANGE_TOLERANCE = 0.15


def binary_dice(predicted: np.ndarray, reference: np.ndarray) -> float | None:
    """Dice of two boolean masks of the same shape; None where both are empty."""
    total = int(predicted.sum()) + int(reference.sum())
    return None if total == 0 else 2.0 * int((predicted & reference).sum()) / total


def frame_dice(predicted: np.ndarray, label: np.ndarray, frame: int) -> dict[str, float | None]:
    """Dice per foreground class at one frame, over the whole of every slice whose label shows the class.

    A reader who draws the endocardium of a slice says where the LV blood pool is and where it is not, on the whole
    slice, even where the rest of it is left unlabelled (Sunnybrook's end-systole); scoring annotated voxels only
    would not see an LV that spills out of the contour. None where no slice shows the class.
    """
    scores = {}
    for c, name in enumerate(CLASS_NAMES[1:], start=1):
        reference = label[..., frame] == c
        slices = np.flatnonzero(reference.any(axis=(0, 1)))
        predicted_c = predicted[:, :, slices, frame] == c
        scores[name] = binary_dice(predicted_c, reference[:, :, slices]) if len(slices) else None
    return scores


def _ejection_fraction(ed_ml: float, es_ml: float) -> float | None:
    """The EF (%) at the given ED and ES volumes, signed (a model whose ES exceeds its ED scores that error); None
    without an ED volume."""
    value = ejection_fraction_percent(ed_ml, es_ml)
    return None if math.isnan(value) else value


def _curve_correlation(model_ml: np.ndarray, reference_ml: np.ndarray) -> float | None:
    """Pearson correlation of two (N,) volume curves; None under three frames or where either is constant."""
    if len(reference_ml) < 3 or np.ptp(reference_ml) == 0 or np.ptp(model_ml) == 0:
        return None
    return float(np.corrcoef(model_ml, reference_ml)[0, 1])


def labelled_phase_scores(
    predicted: np.ndarray, label: np.ndarray, voxel_ml: float, image: np.ndarray | None = None
) -> dict[str, Any] | None:
    """Scores of an SA segmentation at the frames its label contours (see the module docstring).

    Args:
        predicted: (X, Y, S, T) integer class map, every frame segmented.
        label: (X, Y, S, T) reference, :data:`scripts.labels.UNLABELLED` where not annotated.
        voxel_ml: volume of one voxel (mL), the slice-to-slice distance as its depth.
        image: (X, Y, S, T) SA intensities, for the phases read from the LV blood-pool signal; None: not scored.

    Returns:
        None when fewer than two frames show the LV blood pool, else a dict with ``ed_frame``, ``es_frame`` (of the
        contours), ``dice_ed`` and ``dice_es`` (class -> Dice or None), ``lvef_reference`` and ``lvef_model`` (%),
        ``lvef_error`` (points), ``model_ed_frame`` and ``model_es_frame``, ``lv_volume_ml_reference``
        ({"ED", "ES"} over the slices contoured at both), ``lv_volume_ml_model`` (T,) over the same slices,
        ``frames_outside_range`` (frame indices beyond :data:`VOLUME_RANGE_TOLERANCE`), ``ed_frame_difference`` and
        ``es_frame_difference`` (frames, cyclic, the model's against the contours'; None where the model finds no
        phases) and ``lv_curve_correlation`` (model against contoured LV volume over the frames whose contours
        cover those slices; None under three such frames), ``signal_ed_frame_difference`` and
        ``signal_es_frame_difference`` (the same for the ED and ES read from the LV blood-pool signal, as inference
        writes them; None without ``image`` or a signal).
    """
    if predicted.shape != label.shape or predicted.ndim != 4:
        raise ValueError(f"predicted {predicted.shape} and label {label.shape} must be the same (X, Y, S, T)")
    lv_label = label == LVBP
    lv_voxels = lv_label.sum(axis=(0, 1, 2))
    labelled = np.flatnonzero(lv_voxels)
    if len(labelled) < 2:
        return None
    ed, es = int(labelled[np.argmax(lv_voxels[labelled])]), int(labelled[np.argmin(lv_voxels[labelled])])
    slices = np.flatnonzero(lv_label[..., ed].any(axis=(0, 1)) & lv_label[..., es].any(axis=(0, 1)))
    reference_ml = {phase: float(lv_label[:, :, slices, f].sum()) * voxel_ml for phase, f in (("ED", ed), ("ES", es))}
    model_ml = (predicted[:, :, slices] == LVBP).sum(axis=(0, 1, 2)).astype(np.float64) * voxel_ml
    phases = cardiac_phases(model_ml)
    lvef_reference = _ejection_fraction(reference_ml["ED"], reference_ml["ES"])
    lvef_model = None
    if phases["ED"] is not None:
        lvef_model = _ejection_fraction(float(model_ml[phases["ED"]]), float(model_ml[phases["ES"]]))
    num_frames = label.shape[-1]
    signal = None if image is None else lv_blood_pool_signal(image, predicted)
    written = cardiac_phases(signal)
    lv_label_slices = lv_label[:, :, slices]
    covered = np.flatnonzero(lv_label_slices.any(axis=(0, 1)).all(axis=0))
    reference_curve_ml = lv_label_slices[..., covered].sum(axis=(0, 1, 2)).astype(np.float64) * voxel_ml
    low = reference_ml["ES"] * (1.0 - VOLUME_RANGE_TOLERANCE)
    high = reference_ml["ED"] * (1.0 + VOLUME_RANGE_TOLERANCE)
    return {
        "ed_frame": ed,
        "es_frame": es,
        "dice_ed": frame_dice(predicted, label, ed),
        "dice_es": frame_dice(predicted, label, es),
        "lvef_reference": lvef_reference,
        "lvef_model": lvef_model,
        "lvef_error": None if lvef_model is None or lvef_reference is None else lvef_model - lvef_reference,
        "model_ed_frame": phases["ED"],
        "model_es_frame": phases["ES"],
        "lv_volume_ml_reference": reference_ml,
        "lv_volume_ml_model": model_ml.tolist(),
        "frames_outside_range": np.flatnonzero((model_ml < low) | (model_ml > high)).tolist(),
        "ed_frame_difference": None if phases["ED"] is None else cyclic_frame_distance(phases["ED"], ed, num_frames),
        "es_frame_difference": None if phases["ES"] is None else cyclic_frame_distance(phases["ES"], es, num_frames),
        "lv_curve_correlation": _curve_correlation(model_ml[covered], reference_curve_ml),
        "signal_ed_frame_difference": (
            None if written["ED"] is None else cyclic_frame_distance(written["ED"], ed, num_frames)
        ),
        "signal_es_frame_difference": (
            None if written["ES"] is None else cyclic_frame_distance(written["ES"], es, num_frames)
        ),
    }
