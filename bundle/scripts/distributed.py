"""Which process of a multi-process (DistributedDataParallel) run does what: its rank among the processes and its
share of a validation split.

Validation metrics are ignite metrics, whose ``compute`` sums the running totals (sum of the per-subject values and
their count) over all processes: the validated mean is exact when each subject is validated once over all processes,
and also when every process validates every subject (each subject then counts W times, which leaves the mean as it
is). :class:`ValidationShardSampler` gives one or the other, so that no process is left without a subject: a process
without one would skip the validation and the others would wait for it in the sum for ever.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence, Sized

import torch.distributed as dist
from torch.utils.data import Sampler


def process_rank() -> int:
    """This process's rank in the default process group; 0 outside a multi-process run."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def process_count() -> int:
    """The number of processes in the default process group (the world size); 1 outside a multi-process run."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank_handlers(handlers: Sequence[Any | None]) -> list[Any]:
    """The handlers this process attaches: those the config did not disable (None), and on ranks > 0 not MONAI's
    ``MLFlowHandler`` either (``--tracking mlflow`` adds it to the handler lists; each process would log a run)."""
    rank = process_rank()
    return [h for h in handlers if h is not None and (rank == 0 or type(h).__name__ != "MLFlowHandler")]


class ValidationShardSampler(Sampler[int]):
    """Indices of a validation split of N subjects for process ``rank`` of W: subjects rank, rank + W, rank + 2W, ...
    (each subject once over all processes; the counts differ by at most one) when N >= W, else the whole split on
    every process (N < W: a strided share would leave processes without a subject).

    Args:
        dataset: the validation dataset (only its length is used).
        num_replicas: W; None: the world size of the default process group.
        rank: this process's rank; None: the default process group's.
    """

    def __init__(self, dataset: Sized, num_replicas: int | None = None, rank: int | None = None) -> None:
        self.num_subjects = len(dataset)
        self.num_replicas = process_count() if num_replicas is None else int(num_replicas)
        self.rank = process_rank() if rank is None else int(rank)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is not one of the {self.num_replicas} processes' ranks")

    def indices(self) -> range:
        """This process's subjects (indices into the dataset), in split order."""
        if self.num_subjects < self.num_replicas:
            return range(self.num_subjects)
        return range(self.rank, self.num_subjects, self.num_replicas)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        return len(self.indices())
