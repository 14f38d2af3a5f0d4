"""Multi-process runs and streamed cohorts: which process gets which subjects, what each process writes, and the
streaming overlay through the ``monai.bundle`` runner, alone and under torchrun (gloo CPU processes)."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import BUNDLE, REPO
from ignite.metrics import Average
from monai.data import DataLoader

from scripts.distributed import ValidationShardSampler
from scripts.streaming import SubjectStream, write_subject_index

PRETRAIN_STREAMING = [
    "configs/inference.yaml", "configs/train.yaml", "configs/pretrain.yaml", "configs/streaming.yaml"
]  # fmt: skip


def run_checked(command: list[str], cwd: Path = BUNDLE) -> subprocess.CompletedProcess:
    """Run ``command`` with one thread per process; its output (every rank's log lines) goes with a failure."""
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result


def written_files(folder: Path) -> list[str]:
    """Every file under ``folder``, relative to it, with the process id of TensorBoard event files left out."""
    names = []
    for path in folder.rglob("*"):
        if path.is_file():
            name = str(path.relative_to(folder))
            names.append(name.split("tfevents")[0] + "tfevents" if "tfevents" in name else name)
    return sorted(names)


@pytest.mark.parametrize("subjects, processes", [(1, 2), (1, 4), (3, 4), (4, 2), (5, 2), (7, 3)])
def test_validation_shards_cover_each_subject_once_or_every_subject_on_every_process(subjects, processes):
    shards = [list(ValidationShardSampler(range(subjects), processes, rank)) for rank in range(processes)]
    if subjects < processes:
        assert shards == [list(range(subjects))] * processes, "every process validates the whole split"
    else:
        assert sorted(sum(shards, [])) == list(range(subjects)), "each subject exactly once"
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert all(shards), "no process is left without a subject"


def validated_means(rank: int, processes: int, splits: list[int], init_file: str, results: dict) -> None:
    """Process ``rank``'s part of validations of splits of ``splits`` subjects: ignite's ``Average`` (the class of
    the validation metrics) over the subjects of its :class:`ValidationShardSampler` share, subject i scoring i ** 2;
    the mean it computes (a sum over the processes) goes to ``results[rank, subjects]``."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=processes)
    try:
        for subjects in splits:
            metric = Average()
            for subject in ValidationShardSampler(range(subjects)):
                metric.update(float(subject**2))
            results[rank, subjects] = float(metric.compute())
    finally:
        torch.distributed.destroy_process_group()


def test_the_validation_mean_reduced_over_two_processes_is_the_mean_over_the_split(tmp_path):
    """1 subject (both processes validate it) and 3 (one process validates 2, the other 1)."""
    splits = [1, 3]
    with torch.multiprocessing.Manager() as manager:
        results = manager.dict()
        torch.multiprocessing.spawn(validated_means, args=(2, splits, str(tmp_path / "init"), results), nprocs=2)
        expected = {(rank, n): pytest.approx(sum(i**2 for i in range(n)) / n) for rank in (0, 1) for n in splits}
        assert dict(results) == expected


@pytest.fixture
def name_index(tmp_path) -> tuple[Path, list[str]]:
    """An index of 7 made-up subject names in shards of 3 (the stream does not open subject folders itself)."""
    names = [f"site{i % 2}/subject_{i:04d}" for i in range(7)]
    write_subject_index(({"subject": name} for name in names), tmp_path / "index", shard_size=3)
    return tmp_path / "index", names


def streamed_names(stream: SubjectStream, workers: int, batch_size: int) -> tuple[list[str], int]:
    """What one process's loader yields in an epoch: the subject paths relative to the dataset folder, and the
    loader's length (batches) to compare with the batches it yielded."""
    loader = DataLoader(stream, batch_size=batch_size, num_workers=workers)
    batches = [batch["subject"] for batch in loader]
    assert len(batches) == len(loader), "the loader yields as many batches as its length says (the epoch length)"
    return [os.path.relpath(s, stream.dataset_dir) for batch in batches for s in batch], len(loader)


@pytest.mark.parametrize("processes, workers, batch_size", [(2, 2, 2), (3, 0, 1), (4, 2, 1), (8, 0, 1)])
def test_the_training_stream_yields_each_subject_once_per_epoch_over_processes_padded_to_equal_shares(
    name_index, tmp_path, processes, workers, batch_size
):
    index, names = name_index
    epochs = []
    for epoch in (1, 2):
        streamed, lengths = [], set()
        for rank in range(processes):
            stream = SubjectStream(index, tmp_path, batch_size=batch_size, num_replicas=processes, rank=rank)
            stream.epoch = epoch
            rank_names, length = streamed_names(stream, workers, batch_size)
            assert len(rank_names) == len(stream) == math.ceil(len(names) / processes)
            streamed += rank_names
            lengths.add(length)
        assert len(lengths) == 1, "every process takes the same number of steps (DistributedDataParallel waits)"
        counts = Counter(streamed)
        assert set(counts) == set(names), "every subject in every epoch"
        repeated = processes * math.ceil(len(names) / processes) - len(names)
        assert sum(count - 1 for count in counts.values()) == repeated, "only the padding repeats a subject"
        epochs.append(streamed)
    assert epochs[0] != epochs[1], "shuffled anew every epoch"


@pytest.mark.parametrize("processes", [1, 2, 3, 9])
def test_the_validation_stream_takes_each_subject_once_or_all_on_each_process(name_index, tmp_path, processes):
    index, names = name_index
    shards = []
    for rank in range(processes):
        stream = SubjectStream(index, tmp_path, shuffle=False, even_shares=False, num_replicas=processes, rank=rank)
        shards.append(streamed_names(stream, workers=0, batch_size=1)[0])
    if processes > len(names):
        assert shards == [names] * processes
    else:
        assert sum(shards, []) == names, "each subject once, in the index's order"


def test_make_index_writes_the_splits_of_the_datalist_with_their_phenotypes(tiny_cohort, tmp_path):
    out = tmp_path / "index"
    command = [sys.executable, "-m", "tools.make_index", str(tiny_cohort), "--shard_size", "3", "--out", str(out)]
    run_checked(command, cwd=REPO)
    datalist = json.loads((tiny_cohort / "datalist.json").read_text())
    for split in ("training", "validation"):
        manifest = json.loads((out / split / "index.json").read_text())
        assert manifest["subjects"] == len(datalist[split])
        assert [shard["subjects"] for shard in manifest["shards"]][:-1] == [3] * (len(manifest["shards"]) - 1)
        stream = SubjectStream(out / split, tiny_cohort, shuffle=False)
        items = [stream.item(record) for record in stream.records(range(len(stream)))]
        assert [item["id"] for item in items] == [entry["subject"] for entry in datalist[split]]
        assert all(Path(item["subject"]).is_dir() and torch.isfinite(torch.as_tensor(item["phenotypes"])).all()
                   for item in items)  # fmt: skip


@pytest.fixture(scope="module")
def subject_index(tiny_cohort, tmp_path_factory) -> Path:
    """The tiny cohort's subject index (shards of 2 subjects), kept outside the cohort's folder."""
    index = tmp_path_factory.mktemp("index")
    command = [sys.executable, "-m", "tools.make_index", str(tiny_cohort), "--shard_size", "2", "--out", str(index)]
    subprocess.run(command, cwd=REPO, check=True)
    return index


def test_streamed_pretraining_runs_through_the_bundle_runner(tiny_cohort, subject_index, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", repr(PRETRAIN_STREAMING),
               "--preset", "tiny", "--dataset_dir", str(tiny_cohort), "--subject_index", str(subject_index),
               "--output_dir", str(out), "--max_epochs", "1"]  # fmt: skip
    run_checked(command)
    checkpoint = torch.load(out / "pretrain" / "models" / "checkpoint_epoch=1.pt", weights_only=True)
    assert checkpoint["trainer"]["epoch_length"] == 4, "the 4 training subjects of the index"
    assert written_files(out) == [
        "pretrain/logs/events.out.tfevents", "pretrain/models/checkpoint_epoch=1.pt", "pretrain/models/model.pt"
    ]  # fmt: skip


def test_streamed_pretraining_on_two_processes_shares_the_subjects_and_rank_zero_alone_writes(
    tiny_cohort, subject_index, tmp_path
):
    """torchrun, 2 gloo CPU processes, the multi-GPU overlay before the streaming one (either order works): 4
    training subjects, 2 steps per process, and 1 validation subject, which both processes validate."""
    out = tmp_path / "out"
    configs = PRETRAIN_STREAMING[:3] + ["configs/multi_gpu_train.yaml", PRETRAIN_STREAMING[3]]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
               "monai.bundle", "run", "--config_file", repr(configs), "--preset", "tiny",
               "--dataset_dir", str(tiny_cohort), "--subject_index", str(subject_index), "--output_dir", str(out),
               "--max_epochs", "2"]  # fmt: skip
    result = run_checked(command)
    checkpoint = torch.load(out / "pretrain" / "models" / "checkpoint_epoch=2.pt", weights_only=True)
    assert checkpoint["trainer"]["epoch_length"] == 2, "each process streams half of the 4 training subjects"
    assert math.isfinite(checkpoint["best_model"]["best_metric"])
    assert written_files(out) == [
        "pretrain/logs/events.out.tfevents", "pretrain/models/checkpoint_epoch=2.pt", "pretrain/models/model.pt"
    ]  # fmt: skip
    assert "Epoch[2] Complete" in result.stdout


