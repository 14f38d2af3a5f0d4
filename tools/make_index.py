"""Write the sharded subject index that ``configs/streaming.yaml`` streams a large cohort's splits from.

    python -m tools.make_index DATASET [--datalist FILE] [--splits training validation] [--shard_size 1000]
        [--out DIR]

Each split (as the workflows read it: the split of ``--datalist``, else of ``DATASET/datalist.json``, else every
subject folder) becomes ``OUT/<split>/index.json`` and ``shard-NNNNN.jsonl`` files of ``--shard_size`` subjects,
their folders relative to DATASET and their phenotypes from ``DATASET/phenotypes.csv`` (:mod:`scripts.streaming`).
OUT defaults to ``DATASET/index``, where the streaming overlay looks (``--subject_index`` names another). A loader
worker holds one shard in memory; the shards a process reads are those that hold its subjects.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import tools  # noqa: F401  (puts the bundle's scripts package on the path)
from scripts.streaming import write_subject_index
from scripts.subject import SubjectError, load_datalist


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path, help="a dataset folder of subject folders")
    parser.add_argument("--datalist", help="split file, relative to DATASET unless absolute (default datalist.json)")
    parser.add_argument("--splits", nargs="+", default=["training", "validation"], help="splits to index")
    parser.add_argument("--shard_size", type=int, default=1000, help="subjects per shard file")
    parser.add_argument("--out", type=Path, help="the index folder (default DATASET/index)")
    args = parser.parse_args()

    dataset_dir = args.dataset.resolve()
    out = args.out or args.dataset / "index"
    for split in args.splits:
        try:
            items = load_datalist(dataset_dir, split, args.datalist)
            entries = (
                {"subject": os.path.relpath(item["subject"], dataset_dir), "phenotypes": item["phenotypes"]}
                for item in items
            )
            count = write_subject_index(entries, out / split, args.shard_size)
        except (SubjectError, ValueError) as err:
            print(f"make_index: {args.dataset}: {err}", file=sys.stderr)
            return 1
        print(f"{split}: {count} subjects in {out / split}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
