"""Subjects per second that a streamed training split delivers, per data loader worker, cold and warm.

    python -m tools.stream_speed DATASET [--subject_index DIR] [--preset tiny|small|paper] [--workers 1 2]
        [--out results.json]

Builds the training data loader of ``pretrain.yaml`` with ``streaming.yaml`` (the index ``DATASET/index/training``
or ``--subject_index``/training, written by ``python -m tools.make_index DATASET``; the training preprocessing at
``--preset``) as ``python -m
monai.bundle run`` would, one process, and for each ``--workers`` count streams the split twice into a fresh cache
folder: ``cold`` builds every sample from the NIfTI files and writes it to the cache, ``warm`` reads the cache. Each
pass is timed from the loader's start (worker start-up included) to its last sample. Prints a table to stderr and
one JSON line per pass to stdout: ``preset``, ``workers``, ``cache`` (cold or warm), ``subjects``, ``seconds``,
``subjects_per_s``, ``subjects_per_s_per_worker``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from monai.bundle import ConfigParser

from tools import BUNDLE  # (also puts the bundle's scripts package on the path)

CONFIGS = ("inference.yaml", "train.yaml", "pretrain.yaml", "streaming.yaml")


def time_pass(loader: Iterable[Mapping[str, Any]]) -> tuple[int, float]:
    """Stream ``loader`` (an iterable of batches of samples, ``image`` (B, 1, P, T, H, W)) once; returns the number
    of subjects and the seconds from the start to the last batch."""
    start = time.perf_counter()
    subjects = sum(int(batch["image"].shape[0]) for batch in loader)
    return subjects, time.perf_counter() - start


def measure(dataset: Path, subject_index: Path | None, preset: str, workers: int) -> list[dict]:
    """The cold and the warm pass of the streamed training split of ``dataset`` (its index: ``subject_index``, None
    for DATASET/index) with ``workers`` loader workers (0: the main process, counted as one worker), into a temporary
    cache folder."""
    rows = []
    with tempfile.TemporaryDirectory() as cache_dir:
        config = ConfigParser()
        config.read_config([str(BUNDLE / "configs" / name) for name in CONFIGS])
        config.update(
            {"bundle_root": str(BUNDLE), "dataset_dir": str(dataset.resolve()), "preset": preset,
             "cache_dir": cache_dir, "num_workers": workers}
        )  # fmt: skip
        if subject_index is not None:
            config["subject_index"] = str(subject_index.resolve())
        loader = config.get_parsed_content("train#dataloader")
        for cache in ("cold", "warm"):
            subjects, seconds = time_pass(loader)
            rate = subjects / seconds
            rows.append({"preset": preset, "workers": workers, "cache": cache, "subjects": subjects,
                         "seconds": round(seconds, 3), "subjects_per_s": round(rate, 2),
                         "subjects_per_s_per_worker": round(rate / max(workers, 1), 2)})  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path, help="a dataset folder with its subject index (tools.make_index)")
    parser.add_argument("--subject_index", type=Path, help="the index folder (default DATASET/index)")
    parser.add_argument("--preset", choices=("paper", "small", "tiny"), default="small")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="loader worker counts to time")
    parser.add_argument("--out", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args()

    rows = [row for workers in args.workers for row in measure(args.dataset, args.subject_index, args.preset, workers)]
    header = f"{'preset':8}{'workers':>8}{'cache':>7}{'subjects':>10}{'s':>9}{'subj/s':>9}{'per worker':>12}"
    print(header, file=sys.stderr)
    for row in rows:
        print(
            f"{row['preset']:8}{row['workers']:>8}{row['cache']:>7}{row['subjects']:>10}{row['seconds']:>9.2f}"
            f"{row['subjects_per_s']:>9.2f}{row['subjects_per_s_per_worker']:>12.2f}",
            file=sys.stderr,
        )
        print(json.dumps(row))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
