"""A split streamed from a sharded subject index, for cohorts too large to list in memory (tens of thousands of
subjects): each process, and each data loader worker in it, reads only the shards that hold its own subjects, one
shard at a time.

Index (a folder per split, written by :func:`write_subject_index`, ``python -m tools.make_index``): ``index.json``,
``{"version": 1, "subjects": N, "shards": [{"file": "shard-00000.jsonl", "subjects": n}, ...]}``, and the shard files
it names, JSON lines of ``{"subject": folder relative to the dataset folder, "phenotypes": [17 numbers or null]}``.

Epoch order: with ``shuffle`` the shards are permuted by (seed, epoch) and each shard's lines by (seed, epoch,
shard), so every process derives the same order of the N subjects without exchanging it. Process r of W takes a
contiguous block of that order:

- ``even_shares`` (training): block r of ceil(N/W) positions, r * ceil(N/W) onwards, positions past N wrapping round
  to the order's start. Each subject comes once per epoch over all processes, except that the first
  W * ceil(N/W) - N subjects of the epoch's order come twice (none when W divides N): every process then takes the
  same number of steps, which DistributedDataParallel needs (as torch's ``DistributedSampler`` pads).
- otherwise (validation): positions [r N / W, (r + 1) N / W), each subject exactly once; with fewer subjects than
  processes every process takes all of them (see :mod:`scripts.distributed`: the reduced mean is exact either way).

A process's block is cut into batches of ``batch_size`` and its data loader workers take contiguous runs of whole
batches, so the loader yields ceil(block / batch_size) batches (its length) whatever the number of workers.
"""

from __future__ import annotations

import bisect
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
from ignite.engine import Engine, Events
from monai.transforms import apply_transform
from torch.utils.data import IterableDataset, get_worker_info

from scripts.distributed import process_count, process_rank
from scripts.files import write_json_atomic, write_text_atomic
from scripts.labels import PHENOTYPE_NAMES

INDEX_VERSION = 1
INDEX_MANIFEST = "index.json"


def write_subject_index(entries: Iterable[Mapping[str, Any]], index_dir: str | os.PathLike, shard_size: int) -> int:
    """Write a sharded subject index from ``entries`` (consumed once, never held: a shard at a time).

    Args:
        entries: ``{"subject": folder relative to the dataset folder, "phenotypes": (17,) numbers, NaN unknown}``
            (``phenotypes`` optional).
        index_dir: the index folder (created); the shards of an earlier index there are replaced.
        shard_size: subjects per shard file (the last one may hold fewer); a worker holds one shard in memory.

    Returns:
        The number of subjects written.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    for old in index_dir.glob("shard-*.jsonl"):
        old.unlink()
    shards: list[dict[str, Any]] = []
    lines: list[str] = []

    def flush() -> None:
        name = f"shard-{len(shards):05d}.jsonl"
        write_text_atomic("".join(lines), index_dir / name)
        shards.append({"file": name, "subjects": len(lines)})
        lines.clear()

    for entry in entries:
        record: dict[str, Any] = {"subject": str(entry["subject"])}
        phenotypes = entry.get("phenotypes")
        if phenotypes is not None and np.isfinite(np.asarray(phenotypes, dtype=np.float32)).any():
            # float32's shortest decimal form (93.186, not 93.18599700927734): what the sample holds, in fewer bytes
            record["phenotypes"] = [
                float(str(v)) if np.isfinite(v) else None for v in np.asarray(phenotypes, dtype=np.float32)
            ]
        lines.append(json.dumps(record) + "\n")
        if len(lines) == shard_size:
            flush()
    if lines:
        flush()
    total = sum(shard["subjects"] for shard in shards)
    write_json_atomic({"version": INDEX_VERSION, "subjects": total, "shards": shards}, index_dir / INDEX_MANIFEST)
    return total


def read_manifest(index_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``index.json`` of a subject index folder.

    Raises:
        FileNotFoundError: the folder holds no index (says how to write one).
        ValueError: an index of another version or without subjects.
    """
    path = Path(index_dir) / INDEX_MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: write the subject index with python -m tools.make_index DATASET (or set "
            "--subject_index to the folder that holds it)"
        )
    manifest = json.loads(path.read_text())
    if manifest.get("version") != INDEX_VERSION:
        raise ValueError(f"{path}: index version {manifest.get('version')}, this bundle reads {INDEX_VERSION}")
    if not manifest["subjects"]:
        raise ValueError(f"{path}: the index lists no subject")
    return manifest


