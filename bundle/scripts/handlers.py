"""Ignite handlers and comparisons the training configs add: the latest-epoch checkpoint with resume, the best
model's record and the random state inside it, the best model's saver, and which way the validation metric improves.

The latest checkpoint is ignite's ``Checkpoint`` rather than MONAI's ``CheckpointSaver``: MONAI's takes what it saves
at construction, and the trainer (whose state is saved for resume) cannot be named in its own handler list in a
config (a circular reference); resume also has to take over the file it resumed from, which needs ignite's saver.

Both write through :class:`DurableDiskSaver`: a hidden temporary file beside the checkpoint, flushed to the disk and
renamed into place, and the file it succeeds removed only then. A run killed at any moment leaves the previous
checkpoint or the new one, never none or a truncated one; its temporary file is removed when the next run starts.
"""

from __future__ import annotations

import glob
import logging
import os
import random
from pathlib import Path
from typing import Any, Callable, Mapping

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver
from monai.engines.utils import default_metric_cmp_fn
from monai.handlers import CheckpointSaver

from scripts.files import atomic_path, remove_partial_files
from scripts.flags import as_flag
from scripts.weights import UnreadableCheckpointError, load_checkpoint

logger = logging.getLogger(__name__)


def lower_is_better(current: float, previous: float) -> bool:
    """Metric comparison for losses and errors (MONAI's default treats higher as better)."""
    return previous < 0 or current < previous


def metric_comparison(lower_metric_is_better: bool) -> Callable[[float, float], bool]:
    """The evaluator's ``metric_cmp_fn`` for a key metric that is an error (lower is better) or a score."""
    return lower_is_better if lower_metric_is_better else default_metric_cmp_fn


class BestModelRecord:
    """Which validation score the best model (``model.pt``) has, as a checkpointable object.

    A resumed training must not count its first validation as a new best and overwrite ``model.pt``: this keeps the
    best-model saver's record and the validator's best metric in ``checkpoint_epoch=N.pt`` beside the network.
    MONAI's ``CheckpointSaver`` can load that record but offers no way to read it, hence the private attribute.
    """

    def __init__(self, saver: CheckpointSaver, validator: Engine) -> None:
        self.saver, self.validator = saver, validator

    def state_dict(self) -> dict:
        record = self.saver._key_metric_checkpoint
        return {
            "saved": [[item.priority, item.filename] for item in (record._saved if record is not None else [])],
            "best_metric": float(self.validator.state.best_metric),
            "best_metric_epoch": int(self.validator.state.best_metric_epoch),
        }

    def load_state_dict(self, state: dict) -> None:
        self.saver.load_state_dict({"_saved": [tuple(item) for item in state["saved"]]})
        self.validator.state.best_metric = state["best_metric"]
        self.validator.state.best_metric_epoch = state["best_metric_epoch"]


class DurableDiskSaver(DiskSaver):
    """ignite's ``DiskSaver`` that survives a kill at any moment: each checkpoint is written atomically and flushed
    to the disk (:func:`scripts.files.atomic_path`), and the one it succeeds is removed only after it is in place
    (ignite removes it first). With ``filename`` every checkpoint is written under that one name (``model.pt``).
    The temporary files of a run killed mid-write are removed when the saver is built (before training starts)."""

    def __init__(self, dirname: str | os.PathLike, filename: str | None = None) -> None:
        super().__init__(dirname, require_empty=False)
        self.filename = filename
        self.superseded: list[str] = []
        if idist.get_rank() == self.save_on_rank:
            for path in remove_partial_files(self.dirname):
                logger.info(f"removed {path}, the unfinished checkpoint of a run stopped while writing it")

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        super().__call__(checkpoint, self.filename or filename, metadata)

    def _save_func(self, checkpoint: Mapping, path: Path, func: Callable) -> None:
        # written through a file object: torch names the archive inside after a path, which would be the random one
        with atomic_path(path, durable=True) as temp_path, open(temp_path, "wb") as file:
            func(checkpoint, file, **self.kwargs)
        for name in self.superseded:
            if name != path.name:
                (self.dirname / name).unlink(missing_ok=True)
        self.superseded = []

    def remove(self, filename: str) -> None:
        """Mark ``filename`` for removal once its successor, which ignite saves right after this call, is written."""
        if idist.get_rank() == self.save_on_rank:
            self.superseded.append(self.filename or filename)


class DurableCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` (same arguments) writing through :class:`DurableDiskSaver`: the best model's
    ``model.pt`` is replaced in one step, never deleted first nor left half-written by a kill (a fine-tuning that
    starts from it would otherwise find it empty)."""

    def __init__(self, save_dir: str, save_dict: dict, **kwargs: Any) -> None:
        super().__init__(save_dir, save_dict, **kwargs)
        for checkpoint, filename in (
            (self._final_checkpoint, self._final_filename),
            (self._key_metric_checkpoint, kwargs.get("key_metric_filename")),
            (self._interval_checkpoint, None),
        ):
            if checkpoint is not None:
                checkpoint.save_handler = DurableDiskSaver(save_dir, filename)


def random_generators(root: Any) -> list[np.random.RandomState | torch.Generator]:
    """The generators of their own reachable from ``root`` (a data loader: the ``numpy.random.RandomState`` that
    each of its dataset's MONAI random transforms draws from, its sampler's or its own ``torch.Generator``), in an
    order that is the same for the same config. Tensors and arrays are not searched."""
    found: list[np.random.RandomState | torch.Generator] = []
    seen: set[int] = set()

    def visit(value: Any) -> None:
        if id(value) in seen or isinstance(value, (torch.Tensor, np.ndarray)):
            return
        seen.add(id(value))
        if isinstance(value, (np.random.RandomState, torch.Generator)):
            found.append(value)
            return
        if isinstance(value, dict):
            children = list(value.values())
        elif isinstance(value, (list, tuple)):
            children = list(value)
        else:
            children = list(getattr(value, "__dict__", {}).values())
        for child in children:
            visit(child)

    visit(root)
    return found


def _numpy_state(state: tuple) -> dict[str, Any]:
    """A numpy Mersenne-Twister state (``get_state()``'s tuple) as tensors and numbers, which ``weights_only``
    loading reads (it refuses numpy arrays)."""
    _, keys, position, has_gauss, cached_gaussian = state
    return {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": position, "has_gauss": has_gauss,
            "cached_gaussian": cached_gaussian}  # fmt: skip


def _numpy_tuple(state: Mapping[str, Any]) -> tuple:
    """The ``set_state()`` tuple of a state :func:`_numpy_state` wrote."""
    keys = state["keys"].cpu().numpy().astype(np.uint32)
    return "MT19937", keys, state["pos"], state["has_gauss"], state["cached_gaussian"]


class RandomStates:
    """The random streams a training draws from, as a checkpointable object, so that a resumed run draws what an
    uninterrupted one would (the data order, the augmentations, the steps' random plane and frame choices): torch's
    CPU generator, every CUDA device's once CUDA is in use, numpy's and Python's global ones, and the generators of
    :func:`random_generators` of ``root`` (the trainer's data loader)."""

    def __init__(self, root: Any = None) -> None:
        self.root = root

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss_next = random.getstate()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": _numpy_state(np.random.get_state()),
            "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss_next},
            "generators": [
                {"torch": g.get_state()} if isinstance(g, torch.Generator) else {"numpy": _numpy_state(g.get_state())}
                for g in random_generators(self.root)
            ],
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        torch.set_rng_state(state["torch"].cpu())
        np.random.set_state(_numpy_tuple(state["numpy"]))
        python = state["python"]
        random.setstate((python["version"], tuple(python["internal"].tolist()), python["gauss"]))
        if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
        generators = random_generators(self.root)
        if len(generators) != len(state["generators"]):
            logger.warning(
                f"the checkpoint holds {len(state['generators'])} data generators' states and this run's data "
                f"loader has {len(generators)} (another config?): its random transforms start afresh"
            )
            return
        for generator, saved in zip(generators, state["generators"]):
            if isinstance(generator, torch.Generator):
                generator.set_state(saved["torch"].cpu())
            else:
                generator.set_state(_numpy_tuple(saved["numpy"]))


def epoch_of(path: str) -> int:
    """N of a ``checkpoint_epoch=N.pt`` path."""
    return int(path.rsplit("=", 1)[1].split(".")[0])


def newest_readable_checkpoint(ckpt_dir: str, map_location: str | torch.device = "cpu") -> tuple[str, dict] | None:
    """The newest ``checkpoint_epoch=N.pt`` of ``ckpt_dir`` that can be read, with what it holds; None when there is
    none. Newer unreadable ones (truncated or corrupt) are passed over with a warning.

    Raises:
        UnreadableCheckpointError: there are checkpoints but none can be read (names them and what to do).
    """
    candidates = sorted(glob.glob(os.path.join(ckpt_dir, "checkpoint_epoch=*.pt")), key=epoch_of, reverse=True)
    unreadable = []
    for path in candidates:
        try:
            checkpoint = load_checkpoint(path, map_location)
        except UnreadableCheckpointError as err:
            logger.warning(str(err))
            unreadable.append(path)
            continue
        if unreadable:
            logger.warning(f"resuming from {path}, the newest readable checkpoint; unreadable: {', '.join(unreadable)}")
        return path, checkpoint
    if unreadable:
        raise UnreadableCheckpointError(
            f"cannot resume: {', '.join(unreadable)} cannot be read (truncated or corrupt, e.g. written by a run that "
            f"was stopped mid-write) and {ckpt_dir} holds no older checkpoint_epoch=N.pt. Delete it, or put a good "
            "copy of an earlier checkpoint_epoch=N.pt beside it to resume from that epoch; with none, --resume true "
            "starts at epoch 1"
        )
    return None


class LatestCheckpoint:
    """Ignite handler: keep ``checkpoint_epoch=N.pt`` (network, optimiser, scheduler and trainer state, the random
    state, and the best model's record when ``best_model_saver`` and ``validator`` are given) of the last epoch in
    ``ckpt_dir`` and, when ``resume`` is set, continue from the newest readable one at start: the resumed run then
    trains as the uninterrupted run would.

    The trainer is added at ``attach`` time, which lets a config list this handler among the trainer's own handlers
    (a config reference from a handler to its trainer would be circular).
    """

    def __init__(
        self,
        ckpt_dir: str,
        objects: dict,
        resume: bool = False,
        best_model_saver: CheckpointSaver | None = None,
        validator: Engine | None = None,
    ) -> None:
        self.ckpt_dir = ckpt_dir
        self.objects = dict(objects)
        if best_model_saver is not None and validator is not None:
            self.objects["best_model"] = BestModelRecord(best_model_saver, validator)
        self.resume = as_flag(resume, "resume")

    def attach(self, engine: Engine) -> None:
        """Save at every epoch's end and, with ``resume``, load the newest checkpoint when ``engine`` starts."""
        objects = {**self.objects, "rng": RandomStates(getattr(engine, "data_loader", None)), "trainer": engine}
        saver = Checkpoint(
            objects,
            DurableDiskSaver(self.ckpt_dir),
            n_saved=1,
            filename_pattern="checkpoint_epoch={global_step}.{ext}",
            global_step_transform=lambda e, _: e.state.epoch,
        )
        engine.add_event_handler(Events.STARTED, self.started, objects, saver)

    def started(self, engine: Engine, objects: dict, saver: Checkpoint) -> None:
        """Resume (with ``resume``), then register the save at every epoch's end. Registered now, after every
        handler the config attached, the save follows the epoch's validation: the checkpoint holds that epoch's
        best-model record and the random state the validation leaves (its data loader draws a seed)."""
        if self.resume:
            self.load_latest(engine, objects, saver)
        if not engine.has_event_handler(saver, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, saver)

    def load_latest(self, engine: Engine, objects: dict, saver: Checkpoint) -> None:
        """Load the newest readable checkpoint into ``objects`` and hand its file to ``saver``; this run's length
        (its ``max_epochs`` and the scheduler's schedule) is kept, so a resume can also extend a finished run."""
        # MONAI's engines carry their device; a plain ignite engine's objects are loaded from the CPU
        found = newest_readable_checkpoint(self.ckpt_dir, getattr(engine.state, "device", "cpu"))
        if found is None:
            logger.info(f"resume requested but no checkpoint in {self.ckpt_dir}: starting at epoch 1")
            return
        latest, checkpoint = found
        optional = {
            "best_model": "the first validation will replace model.pt",
            "rng": "the resumed run draws other random numbers than an uninterrupted one would",
        }
        for key, consequence in optional.items():
            if key in objects and key not in checkpoint:
                logger.warning(f"{latest} has no {key} record: {consequence}")
        objects = {k: v for k, v in objects.items() if k in checkpoint or k not in optional}
        random_states = objects.pop("rng", None)
        # the saved trainer and schedule carry the old run's length: keep this run's, so --max_epochs can extend it
        max_epochs = engine.state.max_epochs
        scheduler = objects.get("lr_scheduler")
        schedule = {k: getattr(scheduler, k) for k in ("t_total", "warmup_steps") if hasattr(scheduler, k)}
        Checkpoint.load_objects(to_load=objects, checkpoint=checkpoint)
        # the saver takes over the file it resumed from, so the next epoch's checkpoint replaces it; any other (an
        # older one that a kill between writing and removing kept, newer unreadable ones) goes once that is written
        saver.load_state_dict({"_saved": [(engine.state.epoch, os.path.basename(latest))]})
        for path in glob.glob(os.path.join(self.ckpt_dir, "checkpoint_epoch=*.pt")):
            if path != latest:
                saver.save_handler.remove(os.path.basename(path))
        engine.state.max_epochs = max_epochs
        for key, value in schedule.items():
            setattr(scheduler, key, value)
        if random_states is not None:
            # set when the next epoch starts: what runs at start (a validation) would draw from the restored streams,
            # which the uninterrupted run did not do between that epoch's end and the next one's start
            engine.add_event_handler(
                Events.EPOCH_STARTED(once=engine.state.epoch + 1), random_states.load_state_dict, checkpoint["rng"]
            )
        logger.info(f"resumed from {latest} at epoch {engine.state.epoch} of {max_epochs}")