def test_stream_speed_reports_subjects_per_second_per_worker_cold_and_warm(tiny_cohort, subject_index):
    command = [sys.executable, "-m", "tools.stream_speed", str(tiny_cohort), "--subject_index", str(subject_index),
               "--preset", "tiny", "--workers", "0"]  # fmt: skip
    rows = [json.loads(line) for line in run_checked(command, cwd=REPO).stdout.splitlines()]
    assert [(row["workers"], row["cache"], row["subjects"]) for row in rows] == [(0, "cold", 4), (0, "warm", 4)]
    assert all(row["subjects_per_s_per_worker"] > 0 for row in rows)


def test_the_model_cards_two_node_torchrun_command_trains_with_two_launchers_on_this_machine(tiny_cohort, tmp_path):
    """The static rendezvous of the model card (--nnodes, --node_rank, --master_addr), both nodes played here by two
    launchers of one process each on the loopback address."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "out"
    configs = PRETRAIN_STREAMING[:3] + ["configs/multi_gpu_train.yaml"]
    launchers = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node_rank={node}",
             "--nproc_per_node=1", "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "monai.bundle", "run",
             "--config_file", repr(configs), "--preset", "tiny", "--dataset_dir", str(tiny_cohort),
             "--output_dir", str(out), "--max_epochs", "1"],
            cwd=BUNDLE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
        for node in (0, 1)
    ]
    outputs = [launcher.communicate(timeout=300)[0] for launcher in launchers]
    assert [launcher.returncode for launcher in launchers] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    checkpoint = torch.load(out / "pretrain" / "models" / "checkpoint_epoch=1.pt", weights_only=True)
    assert checkpoint["trainer"]["epoch_length"] == 2, "each node's process trains on half of the 4 subjects"
    assert written_files(out) == [
        "pretrain/logs/events.out.tfevents", "pretrain/models/checkpoint_epoch=1.pt", "pretrain/models/model.pt"
    ]  # fmt: skip
