"""A subject's chamber volumes at every frame, with its cardiac phases: ``volume_curves.csv`` and ``.json``.

The curves are those of :func:`scripts.measures.volume_curves_from_segmentations` (LV, LV myocardium and RV by SA
slice summation; LA biplane area-length from 2ch and 4ch, RA single plane from 4ch), in mL, one row per frame of
the SA stack (the atria resampled to its frames where the long-axis views have another count). A chamber whose
view is missing is empty (null), never 0. Frame times (ms) come from the time spacing of the input's SA (else
first) NIfTI header, as DICOM conversion writes it, and are null where the input does not say. The cardiac phases
are read from the LV blood-pool signal of the SA images (:mod:`scripts.blood_pool_signal`), which follows the cycle
more closely than the model's volume curve, where inference gives it; else from the LV volume curve.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Mapping

import nibabel as nib
import numpy as np

from scripts.files import json_number, write_json_atomic, write_text_atomic
from scripts.labels import SA_PLANE
from scripts.measures import resample_cycle
from scripts.phases import PHASE_DEFINITIONS, cardiac_phases
from scripts.subject import find_plane_file

#: chamber -> how its curve is measured
CURVE_METHODS = {
    "LVBP": "SA slice summation",
    "LVMYO": "SA slice summation",
    "RVBP": "SA slice summation",
    "LABP": "area-length, biplane from la_2ch and la_4ch (single plane where one is missing)",
    "RABP": "area-length, single plane from la_4ch",
}
#: factor to ms of the NIfTI time units
TIME_UNIT_MS = {"msec": 1.0, "sec": 1000.0, "usec": 0.001}


def plane_frame_interval_ms(subject_dir: str | os.PathLike, stem: str) -> float | None:
    """Frame interval (ms) from the time spacing of the plane file ``stem`` of ``subject_dir``; None where there is
    no such file, or its header gives no time unit or a non-positive spacing."""
    path = find_plane_file(Path(subject_dir), stem)
    if path is None:
        return None
    header = nib.load(path).header
    zooms = header.get_zooms()
    unit = header.get_xyzt_units()[1]
    if len(zooms) < 4 or unit not in TIME_UNIT_MS or zooms[3] <= 0:
        return None
    return float(zooms[3]) * TIME_UNIT_MS[unit]


def curve_frame_interval_ms(intervals_ms: Mapping[str, float | None]) -> float | None:
    """The frame interval of the volume curves, from each plane's (:func:`plane_frame_interval_ms`): the SA stack's,
    whose frames the curves share, else the first plane's; None where there is none."""
    stem = SA_PLANE if SA_PLANE in intervals_ms else next(iter(intervals_ms), None)
    return intervals_ms.get(stem)


def curves_on_common_frames(volumes: Mapping[str, np.ndarray | None]) -> tuple[dict[str, np.ndarray | None], int]:
    """Every chamber of :data:`CURVE_METHODS` on the frames of the first curve present (the SA stack's where there
    is one), None where missing; and that frame count (0 where no curve is present)."""
    present = [volumes[name] for name in CURVE_METHODS if volumes.get(name) is not None]
    num_frames = len(present[0]) if present else 0
    curves = {
        name: None if volumes.get(name) is None else resample_cycle(np.asarray(volumes[name]), num_frames)
        for name in CURVE_METHODS
    }
    return curves, num_frames


def volume_curves_record(
    subject_id: str,
    volumes: Mapping[str, np.ndarray | None],
    frame_interval_ms: float | None,
    with_phases: bool,
    phase_signal: np.ndarray | None = None,
) -> dict[str, Any]:
    """The content of ``volume_curves.json``.

    Args:
        subject_id: the subject's folder name.
        volumes: chamber -> (T,) curve (mL) or None, from :func:`scripts.measures.volume_curves_from_segmentations`.
        frame_interval_ms: time between frames (ms), None where unknown.
        with_phases: whether to add the cardiac phases (:func:`scripts.phases.cardiac_phases`).
        phase_signal: (T,) :func:`scripts.blood_pool_signal.lv_blood_pool_signal` of the SA stack the curves were
            measured on, written as ``lv_blood_pool_signal`` and the curve the phases are read from (``phase_source``
            ``"lv_blood_pool_signal"``); None: the phases come from the LV volume curve (``phase_source`` ``"LVBP"``).
    """
    curves, num_frames = curves_on_common_frames(volumes)
    times = [i * frame_interval_ms for i in range(num_frames)] if frame_interval_ms else None
    record: dict[str, Any] = {
        "subject": subject_id,
        "units": {"volumes": "mL", "frame_times": "ms"},
        "num_frames": num_frames,
        "frame_interval_ms": frame_interval_ms,
        "frame_times_ms": times,
        "methods": CURVE_METHODS,
        "volumes_ml": {k: None if v is None else [json_number(x) for x in v] for k, v in curves.items()},
    }
    if with_phases:
        record["phase_source"], phase_curve = "LVBP", curves["LVBP"]
        if phase_signal is not None and phase_curve is not None:
            if len(phase_signal) != num_frames:
                raise ValueError(f"the phase signal has {len(phase_signal)} frames, the SA volume curves {num_frames}")
            record["lv_blood_pool_signal"] = [json_number(x) for x in phase_signal]
            record["phase_source"], phase_curve = "lv_blood_pool_signal", phase_signal
        record["phases"] = phases = cardiac_phases(phase_curve)
        record["phase_times_ms"] = {n: None if times is None or f is None else times[f] for n, f in phases.items()}
        record["phase_definitions"] = PHASE_DEFINITIONS
    return record


def volume_curves_csv(record: Mapping[str, Any]) -> str:
    """``volume_curves.csv`` of a :func:`volume_curves_record`: frame, time_ms, one ``<chamber>_ml`` column per
    chamber, and the phases at that frame joined by ``+`` (when phases were asked for); empty cells where unknown."""
    chambers = list(record["volumes_ml"])
    phase_at: dict[int, list[str]] = {}
    for name, frame in record.get("phases", {}).items():
        if frame is not None:
            phase_at.setdefault(frame, []).append(name)
    columns = ["frame", "time_ms", *(f"{name}_ml" for name in chambers)] + (["phase"] if "phases" in record else [])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    times, curves = record["frame_times_ms"], record["volumes_ml"]
    for frame in range(record["num_frames"]):
        row = [frame, "" if times is None else f"{times[frame]:.3f}"]
        row += ["" if curves[c] is None or curves[c][frame] is None else f"{curves[c][frame]:.4f}" for c in chambers]
        writer.writerow(row + (["+".join(phase_at.get(frame, []))] if "phases" in record else []))
    return buffer.getvalue()


def write_volume_curves(record: Mapping[str, Any], subject_dir: str | os.PathLike) -> None:
    """Write ``volume_curves.json`` and ``volume_curves.csv`` of a :func:`volume_curves_record` (atomically)."""
    write_json_atomic(record, Path(subject_dir) / "volume_curves.json")
    write_text_atomic(volume_curves_csv(record), Path(subject_dir) / "volume_curves.csv")
