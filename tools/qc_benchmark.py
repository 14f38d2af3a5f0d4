"""How often the quality control flags clean and deliberately corrupted segmentations of held-out subjects.

Usage: ``python -m tools.qc_benchmark (--data DIR | --work DIR --subjects N --seed S [--variety classic|wide])
[--predictions DIR] [--json FILE]``

The subjects (a synthetic cohort from ``--data``, or synthesised into ``--work``) are read with their ground-truth
segmentations, which stand for clean ones. Each subject is then corrupted in every way of :data:`CORRUPTIONS`, one
at a time, and :func:`scripts.quality_control.quality_control` is run on every version. ``--predictions`` (an
inference output folder over the same subjects) adds the model's own segmentations as a second clean set, checked as
inference checks them (with the blood-pool signal of the SA image, ``phase_signal``). Printed:
the share of subjects flagged per set, the checks that fired, and one JSON line with the same numbers (also written
to ``--json``).

Corruptions (the random choices drawn per subject from the cohort seed):

- ``shift``: one plane (any of the four) moved 10 mm in a random in-plane direction through its affine, as a
  breath-hold at another depth leaves it;
- ``slices_deleted``: the labels of two adjacent SA slices that hold LV erased at every frame;
- ``stack_truncated``: the SA stack cut one slice inside the LV at the base or the apex (slices removed);
- ``labels_swapped``: LV blood pool and RV exchanged in every plane;
- ``view_replaced``: one plane replaced by the same plane of another subject of the cohort, with its own affine.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np

import tools  # noqa: F401  (puts the bundle's scripts package on the path)
from scripts.blood_pool_signal import subject_blood_pool_signal
from scripts.files import write_json_atomic
from scripts.geometry import plane_axes, sa_slice_order
from scripts.labels import ALL_PLANE_FILES, SA_PLANE
from scripts.measures import LVBP, RVBP
from scripts.quality_control import Flag, quality_control
from scripts.subject import discover_subjects, find_plane_file
from scripts.synthetic import VARIETIES, synthesize_cohort

#: how far the ``shift`` corruption moves a plane (mm)
SHIFT_MM = 10.0
#: how many adjacent SA slices ``slices_deleted`` erases
DELETED_SLICES = 2

Segmentations = dict[str, tuple[np.ndarray, np.ndarray]]


def read_segmentations(folder: str | os.PathLike) -> Segmentations:
    """The ``seg_<stem>.nii.gz`` files of a subject or prediction folder: stem -> (labels (X, Y, S, T) uint8, affine
    (4, 4)); a long-axis file stored (X, Y, T) gets its slice axis."""
    planes = {}
    for stem in ALL_PLANE_FILES:
        path = find_plane_file(Path(folder), f"seg_{stem}")
        if path is not None:
            image = nib.load(path)
            labels = np.asarray(image.dataobj).astype(np.uint8)
            planes[stem] = (labels if labels.ndim == 4 else labels[:, :, None, :], image.affine.astype(float))
    return planes


def shift_plane(planes: Segmentations, rng: np.random.Generator, others: Segmentations) -> Segmentations:
    """One plane's affine translated :data:`SHIFT_MM` along a random in-plane direction."""
    stem = str(rng.choice(sorted(planes)))
    labels, affine = planes[stem]
    u, v, _ = plane_axes(affine)
    angle = rng.uniform(0, 2 * np.pi)
    shifted = affine.copy()
    shifted[:3, 3] += SHIFT_MM * (np.cos(angle) * u + np.sin(angle) * v)
    return {**planes, stem: (labels, shifted)}


def lv_slices_base_to_apex(planes: Segmentations) -> tuple[list[int], np.ndarray]:
    """The SA slice indices base to apex and the (S,) flags of those (in that order) holding LV at some frame."""
    labels, affine = planes[SA_PLANE]
    order = sa_slice_order(affine, labels.shape)
    return order, (labels == LVBP).any(axis=(0, 1, 3))[order]


def delete_slices(planes: Segmentations, rng: np.random.Generator, others: Segmentations) -> Segmentations:
    """The labels of :data:`DELETED_SLICES` adjacent LV-holding SA slices (at a random place) erased."""
    labels, affine = planes[SA_PLANE]
    order, has_lv = lv_slices_base_to_apex(planes)
    with_lv = np.flatnonzero(has_lv)
    start = int(rng.integers(0, max(len(with_lv) - DELETED_SLICES, 0) + 1))
    erased = labels.copy()
    erased[:, :, [order[i] for i in with_lv[start : start + DELETED_SLICES]]] = 0
    return {**planes, SA_PLANE: (erased, affine)}


def truncate_stack(planes: Segmentations, rng: np.random.Generator, others: Segmentations) -> Segmentations:
    """The SA stack cut at the base or the apex (at random) so that its end slice is the LV's second from that end;
    the affine moved so the remaining slices keep their world positions."""
    labels, affine = planes[SA_PLANE]
    order, has_lv = lv_slices_base_to_apex(planes)
    with_lv = np.flatnonzero(has_lv)
    keep_order = order[: with_lv[-1]] if rng.random() < 0.5 else order[with_lv[0] + 1 :]
    kept = np.sort(keep_order)
    # the slices of a stack are consecutive in its file, and the base-to-apex order runs along the index
    first, last = int(kept[0]), int(kept[-1])
    cut = affine.copy()
    cut[:3, 3] = affine[:3, :3] @ np.array([0.0, 0.0, first]) + affine[:3, 3]
    return {**planes, SA_PLANE: (labels[:, :, first : last + 1], cut)}


