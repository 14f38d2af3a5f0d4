"""Write cross-validation split files of a dataset folder, one per fold, for the workflows' ``--datalist``.

    python -m tools.make_folds DATASET [--folds K] [--validation N] [--seed S] [--out DIR]

The subject folders of DATASET (sorted by name, then shuffled with ``--seed``) are dealt into K folds (default: one
per subject, leave-one-out). ``fold<k>.json`` tests on fold k and trains on the rest, of which the first N (default
1) are held out for validation, the split that picks ``model.pt``. ``--validation 0`` validates on the training
subjects themselves, for a cohort too small to spare one: validation then reports the fit only, so train with
``--val_interval`` equal to ``--max_epochs`` to make ``model.pt`` the last epoch. The files go to ``DATASET/folds``
unless ``--out`` says otherwise; the subject names in them are relative to DATASET, e.g.

    python -m monai.bundle run --config_file "[...,'configs/finetune_segmentation.yaml']" --dataset_dir DATASET \\
        --datalist folds/fold0.json ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import tools  # noqa: F401  (puts the bundle's scripts package on the path)
from scripts.files import write_json_atomic
from scripts.subject import SubjectError, discover_subjects


def make_folds(names: list[str], folds: int, validation: int, seed: int) -> list[dict[str, list[dict[str, str]]]]:
    """Split files (``{"training": [{"subject": name}], "validation": [...], "test": [...]}``) of ``folds`` folds.

    Raises:
        ValueError: fewer subjects than folds, or no training subject left after ``validation``.
    """
    if folds < 2 or folds > len(names):
        raise ValueError(f"--folds must lie in [2, {len(names)}] (the number of subjects), got {folds}")
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    splits = []
    for k in range(folds):
        test = order[k::folds]
        rest = [name for i, name in enumerate(order) if i % folds != k]
        if len(rest) <= validation:
            raise ValueError(
                f"fold {k} has {len(rest)} subjects outside its test set: too few to hold {validation} out for "
                f"validation and train on the others; lower --validation (0 validates on the training subjects)"
            )
        training = rest[validation:]
        held_out = rest[:validation] or training
        splits.append({split: [{"subject": name} for name in entries] for split, entries in
                       (("training", training), ("validation", held_out), ("test", test))})  # fmt: skip
    return splits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path, help="a dataset folder of subject folders")
    parser.add_argument("--folds", type=int, default=0, help="number of folds (default: one per subject)")
    parser.add_argument("--validation", type=int, default=1, help="training subjects held out for validation")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffle before the subjects are dealt")
    parser.add_argument("--out", type=Path, help="where the fold files go (default DATASET/folds)")
    args = parser.parse_args()

    try:
        names = [item["id"] for item in discover_subjects(args.dataset)]
        splits = make_folds(names, args.folds or len(names), args.validation, args.seed)
    except (SubjectError, ValueError) as err:
        print(f"make_folds: {args.dataset}: {err}", file=sys.stderr)
        return 1
    out = args.out or args.dataset / "folds"
    for k, split in enumerate(splits):
        write_json_atomic(split, out / f"fold{k}.json")
    print(f"{len(splits)} folds of {len(names)} subjects in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
