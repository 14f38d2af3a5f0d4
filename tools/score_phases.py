"""Score the cardiac phases inference found against the true ones of synthetic subjects (cyclic frame difference).

    python -m tools.score_phases PREDICTIONS DATASET [--json OUT.json]

PREDICTIONS is an inference output folder (each subject's ``volume_curves.json``: the LV volume curve measured on
the model's own segmentations and, where inference wrote it, the LV blood-pool signal its phases are read from);
DATASET the synthetic cohort it ran on, whose ``subject.json`` files hold the true LV volume curve (``python -m
tools.synthesize`` writes it). The phases of both are read by the current :func:`scripts.phases.cardiac_phases`
from the curve inference reads them from (``phase_source``), so the scores follow its definitions without rerunning
inference. For each of the five keyframes it prints the mean cyclic frame difference (cFD: frames between found and
true, the short way round the cycle) over the subjects, then the mean |LVEF error| (points) of the measured volume
curve (the whole SA stack as inference segments it, at the ED and ES of that curve itself) against the true one,
and one JSON line with the same numbers. A subject without found phases (no LV segmented) counts as missed, and is
listed, not averaged in.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import tools  # noqa: F401  (puts the bundle's scripts package on the path)
from scripts.files import write_json_atomic
from scripts.measures import ejection_fraction_percent
from scripts.phases import PHASE_NAMES, cardiac_phases, cyclic_frame_distance


def curve_lvef_percent(lv_volume_ml: np.ndarray, phases: dict[str, int | None]) -> float:
    """LVEF (%) of a (T,) LV volume curve at its ED and ES frames."""
    return ejection_fraction_percent(lv_volume_ml[phases["ED"]], lv_volume_ml[phases["ES"]])


def phase_scores(predictions: Path, dataset: Path) -> tuple[dict[str, list[int]], list[float], list[str]]:
    """Per keyframe, the cFD (frames) of every subject of ``dataset`` with true phases and found ones; the |LVEF
    error| (points) of the same subjects; the subjects without found phases."""
    distances: dict[str, list[int]] = {name: [] for name in PHASE_NAMES}
    lvef_errors: list[float] = []
    missed = []
    for sidecar in sorted(dataset.glob("*/subject.json")):
        true_curve = json.loads(sidecar.read_text()).get("lv_volume_ml")
        if not true_curve:
            continue
        true_curve = np.asarray(true_curve, dtype=float)
        truth = cardiac_phases(true_curve)
        subject = sidecar.parent.name
        curves_file = predictions / subject / "volume_curves.json"
        if not curves_file.is_file():
            missed.append(subject)
            continue
        curves = json.loads(curves_file.read_text())
        lv_curve = curves["volumes_ml"].get("LVBP")
        lv_curve = None if lv_curve is None else np.asarray(lv_curve, dtype=float)
        signal = curves.get("lv_blood_pool_signal")
        found = cardiac_phases(lv_curve if signal is None else np.asarray(signal, dtype=float))
        if lv_curve is None or any(found.get(name) is None for name in PHASE_NAMES):
            missed.append(subject)
            continue
        for name in PHASE_NAMES:
            distances[name].append(cyclic_frame_distance(found[name], truth[name], curves["num_frames"]))
        measured = curve_lvef_percent(lv_curve, cardiac_phases(lv_curve))
        lvef_errors.append(abs(measured - curve_lvef_percent(true_curve, truth)))
    return distances, lvef_errors, missed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions", type=Path, help="inference output folder")
    parser.add_argument("dataset", type=Path, help="the synthetic cohort inference ran on")
    parser.add_argument("--json", type=Path, help="also write the scores to this JSON file")
    args = parser.parse_args()
    distances, lvef_errors, missed = phase_scores(args.predictions, args.dataset)
    scored = len(distances[PHASE_NAMES[0]])
    if scored == 0:
        raise SystemExit(
            f"no subject of {args.dataset} has both a true LV curve (subject.json 'lv_volume_ml', written by "
            f"tools.synthesize) and a measured one ({args.predictions}/<subject>/volume_curves.json)"
        )
    result = {
        "subjects_scored": scored,
        "subjects_missed": missed,
        "mean_cfd_frames": {name: float(np.mean(values)) for name, values in distances.items()},
        "max_cfd_frames": {name: int(np.max(values)) for name, values in distances.items()},
        "mean_abs_lvef_error_points": float(np.mean(lvef_errors)),
        "max_abs_lvef_error_points": float(np.max(lvef_errors)),
    }
    print(f"{'phase':<20} {'mean cFD (frames)':>18} {'max':>5}   ({scored} subjects, {len(missed)} missed)")
    for name in PHASE_NAMES:
        print(f"{name:<20} {result['mean_cfd_frames'][name]:>18.2f} {result['max_cfd_frames'][name]:>5}")
    print(
        f"|LVEF error|, whole SA stack: mean {result['mean_abs_lvef_error_points']:.1f}, "
        f"max {result['max_abs_lvef_error_points']:.1f} points"
    )
    if missed:
        print(f"no phases found for: {', '.join(missed)}")
    print(json.dumps(result))
    if args.json:
        write_json_atomic(result, args.json)


if __name__ == "__main__":
    main()
