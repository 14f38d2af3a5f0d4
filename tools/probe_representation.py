"""Linear probe of an encoder: how much phenotype information its representation carries, with no fine-tuning.

    python -m tools.probe_representation DATASET_DIR --ckpt runs/full/outputs/pretrain/models/model.pt \
        [--test-dataset-dir DIR] [--preset small] [--patch-size 10,16,16] [--poolings mean,time,mean_std] \
        [--folds 5] [--out probe.json]

The encoder (from any CineMAE / CineHeartNet checkpoint, or freshly initialised with ``--ckpt random`` as the
baseline a pretraining has to beat) encodes every subject of the dataset's ``--splits`` with all its planes and no
masking. Its final tokens are pooled into a representation per subject:

- ``mean``: the mean token, the bundle's embedding (what its phenotype head reads);
- ``time``: the mean token of each temporal token index, concatenated (keeps the phases of the cycle apart);
- ``mean_std``: the mean and the standard deviation of the tokens, concatenated.

For each pooling, the phenotypes are regressed by ridge regression on the standardised representation, the penalty
chosen per phenotype by an inner 5-fold cross-validation (the closed-form fit of ``finetune_phenotypes``). The probe
is scored by ``--folds``-fold cross-validation over the subjects and, with ``--test-dataset-dir``, fit on all of
them and scored on the test subjects; the score is MAE / mean-guess MAE per phenotype (the mean guess is the
fitting subjects' mean; lower is better, 1 is no information). A probe is far cheaper than a fine-tuning (seconds
per subject on a CPU), so it compares pretrainings quickly; it measures linear readability, not how good a start
for fine-tuning the encoder is.

A subject that cannot be read is named and skipped; the exit code is then 1. The report is written atomically.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from monai.bundle import ConfigParser

from scripts.files import write_json_atomic
from scripts.head_fitting import fit_ridge
from scripts.labels import PHENOTYPE_NAMES
from scripts.precision import precision_context
from scripts.subject import load_datalist
from scripts.weights import load_encoder_weights
from tools import BUNDLE

DEFAULT_PHENOTYPES = ("LVEDV", "LVEF", "LVM", "RVEDV", "RVEF")


# --------------------------------------------------------------------------------------------------
# Pooling: (K, D) tokens of one subject -> one vector
# --------------------------------------------------------------------------------------------------
def pool_mean(tokens: torch.Tensor, time_index: torch.Tensor, num_times: int) -> torch.Tensor:
    """(K, D) -> (D,) mean token."""
    return tokens.mean(0)


def pool_time(tokens: torch.Tensor, time_index: torch.Tensor, num_times: int) -> torch.Tensor:
    """(K, D) tokens with their temporal token index (K,) in [0, num_times) -> (num_times * D,) mean token per
    temporal index, earliest first (zeros for an index with no token)."""
    pooled = torch.zeros(num_times, tokens.shape[1], dtype=tokens.dtype)
    pooled.index_add_(0, time_index, tokens)
    counts = torch.bincount(time_index, minlength=num_times).clamp_min(1)
    return (pooled / counts[:, None].to(tokens.dtype)).reshape(-1)


def pool_mean_std(tokens: torch.Tensor, time_index: torch.Tensor, num_times: int) -> torch.Tensor:
    """(K, D) -> (2 D,) mean token and per-channel standard deviation over the tokens."""
    return torch.cat([tokens.mean(0), tokens.std(0, unbiased=False)])


POOLINGS: dict[str, Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]] = {
    "mean": pool_mean,
    "time": pool_time,
    "mean_std": pool_mean_std,
}


# --------------------------------------------------------------------------------------------------
# Encoder and features
# --------------------------------------------------------------------------------------------------
def build_encoder_and_loader(
    preset: str, ckpt: str, patch_size: Sequence[int] | None, seed: int
) -> tuple[torch.nn.Module, Callable[[dict], dict]]:
    """The bundle's network (built by its inference config) with the checkpoint's encoder, and its subject loader."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.yaml"))
    parser.update({"bundle_root": str(BUNDLE), "preset": preset})
    if patch_size is not None:
        parser["network_def#patch_size"] = list(patch_size)
    torch.manual_seed(seed)  # the random baseline is reproducible
    network = parser.get_parsed_content("network_def")
    if ckpt != "random":
        loaded = load_encoder_weights(network, ckpt)
        print(f"encoder: {loaded['loaded']} tensors from {ckpt}", file=sys.stderr)
    return network.eval(), parser.get_parsed_content("load_subject")


