"""TensorBoard handlers the training configs add beside MONAI's scalar ones: the learning rate, and images of one
validation subject (the MAE's input, masked input and reconstruction; the segmentation's true and predicted contours).

They write through the run's one ``SummaryWriter`` (``train.yaml``'s ``summary_writer``), which MONAI's
``TensorBoardStatsHandler`` objects share, so a run leaves one event file in ``log_dir``. Multi-GPU runs attach the
loggers on rank 0 only (``multi_gpu_train.yaml``); the image handlers also check the rank themselves.

The images show a few frames of one plane of the first validation subject, at each validation: one forward pass over
a subject the validation has already loaded, under a fixed seed that leaves the training's random streams as they were.
"""

from __future__ import annotations

import abc
import math
from typing import Any

import ignite.distributed as idist
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from torch.utils.tensorboard import SummaryWriter

from scripts.flags import as_flag
from scripts.labels import NUM_CLASSES
from scripts.precision import precision_context, seeded_rng
from scripts.steps import batch_to_device
from scripts.tokens import patchify, unpatchify
from scripts.weights import unwrap_network

#: RGB in [0, 1] of each foreground class's contour (LVBP, LVMYO, RVBP, LABP, RABP); background has none.
CLASS_COLOURS = torch.tensor([[1.0, 0.2, 0.2], [0.2, 1.0, 0.2], [0.3, 0.5, 1.0], [1.0, 1.0, 0.2], [1.0, 0.3, 1.0]])