class SubjectStream(IterableDataset):
    """The subjects of a sharded index (module docstring) as a stream of preprocessed samples.

    Also an ignite handler: attached to the trainer (listed among its handlers), it sets the epoch whose order the
    next pass follows when each epoch starts, so a resumed run streams what the uninterrupted one would.

    Args:
        index_dir: the split's index folder (``index.json`` and its shards).
        dataset_dir: the folder the index's subject paths are relative to.
        transform: applied to each item ``{"subject": absolute folder, "id": folder name, "phenotypes": float32
            (17,) NaN where unknown}`` (the workflow's preprocessing, e.g. :class:`scripts.canonical.RandSAStackd`).
        shuffle: permute shards and lines every epoch (training) or keep the index order (validation).
        even_shares: every process takes ceil(N/W) subjects (training) or an exact share (validation).
        batch_size: the data loader's batch size, which the workers' runs are whole batches of.
        seed: seed of the epoch orders (the same on every process).
        num_replicas, rank: W and this process's rank; None: the default process group's (1 and 0 without one).
    """

    def __init__(
        self,
        index_dir: str | os.PathLike,
        dataset_dir: str | os.PathLike,
        transform: Callable | None = None,
        shuffle: bool = True,
        even_shares: bool = True,
        batch_size: int = 1,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        self.index_dir = Path(index_dir)
        self.dataset_dir = Path(dataset_dir).resolve()
        manifest = read_manifest(self.index_dir)
        # the manifest holds a file name and a count per shard: 40 entries for 40,000 subjects in shards of 1,000
        self.shard_files = [shard["file"] for shard in manifest["shards"]]
        self.shard_sizes = [int(shard["subjects"]) for shard in manifest["shards"]]
        self.num_subjects = int(manifest["subjects"])
        self.transform = transform
        self.shuffle = bool(shuffle)
        self.even_shares = bool(even_shares)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.num_replicas = process_count() if num_replicas is None else int(num_replicas)
        self.rank = process_rank() if rank is None else int(rank)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is not one of the {self.num_replicas} processes' ranks")
        self.epoch = 1

    def process_positions(self) -> range:
        """This process's positions in the epoch order (positions >= N wrap round to the start)."""
        n, w, r = self.num_subjects, self.num_replicas, self.rank
        if self.even_shares:
            share = math.ceil(n / w)
            return range(r * share, (r + 1) * share)
        if n < w:
            return range(n)
        return range(r * n // w, (r + 1) * n // w)

    def worker_positions(self, worker: int, num_workers: int) -> range:
        """The positions loader worker ``worker`` of ``num_workers`` streams: a contiguous run of whole batches of
        this process's block."""
        block = self.process_positions()
        num_batches = math.ceil(len(block) / self.batch_size)
        first, last = worker * num_batches // num_workers, (worker + 1) * num_batches // num_workers
        return block[first * self.batch_size : last * self.batch_size]

    def __len__(self) -> int:
        """The number of subjects this process streams per epoch."""
        return len(self.process_positions())

    def attach(self, engine: Engine) -> None:
        """Set the epoch from ``engine``'s when each of its epochs starts (before the loader's workers start)."""
        engine.add_event_handler(Events.EPOCH_STARTED, lambda e: setattr(self, "epoch", e.state.epoch))

    def shard_order(self) -> list[int]:
        """The shards (indices into the manifest) in this epoch's order."""
        if not self.shuffle:
            return list(range(len(self.shard_files)))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.shard_files)).tolist()

    def read_shard(self, shard: int) -> list[dict[str, Any]]:
        """Shard ``shard``'s records, in this epoch's order (the only part of the index a worker holds)."""
        with open(self.index_dir / self.shard_files[shard]) as file:
            records = [json.loads(line) for line in file if line.strip()]
        if len(records) != self.shard_sizes[shard]:
            raise ValueError(
                f"{self.index_dir / self.shard_files[shard]} holds {len(records)} subjects and {INDEX_MANIFEST} says "
                f"{self.shard_sizes[shard]}: the index was changed after it was written; write it again"
            )
        if self.shuffle:
            permutation = np.random.default_rng([self.seed, self.epoch, shard]).permutation(len(records))
            records = [records[i] for i in permutation]
        return records

    def item(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The datalist item of an index record (as :func:`scripts.subject.load_datalist`'s)."""
        folder = self.dataset_dir / record["subject"]
        values = record.get("phenotypes") or [None] * len(PHENOTYPE_NAMES)
        phenotypes = np.array([np.nan if v is None else v for v in values], dtype=np.float32)
        return {"subject": str(folder), "id": folder.name, "phenotypes": phenotypes}

    def records(self, positions: range) -> Iterator[dict[str, Any]]:
        """The index records at ``positions`` of this epoch's order, reading each shard once per run of positions
        inside it."""
        order = self.shard_order()
        starts = np.cumsum([0] + [self.shard_sizes[s] for s in order[:-1]]).tolist()
        current, records = -1, []
        for position in positions:
            wrapped = position % self.num_subjects
            slot = bisect.bisect_right(starts, wrapped) - 1
            if slot != current:
                current, records = slot, self.read_shard(order[slot])
            yield records[wrapped - starts[slot]]

    def __iter__(self) -> Iterator[Any]:
        worker = get_worker_info()
        positions = self.process_positions() if worker is None else self.worker_positions(worker.id, worker.num_workers)
        for record in self.records(positions):
            item = self.item(record)
            yield item if self.transform is None else apply_transform(self.transform, item)
