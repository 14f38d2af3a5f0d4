"""Markdown tables of an ``evaluate`` report (``metrics.json``): Dice per view (canonical grid, and as written),
phenotype MAE beside the mean guess and phenotype bias (regressed on the embedding, regressed on the measures,
measured on the segmentations, and measured on the reference labels), missing-plane robustness and, with two models,
their subject-by-subject comparison. ``--beside`` puts the first model of a second report (e.g. a training evaluated in
another run, on the same subjects) beside the first model of the first, as one two-model report.

    python -m tools.metrics_table runs/full/outputs/evaluation/metrics.json [--phenotypes LVEDV LVEF ...]
    python -m tools.metrics_table PRETRAINED/metrics.json --beside SCRATCH/metrics.json [--names pretrained scratch]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable, Mapping

import tools  # noqa: F401  (puts the bundle's scripts package on the path)
from scripts.evaluation import PHENOTYPE_SOURCES, paired_models

CLASSES = ("LVBP", "LVMYO", "RVBP", "LABP", "RABP")
VIEWS = ("all", "sa", "la_2ch", "la_3ch", "la_4ch")
DEFAULT_PHENOTYPES = ("LVEDV", "LVESV", "LVEF", "LVM", "RVEDV", "RVEF", "LAVmax", "RAVmax")


def fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def dice_table(report: Mapping[str, Any], key: str = "dice") -> list[str]:
    """Per model and view: the Dice of report entry ``key`` (``dice``: canonical grid; ``dice_input_planes``: the
    segmentations as written)."""
    lines = ["| model | view | " + " | ".join(CLASSES) + " |", "|---|---|" + "---|" * len(CLASSES)]
    for name, model in report["models"].items():
        for view in VIEWS:
            if view in model.get(key, {}):
                cells = [fmt(model[key][view].get(c)) for c in CLASSES]
                lines.append(f"| {name} | {view} | " + " | ".join(cells) + " |")
    return lines


def spurious_table(report: Mapping[str, Any]) -> list[str]:
    """Per model and view: in how many subjects whose labels lack a class the model paints it."""
    lines = ["| model | view | " + " | ".join(CLASSES) + " |", "|---|---|" + "---|" * len(CLASSES)]
    for name, model in report["models"].items():
        for view in VIEWS:
            counts = model.get("spurious", {}).get(view)
            if counts:
                cells = [f"{counts[c]['painted']} of {counts[c]['absent']}" if c in counts else "" for c in CLASSES]
                lines.append(f"| {name} | {view} | " + " | ".join(cells) + " |")
    return lines


def phenotype_cell(entry: Mapping[str, Any] | None) -> str:
    if not entry:
        return "n/a"
    return f"{entry['mae']:.1f} ({fmt(entry['ratio_to_mean_guess'], 2)})"


def bias_cell(entry: Mapping[str, Any] | None) -> str:
    # reports written before the bias was added have none
    return "n/a" if not entry or entry.get("bias") is None else f"{entry['bias']:+.1f}"


def phenotype_table(
    report: Mapping[str, Any],
    phenotypes: tuple[str, ...],
    cell: Callable[[Mapping[str, Any] | None], str] = phenotype_cell,
    mean_guess_row: bool = True,
) -> list[str]:
    """One row per model and source (regressed on the embedding, regressed on the measures where the report has
    them, measured on the segmentations), one for the reference labels and
    (``mean_guess_row``) one for the mean-guess MAE; ``cell`` formats a report entry (error and ratio, or bias)."""
    lines = ["| source | " + " | ".join(phenotypes) + " |", "|---|" + "---|" * len(phenotypes)]
    for name, model in report["models"].items():
        for key, title in PHENOTYPE_SOURCES:
            if key not in model:
                continue
            row = [cell(model.get(key, {}).get(p)) for p in phenotypes]
            lines.append(f"| {name}, {title} | " + " | ".join(row) + " |")
    reference = report.get("phenotypes_from_reference_labels", {})
    lines.append(
        "| measured on the reference labels | " + " | ".join(cell(reference.get(p)) for p in phenotypes) + " |"
    )
    if not mean_guess_row:
        return lines
    first = next(iter(report["models"].values()))["phenotypes"]
    lines.append(
        "| mean guess | " + " | ".join(fmt(first.get(p, {}).get("mean_guess_mae"), 1) for p in phenotypes) + " |"
    )
    return lines


def robustness_table(report: Mapping[str, Any]) -> list[str]:
    lines = [
        "| model | cosine, 1 plane removed | cosine, 2 removed | standardised cosine, 1 / 2 removed "
        "| LVM shift (g), 2 removed | RVEF shift (%), 2 removed |",
        "|---|---|---|---|---|---|",
    ]
    for name, model in report["models"].items():
        one, two = (model["robustness"].get(f"{k}_planes_removed") for k in (1, 2))
        if not one or not two:
            continue
        lines.append(
            f"| {name} | {one['embedding_cosine_mean']:.3f} / {one['embedding_cosine_min']:.3f} "
            f"| {two['embedding_cosine_mean']:.3f} / {two['embedding_cosine_min']:.3f} "
            f"| {one.get('standardised_embedding_cosine_mean', float('nan')):.3f} / "
            f"{two.get('standardised_embedding_cosine_mean', float('nan')):.3f} "
            f"| {two['phenotype_abs_shift_mean']['LVM']:.2f} | {two['phenotype_abs_shift_mean']['RVEF']:.2f} |"
        )
    return lines


def paired_table(report: Mapping[str, Any], phenotypes: tuple[str, ...]) -> list[str]:
    """Subject by subject, the first model (pretrained) against the second (scratch): Dice as written per class and
    the reported phenotypes' absolute error, with the sign test's p-value."""
    paired = report["paired"]
    first, second = paired["first"], paired["second"]
    lines = [
        f"| measure | subjects | {first} better | {second} better | ties | mean difference ({first} - {second}) "
        "| sign test p |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = [(f"Dice {c}, as written", paired["dice_input_planes"].get(c), 3) for c in CLASSES]
    rows += [(f"reported {p} abs. error", paired["reported_abs_error"].get(p), 1) for p in phenotypes]
    for title, entry, digits in rows:
        if entry:
            lines.append(
                f"| {title} | {entry['subjects']} | {entry['first_better']} | {entry['second_better']} | "
                f"{entry['ties']} | {entry['mean_difference']:+.{digits}f} | {entry['sign_test_p']:.3f} |"
            )
    return lines


def read_report(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"cannot read {path}: {err}; pass the metrics.json of an evaluate run") from err


def side_by_side(
    report: Mapping[str, Any], other: Mapping[str, Any], names: tuple[str, str] | None = None
) -> dict[str, Any]:
    """The first model of ``report`` and the first model of ``other`` as one two-model report (named ``names``,
    default their own names), compared subject by subject as ``evaluate`` compares its two checkpoints.

    Both reports must score the same subjects in the same order and keep each subject's values (``per_subject``,
    written by ``evaluate`` since 0.8.1); the rest (mean guess, reference labels) is taken from ``report``."""
    if report["subjects"] != other["subjects"]:
        raise SystemExit(
            f"the two reports score different subjects ({len(report['subjects'])} from {report['dataset_dir']}, "
            f"{len(other['subjects'])} from {other['dataset_dir']}): evaluate both models on the same dataset and split"
        )
    (name, model), (other_name, other_model) = (next(iter(r["models"].items())) for r in (report, other))
    if not ("per_subject" in model and "per_subject" in other_model):
        raise SystemExit("a report has no per-subject values (evaluate before 0.8.1): evaluate that model again")
    names = names or (name, other_name)
    if names[0] == names[1]:
        raise SystemExit(f"both models are named {names[0]!r}: name them with --names")
    merged = {**report, "models": {names[0]: model, names[1]: other_model}}
    merged["paired"] = paired_models(merged["models"])
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics", type=Path, help="metrics.json written by the evaluate workflow")
    parser.add_argument("--phenotypes", nargs="+", default=list(DEFAULT_PHENOTYPES), help="phenotype columns")
    parser.add_argument("--beside", type=Path, help="a second report whose first model goes beside the first's")
    parser.add_argument("--names", nargs=2, help="the two models' names with --beside (default: their own)")
    args = parser.parse_args()
    report = read_report(args.metrics)
    if args.beside:
        report = side_by_side(report, read_report(args.beside), tuple(args.names) if args.names else None)
    print(f"{len(report['subjects'])} subjects ({report['split']} split of {report['dataset_dir']}); "
          f"mean guess from {report['mean_guess_from']}\n")  # fmt: skip
    print("Dice over all planes and frames, then per view (mean over the subjects whose labels show the class):\n")
    print("\n".join(dice_table(report)))
    if any(model.get("dice_input_planes") for model in report["models"].values()):
        print(
            "\nDice of the segmentations as inference writes them (every input plane in its own grid, every SA slice,"
            " every frame) against the label files:\n"
        )
        print("\n".join(dice_table(report, "dice_input_planes")))
    if any(model.get("spurious") for model in report["models"].values()):
        print("\nClasses painted where the labels show none (subjects painted of subjects without the class):\n")
        print("\n".join(spurious_table(report)))
    print("\nPhenotype MAE (ratio to the mean-guess MAE):\n")
    print("\n".join(phenotype_table(report, tuple(args.phenotypes))))
    print("\nPhenotype bias (mean of value - truth; mL, %, g):\n")
    print("\n".join(phenotype_table(report, tuple(args.phenotypes), bias_cell, mean_guess_row=False)))
    print("\nMissing-plane robustness (embedding cosine to the full set, mean / min over trials):\n")
    print("\n".join(robustness_table(report)))
    if "paired" in report:
        print("\nSubject by subject (the same subjects; two-sided sign test, ties left out):\n")
        print("\n".join(paired_table(report, tuple(args.phenotypes))))


if __name__ == "__main__":
    main()
