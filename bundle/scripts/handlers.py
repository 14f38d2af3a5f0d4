"""Ignite handlers and comparisons the training configs add: the latest-epoch checkpoint with resume, the best
model's record inside it, and which way the validation metric improves.

The latest checkpoint is ignite's ``Checkpoint`` rather than MONAI's ``CheckpointSaver``: MONAI's takes what it saves
at construction, and the trainer (whose state is saved for resume) cannot be named in its own handler list in a
config (a circular reference); resume also has to take over the file it resumed from, which needs ignite's saver.
"""

from __future__ import annotations

import glob
import logging
import os
from typing import Callable

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver
from monai.engines.utils import default_metric_cmp_fn
from monai.handlers import CheckpointSaver

from scripts.flags import as_flag

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


def newest_epoch_checkpoint(ckpt_dir: str) -> str | None:
    """The ``checkpoint_epoch=N.pt`` of ``ckpt_dir`` with the largest epoch N; None when there is none."""
    candidates = glob.glob(os.path.join(ckpt_dir, "checkpoint_epoch=*.pt"))
    return max(candidates, key=lambda p: int(p.rsplit("=", 1)[1].split(".")[0])) if candidates else None


class LatestCheckpoint:
    """Ignite handler: keep ``checkpoint_epoch=N.pt`` (network, optimiser, scheduler and trainer state, and the
    best model's record when ``best_model_saver`` and ``validator`` are given) of the last epoch in ``ckpt_dir`` and,
    when ``resume`` is set, continue from the newest one at start.

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
        objects = {**self.objects, "trainer": engine}
        saver = Checkpoint(
            objects,
            DiskSaver(self.ckpt_dir, require_empty=False, atomic=True),
            n_saved=1,
            filename_pattern="checkpoint_epoch={global_step}.{ext}",
            global_step_transform=lambda e, _: e.state.epoch,
        )
        engine.add_event_handler(Events.EPOCH_COMPLETED, saver)
        if self.resume:
            engine.add_event_handler(Events.STARTED, self.load_latest, objects, saver)

    def load_latest(self, engine: Engine, objects: dict, saver: Checkpoint) -> None:
        """Load the newest checkpoint into ``objects`` and hand its file to ``saver``; this run's length (its
        ``max_epochs`` and the scheduler's schedule) is kept, so a resume can also extend a finished run."""
        latest = newest_epoch_checkpoint(self.ckpt_dir)
        if latest is None:
            logger.info(f"resume requested but no checkpoint in {self.ckpt_dir}: starting at epoch 1")
            return
        checkpoint = torch.load(latest, map_location=engine.state.device, weights_only=True)
        if "best_model" in objects and "best_model" not in checkpoint:
            objects = {k: v for k, v in objects.items() if k != "best_model"}
            logger.warning(f"{latest} has no best-model record: the first validation will replace model.pt")
        # the saved trainer and schedule carry the old run's length: keep this run's, so --max_epochs can extend it
        max_epochs = engine.state.max_epochs
        scheduler = objects.get("lr_scheduler")
        schedule = {k: getattr(scheduler, k) for k in ("t_total", "warmup_steps") if hasattr(scheduler, k)}
        Checkpoint.load_objects(to_load=objects, checkpoint=checkpoint)
        # the saver takes over the file it resumed from, so the next epoch's checkpoint replaces it
        saver.load_state_dict({"_saved": [(engine.state.epoch, os.path.basename(latest))]})
        engine.state.max_epochs = max_epochs
        for key, value in schedule.items():
            setattr(scheduler, key, value)
        logger.info(f"resumed from {latest} at epoch {engine.state.epoch} of {max_epochs}")