def swap_labels(planes: Segmentations, rng: np.random.Generator, others: Segmentations) -> Segmentations:
    """LV blood pool and RV exchanged in every plane."""
    lookup = np.arange(256, dtype=np.uint8)
    lookup[[LVBP, RVBP]] = lookup[[RVBP, LVBP]]
    return {stem: (lookup[labels], affine) for stem, (labels, affine) in planes.items()}


def replace_view(planes: Segmentations, rng: np.random.Generator, others: Segmentations) -> Segmentations:
    """One plane (at random, among those the other subject has) replaced by another subject's."""
    stem = str(rng.choice(sorted(set(planes) & set(others))))
    return {**planes, stem: others[stem]}


def swap_views(planes: Segmentations, rng: np.random.Generator, others: Segmentations) -> Segmentations:
    """The 2- and 4-chamber files exchanged (each keeps its own image, labels and geometry: only the names swap)."""
    return {**planes, "la_2ch": planes["la_4ch"], "la_4ch": planes["la_2ch"]}


#: corruption name -> function (the subject's planes, its random stream, another subject's planes) -> planes
CORRUPTIONS: dict[str, Callable[[Segmentations, np.random.Generator, Segmentations], Segmentations]] = {
    "shift": shift_plane,
    "slices_deleted": delete_slices,
    "stack_truncated": truncate_stack,
    "labels_swapped": swap_labels,
    "view_replaced": replace_view,
    "views_swapped": swap_views,
}


def flagged_share(results: list[list[Flag]]) -> dict[str, object]:
    """Subjects flagged among ``results`` (one flag list per subject), their share, and how often each check fired
    (subjects with at least one flag of it)."""
    checks: dict[str, int] = {}
    for flags in results:
        for check in sorted({f["check"] for f in flags}):
            checks[check] = checks.get(check, 0) + 1
    flagged = sum(bool(flags) for flags in results)
    return {
        "flagged": flagged,
        "subjects": len(results),
        "rate": flagged / len(results) if results else float("nan"),
        "checks": dict(sorted(checks.items())),
    }


def model_flags(subject_folder: Path, prediction_folder: Path) -> list[Flag]:
    """QC of a subject's predicted segmentations as inference runs it: with the LV blood-pool signal of the
    subject's SA image under the predicted SA labels."""
    planes = read_segmentations(prediction_folder)
    signal = subject_blood_pool_signal(subject_folder, planes[SA_PLANE][0]) if SA_PLANE in planes else None
    return quality_control(planes, phase_signal=signal)


def run_benchmark(
    subject_folders: list[Path], seed: int, predictions: Path | None = None
) -> tuple[dict[str, dict[str, object]], dict[str, list[list[Flag]]]]:
    """QC on every clean and corrupted version of the subjects.

    Args:
        subject_folders: subject folders with ground-truth ``seg_*`` files (at least two: ``view_replaced`` takes
            the next subject's plane).
        seed: seed of the corruptions' random choices (each subject its own stream).
        predictions: an inference output folder holding ``<subject>/seg_*`` of the same subjects, or None.

    Returns:
        Per set (``clean``, each corruption, ``model`` with predictions): :func:`flagged_share`; and per set the
        flags of each subject.
    """
    if len(subject_folders) < 2:
        raise ValueError("the benchmark needs at least two subjects (a view is replaced by another subject's)")
    truth = [read_segmentations(folder) for folder in subject_folders]
    results: dict[str, list[list[Flag]]] = {"clean": [quality_control(planes) for planes in truth]}
    for kind_index, (kind, corrupt) in enumerate(CORRUPTIONS.items()):
        results[kind] = []
        for index, planes in enumerate(truth):
            rng = np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(index, kind_index)))
            results[kind].append(quality_control(corrupt(planes, rng, truth[(index + 1) % len(truth)])))
    if predictions is not None:
        results["model"] = [model_flags(folder, predictions / folder.name) for folder in subject_folders]
    return {kind: flagged_share(flags) for kind, flags in results.items()}, results


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="a cohort of subject folders with ground-truth seg_* files")
    source.add_argument("--work", type=Path, help="folder to synthesise the held-out subjects into")
    parser.add_argument("--subjects", type=int, default=16, help="subjects to synthesise (with --work)")
    parser.add_argument("--seed", type=int, default=2024, help="cohort seed (with --work) and corruption seed")
    parser.add_argument("--variety", choices=VARIETIES, default="classic", help="synthetic variety (with --work)")
    parser.add_argument("--workers", type=int, default=1, help="processes synthesising (with --work)")
    parser.add_argument("--predictions", type=Path, help="inference output over the same subjects: the model's set")
    parser.add_argument("--json", type=Path, help="also write the numbers and every flag to this file")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the flagged rates."""
    args = build_parser().parse_args(argv)
    data = args.data
    if data is None:
        data = args.work / f"{args.variety}_seed{args.seed}"
        synthesize_cohort(data, args.subjects, args.seed, workers=args.workers, variety=args.variety, progress=True)
    folders = [Path(item["subject"]) for item in discover_subjects(data)]
    rates, flags = run_benchmark(folders, args.seed, args.predictions)
    for kind, share in rates.items():
        checks = ", ".join(f"{check} {count}" for check, count in share["checks"].items()) or "none"
        print(f"{kind:>16}: {share['flagged']:>3}/{share['subjects']} flagged ({share['rate']:.0%}); checks: {checks}")
    summary = {"data": str(data), "seed": args.seed, "rates": rates}
    if args.json is not None:
        write_json_atomic({**summary, "flags": {k: dict(zip((f.name for f in folders), v)) for k, v in flags.items()}},
                          args.json)  # fmt: skip
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