@torch.no_grad()
def pooled_features(
    network: torch.nn.Module,
    load_subject: Callable[[dict], dict],
    items: Sequence[dict],
    poolings: Sequence[str],
    device: torch.device,
) -> tuple[dict[str, np.ndarray], np.ndarray, list[str], list[str]]:
    """Pooled representations of the subjects that load.

    Returns:
        pooling -> (N, width) features, (N, K) phenotypes (NaN where unknown), the N subject ids, and one message
        per subject that could not be read.
    """
    encoder = network.encoder.to(device)
    features: dict[str, list[np.ndarray]] = {name: [] for name in poolings}
    targets, ids, failures = [], [], []
    for item in items:
        try:
            sample = load_subject(dict(item))
        except Exception as err:  # keep going past a bad subject, and say which and why
            failures.append(f"{item['id']} ({item['subject']}): skipped: {err}")
            continue
        image = sample["image"][None].to(device)
        plane_mask = sample["plane_mask"][None].to(device).bool()
        with precision_context(device, "auto"):
            encoded = encoder(image, plane_mask)
        valid = encoded.token_valid[0]
        tokens = encoded.tokens[0][valid].float().cpu()
        grid = encoder.token_grid(image.shape[3:])
        time_index = ((encoded.token_ids[0][valid] % math.prod(grid)) // (grid[1] * grid[2])).cpu()
        for name in poolings:
            features[name].append(POOLINGS[name](tokens, time_index, grid[0]).numpy())
        targets.append(np.asarray(item["phenotypes"], dtype=np.float64))
        ids.append(item["id"])
    stacked = {name: np.stack(rows).astype(np.float64) for name, rows in features.items() if rows}
    return stacked, np.stack(targets) if targets else np.zeros((0, len(PHENOTYPE_NAMES))), ids, failures


# --------------------------------------------------------------------------------------------------
# Ridge probe
# --------------------------------------------------------------------------------------------------
def probe_errors(x_fit: np.ndarray, y_fit: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> np.ndarray:
    """Fit the ridge probe on (N, D) features and (N, K) phenotypes (NaN where unknown) and score it on the test
    rows: (3, K) = per phenotype the summed absolute error, the summed absolute error of the mean guess, and the
    number of test subjects where the phenotype is known (sums, so that folds add up)."""
    mean, spread = x_fit.mean(0), x_fit.std(0) + 1e-6
    target_mean, target_std = np.nanmean(y_fit, 0), np.nanstd(y_fit, 0)
    target_std = np.where(target_std > 0, target_std, 1.0)
    weight, bias, _ = fit_ridge((x_fit - mean) / spread, (y_fit - target_mean) / target_std, np.arange(len(x_fit)))
    predicted = (((x_test - mean) / spread) @ weight.T + bias) * target_std + target_mean
    known = np.isfinite(y_test)
    errors = np.where(known, np.abs(predicted - y_test), 0.0).sum(0)
    guess = np.where(known, np.abs(target_mean - y_test), 0.0).sum(0)
    return np.stack([errors, guess, known.sum(0)])


def ratios(totals: np.ndarray) -> dict[str, float | None]:
    """(3, K) summed errors, mean-guess errors and counts -> phenotype -> MAE / mean-guess MAE."""
    return {
        name: float(totals[0, k] / totals[1, k]) if totals[2, k] > 0 and totals[1, k] > 0 else None
        for k, name in enumerate(PHENOTYPE_NAMES)
    }


def cross_validate(x: np.ndarray, y: np.ndarray, folds: int, seed: int) -> dict[str, float | None]:
    """MAE / mean-guess MAE per phenotype over ``folds`` folds of the subjects (a seeded shuffle)."""
    fold_of = np.random.default_rng(seed).permutation(len(x)) % folds
    totals = sum(probe_errors(x[fold_of != f], y[fold_of != f], x[fold_of == f], y[fold_of == f]) for f in range(folds))
    return ratios(totals)


def table(report: dict[str, Any], phenotypes: Sequence[str]) -> list[str]:
    lines = ["| pooling | width | score | " + " | ".join(phenotypes) + " |", "|---|---|---|" + "---|" * len(phenotypes)]
    for name, result in report["poolings"].items():
        for key, title in (("cross_validation", f"{report['folds']}-fold CV"), ("test", "test")):
            if key in result:
                cells = ["n/a" if result[key][p] is None else f"{result[key][p]:.2f}" for p in phenotypes]
                lines.append(f"| {name} | {result['width']} | {title} | " + " | ".join(cells) + " |")
    return lines


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset_dir", help="dataset folder with phenotypes.csv (and optionally datalist.json)")
    parser.add_argument("--ckpt", required=True, help="CineMAE or CineHeartNet checkpoint, or 'random'")
    parser.add_argument("--splits", default="training,validation", help="splits of dataset_dir to probe on")
    parser.add_argument("--test-dataset-dir", help="held-out dataset folder (its --test-split) to score on")
    parser.add_argument("--test-split", default="test")
    parser.add_argument("--preset", default="small", choices=("paper", "small", "tiny"))
    parser.add_argument("--patch-size", help="t,y,x patch of the encoder when not the preset's, e.g. 10,16,16")
    parser.add_argument("--poolings", default="mean,time,mean_std", help=f"comma-separated, of {sorted(POOLINGS)}")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds over the subjects")
    parser.add_argument("--phenotypes", default=",".join(DEFAULT_PHENOTYPES), help="columns of the printed table")
    parser.add_argument("--seed", type=int, default=0, help="random encoder and fold assignment")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", help="write the report (JSON) here")
    return parser


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()

    poolings = [p for p in args.poolings.split(",") if p]
    unknown = sorted(set(poolings) - set(POOLINGS)) + sorted(set(args.phenotypes.split(",")) - set(PHENOTYPE_NAMES))
    if unknown:
        parser.error(f"unknown poolings or phenotypes {unknown}; poolings are {sorted(POOLINGS)}")
    patch_size = [int(v) for v in args.patch_size.split(",")] if args.patch_size else None
    if args.ckpt != "random" and not Path(args.ckpt).is_file():
        parser.error(f"checkpoint {args.ckpt} does not exist; give a CineMAE / CineHeartNet .pt file or 'random'")

    started = time.perf_counter()
    network, load_subject = build_encoder_and_loader(args.preset, args.ckpt, patch_size, args.seed)
    device = torch.device(args.device)
    items, seen = [], set()
    for split in args.splits.split(","):
        for item in load_datalist(args.dataset_dir, split):
            if item["id"] not in seen:  # without a datalist every split lists every subject
                seen.add(item["id"])
                items.append(item)
    x, y, ids, failures = pooled_features(network, load_subject, items, poolings, device)
    test = None
    if args.test_dataset_dir:
        test_items = load_datalist(args.test_dataset_dir, args.test_split)
        test_x, test_y, test_ids, test_failures = pooled_features(network, load_subject, test_items, poolings, device)
        failures += test_failures
        test = (test_x, test_y, test_ids)
    for message in failures:
        print(message, file=sys.stderr)
    known = np.isfinite(y).any(1)
    if known.sum() < max(args.folds, 2):
        print(
            f"{args.dataset_dir}: {int(known.sum())} subjects with phenotypes, the probe needs at least "
            f"{max(args.folds, 2)}: add phenotypes.csv or lower --folds",
            file=sys.stderr,
        )
        return 1

    report: dict[str, Any] = {
        "ckpt": args.ckpt,
        "preset": args.preset,
        "patch_size": list(network.encoder.patch_size),
        "subjects": int(known.sum()),
        "test_subjects": len(test[2]) if test else 0,
        "folds": args.folds,
        "poolings": {},
    }
    for name in poolings:
        features = x[name][known]
        result: dict[str, Any] = {
            "width": int(features.shape[1]),
            "cross_validation": cross_validate(features, y[known], args.folds, args.seed),
        }
        if test and test[2]:
            result["test"] = ratios(probe_errors(features, y[known], test[0][name], test[1]))
        report["poolings"][name] = result
    report["seconds"] = round(time.perf_counter() - started, 1)
    print("\n".join(table(report, args.phenotypes.split(","))))
    print(f"{report['subjects']} subjects, {report['test_subjects']} test subjects, {report['seconds']} s")
    if args.out:
        write_json_atomic(report, args.out)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