class LearningRateLogger:
    """Ignite handler: the optimiser's learning rate in TensorBoard at every iteration, the rate that iteration's step
    uses (read when it starts, before the per-iteration schedule moves it on).

    The tag is ``learning_rate`` for an optimiser with one parameter group, else ``learning_rate/group_<i>`` per group
    in the optimiser's order (:func:`scripts.optim.trainable_parameters`: the encoder's groups, then the heads').

    Args:
        summary_writer: the run's TensorBoard writer.
        tag: the scalar's tag (prefix with several groups).
    """

    def __init__(self, summary_writer: SummaryWriter, tag: str = "learning_rate") -> None:
        self.summary_writer = summary_writer
        self.tag = tag

    def attach(self, engine: Engine) -> None:
        """Log at the start of each iteration of ``engine`` (a MONAI trainer, which carries its ``optimizer``)."""
        engine.add_event_handler(Events.ITERATION_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        groups = engine.optimizer.param_groups
        for index, group in enumerate(groups):
            tag = self.tag if len(groups) == 1 else f"{self.tag}/group_{index}"
            self.summary_writer.add_scalar(tag, float(group["lr"]), engine.state.iteration)


def spread_frames(num_frames: int, count: int) -> torch.Tensor:
    """``count`` frame indices evenly spread over ``num_frames`` (first and last included), ascending, no repeats."""
    return torch.linspace(0, num_frames - 1, max(1, min(count, num_frames))).round().long().unique()


def shown_plane(plane_mask: torch.Tensor, preferred: int) -> int:
    """``preferred`` where the subject has that plane (``plane_mask`` (P,) bool), else its first present plane."""
    if 0 <= preferred < len(plane_mask) and bool(plane_mask[preferred]):
        return preferred
    present = torch.nonzero(plane_mask).flatten()
    return int(present[0]) if len(present) else 0


def display_range(image: torch.Tensor) -> tuple[float, float]:
    """The 1st and 99th intensity percentiles of ``image``: the grey scale of a grid, robust to a few bright pixels."""
    values = image.float().flatten()
    low, high = torch.quantile(values, torch.tensor([0.01, 0.99], dtype=values.dtype)).tolist()
    return low, (high if high > low else low + 1.0)


def to_grey_rgb(image: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """(..., H, W) intensities as (..., 3, H, W) grey RGB in [0, 1], ``low`` black and ``high`` white."""
    grey = ((image.float() - low) / (high - low)).clamp(0.0, 1.0)
    return grey.unsqueeze(-3).expand(*grey.shape[:-2], 3, *grey.shape[-2:])


def tile(rows: torch.Tensor) -> torch.Tensor:
    """(R, C, 3, H, W) panels as one (3, R * H, C * W) grid image: row r, column c at panel ``rows[r, c]``."""
    num_rows, num_columns, channels, height, width = rows.shape
    return rows.permute(2, 0, 3, 1, 4).reshape(channels, num_rows * height, num_columns * width)


def class_boundaries(label: torch.Tensor, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """Where each foreground class meets another value, inside the class (a 1-pixel contour).

    Args:
        label: (F, H, W) class indices; other values (the unlabelled mark) belong to no class.

    Returns:
        (F, num_classes - 1, H, W) bool, channel k the contour of class k + 1. The image border is no contour.
    """
    classes = torch.arange(1, num_classes, device=label.device)
    inside = (label[:, None] == classes[None, :, None, None]).float()
    # a pixel of the class with a pixel outside it among its 8 neighbours; the border replicated, so it adds none
    outside_nearby = F.max_pool2d(F.pad(1.0 - inside, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return (inside > 0) & (outside_nearby > 0)


def draw_contours(panels: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """``panels`` (F, 3, H, W) RGB with the contours of ``label`` (F, H, W) drawn in :data:`CLASS_COLOURS`."""
    drawn = panels.clone()
    contours = class_boundaries(label)
    for index in range(contours.shape[1]):
        colour = CLASS_COLOURS[index].to(drawn)[None, :, None, None]
        drawn = torch.where(contours[:, index, None], colour, drawn)
    return drawn


class _ValidationImages(abc.ABC):
    """Shared plumbing of the image handlers: keep the first validation subject, render it once the validation ends.

    Args:
        summary_writer: the run's TensorBoard writer.
        tag: the image's tag.
        plane: the plane shown (index in the canonical plane order), or the subject's first plane where it lacks it.
        num_frames: frames shown, evenly spread over the cycle.
        precision: autocast of the forward pass, as the steps' (``auto`` or ``fp32``).
        enabled: off: nothing attached (``--tensorboard_images false``).
    """

    def __init__(
        self,
        summary_writer: SummaryWriter,
        tag: str,
        plane: int = 0,
        num_frames: int = 4,
        precision: str = "auto",
        enabled: bool | str = True,
    ) -> None:
        self.summary_writer = summary_writer
        self.tag = tag
        self.plane = int(plane)
        self.num_frames = int(num_frames)
        self.precision = precision
        self.enabled = as_flag(enabled, "tensorboard_images")
        self.subject: dict | None = None

    def attach(self, engine: Engine) -> None:
        """Keep the first batch of each run of ``engine`` (an evaluator) and write its image when the run ends."""
        if not self.enabled:
            return
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.keep_first_batch)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.write)

    def keep_first_batch(self, engine: Engine) -> None:
        """Hold the batch of the evaluator's first iteration (the same subject at every validation: no shuffling)."""
        if engine.state.iteration == 1:
            self.subject = engine.state.batch

    def write(self, engine: Engine) -> None:
        """Render the kept subject with ``engine``'s network and write it at the trainer's epoch (rank 0)."""
        subject, self.subject = self.subject, None
        if subject is None or idist.get_rank() != 0:
            return
        device = engine.state.device
        batch = batch_to_device(subject, device)
        network = unwrap_network(engine.network)
        plane = shown_plane(batch["plane_mask"][0].cpu(), self.plane)
        frames = spread_frames(batch["image"].shape[3], self.num_frames)
        # the evaluator leaves the network in eval mode; a fixed seed shows the same MAE mask at every validation
        with torch.no_grad(), seeded_rng(0, device), precision_context(device, self.precision):
            grid = self.render(network, batch, plane, frames.to(device))
        self.summary_writer.add_image(self.tag, grid.float().cpu(), engine.state.epoch, dataformats="CHW")
        self.summary_writer.flush()

    @abc.abstractmethod
    def render(
        self, network: torch.nn.Module, batch: dict[str, torch.Tensor], plane: int, frames: torch.Tensor
    ) -> torch.Tensor:
        """The (3, rows * H, len(frames) * W) RGB grid in [0, 1] of ``plane`` at ``frames`` of the first sample of
        ``batch`` (the canonical batch on the engine's device), by ``network`` (unwrapped, in eval mode)."""


class MAEReconstructionImages(_ValidationImages):
    """Pretraining's images: rows input, masked input (hidden patches black), reconstruction (the network's prediction
    in the hidden patches, the input in the visible ones), one column per frame, on one grey scale.

    Args: see :class:`_ValidationImages`; ``tag`` defaults to ``images/reconstruction``.
    """

    def __init__(self, summary_writer: SummaryWriter, tag: str = "images/reconstruction", **kwargs: Any) -> None:
        super().__init__(summary_writer, tag, **kwargs)

    def render(self, network, batch, plane, frames):
        image, plane_mask = batch["image"][:1], batch["plane_mask"][:1]
        output = network(image, plane_mask)
        patch_size = network.encoder.patch_size
        grid = network.encoder.token_grid(image.shape[3:])
        num_planes = image.shape[2]
        prediction = output["pred"].float()
        if network.norm_pix_loss:
            # the prediction is per patch normalised (MAE's norm_pix_loss): back to intensities with the input's stats
            target = patchify(image, patch_size)
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            prediction = prediction * (var + 1.0e-6).sqrt() + mean
        reconstruction = unpatchify(prediction, num_planes, grid, patch_size)
        hidden = output["mask"].float()[..., None].expand(-1, -1, math.prod(patch_size))
        hidden = unpatchify(hidden, num_planes, grid, patch_size)
        shown = image[0, 0, plane, frames]
        hidden_shown = hidden[0, 0, plane, frames]
        masked = shown * (1.0 - hidden_shown)
        filled = torch.where(hidden_shown > 0, reconstruction[0, 0, plane, frames], shown)
        low, high = display_range(shown)
        return tile(to_grey_rgb(torch.stack([shown, masked, filled]), low, high))


class SegmentationContourImages(_ValidationImages):
    """Segmentation validation's images: rows the image with the true contours and with the predicted ones, one
    column per frame, each class in its colour (:data:`CLASS_COLOURS`). Only the shown plane and frames are decoded.

    Args: see :class:`_ValidationImages`; ``tag`` defaults to ``images/segmentation``.
    """

    def __init__(self, summary_writer: SummaryWriter, tag: str = "images/segmentation", **kwargs: Any) -> None:
        super().__init__(summary_writer, tag, **kwargs)

    def render(self, network, batch, plane, frames):
        image, plane_mask = batch["image"][:1], batch["plane_mask"][:1]
        logits = network(image, plane_mask, torch.tensor([plane], device=image.device), frames)
        predicted = logits[0].argmax(0)[0]
        truth = batch["label"][0, 0, plane, frames]
        shown = image[0, 0, plane, frames]
        panels = to_grey_rgb(shown, *display_range(shown))
        return tile(torch.stack([draw_contours(panels, truth), draw_contours(panels, predicted)]))
