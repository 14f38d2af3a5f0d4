"""Training and validation iteration steps that plug the networks into MONAI's ignite engines.

The bundle configs build MONAI ``SupervisedTrainer`` / ``SupervisedEvaluator`` objects and pass one of the step
objects below as ``iteration_update``: each step moves the canonical batch (see ``docs/CONTRACTS.md``) to the
engine's device, runs the network under bf16 autocast where the device supports it, and returns plain floats.

A training step returns them as MONAI's trainers do after decollation: one dict per sample of the batch, each holding
the batch's loss, so handlers written for MONAI's trainers read it as they do there, through
``from_engine(['loss'], first=True)`` (e.g. the MLflow handler that ``monai.bundle run --tracking mlflow`` adds). A
validation step returns one dict for the batch, which the evaluator's ignite metrics (``Average``) read directly.
"""

from __future__ import annotations

import abc
import logging

import torch
from ignite.engine import Engine

from scripts.labels import LA_PLANES, UNLABELLED
from scripts.losses import phenotype_loss, segmentation_loss
from scripts.metrics import dice_per_class
from scripts.precision import precision_context, seeded_rng

logger = logging.getLogger(__name__)

BATCH_TENSOR_KEYS = ("image", "plane_mask", "label", "class_mask", "phenotypes")


def batch_to_device(batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
    """Move the tensor entries of a canonical batch to ``device`` (other entries are dropped)."""
    moved = {}
    for key in BATCH_TENSOR_KEYS:
        if key in batch:
            value = torch.as_tensor(batch[key])
            moved[key] = value.to(device, non_blocking=True)
    moved["image"] = moved["image"].float()
    moved["plane_mask"] = moved["plane_mask"].bool()
    return moved


def drop_random_planes(
    image: torch.Tensor, plane_mask: torch.Tensor, max_dropped: int, probability: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Missing-plane augmentation: remove up to ``max_dropped`` present planes per sample, with ``probability``.

    Args:
        image: (B, 1, P, T, H, W).
        plane_mask: (B, P) bool.

    Returns:
        the image with removed planes zeroed and the updated plane mask; at least one plane is always kept.
    """
    image, plane_mask = image.clone(), plane_mask.clone()
    for b in range(image.shape[0]):
        if max_dropped < 1 or torch.rand(()) >= probability:
            continue
        present = torch.nonzero(plane_mask[b]).flatten()
        count = int(torch.randint(1, max_dropped + 1, ()))
        count = min(count, len(present) - 1)
        if count < 1:
            continue
        dropped = present[torch.randperm(len(present))[:count]]
        plane_mask[b, dropped] = False
        image[b, :, dropped] = 0
    return image, plane_mask


def drop_long_axis_views(
    image: torch.Tensor, plane_mask: torch.Tensor, num_la_views: int, probability: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """SA-only augmentation: remove every LA view (the last ``num_la_views`` planes) of a sample with
    ``probability``, where the sample has an SA plane to keep; many clinical studies are SA stacks only.

    Args:
        image: (B, 1, P, T, H, W).
        plane_mask: (B, P) bool.

    Returns:
        the image with removed planes zeroed and the updated plane mask.
    """
    if probability <= 0:
        return image, plane_mask
    image, plane_mask = image.clone(), plane_mask.clone()
    for b in range(image.shape[0]):
        if bool(plane_mask[b, :-num_la_views].any()) and float(torch.rand(())) < probability:
            plane_mask[b, -num_la_views:] = False
            image[b, :, -num_la_views:] = 0
    return image, plane_mask


# --- training steps -------------------------------------------------------------------------------


class _Step(abc.ABC):
    """Shared plumbing of the training steps: device, autocast, backward, gradient clipping."""

    def __init__(self, grad_clip: float = 1.0, precision: str = "auto") -> None:
        self.grad_clip = grad_clip
        self.precision = precision

    @abc.abstractmethod
    def loss(self, network: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        """The scalar training loss of ``batch`` and extra floats to report."""

    def __call__(self, engine: Engine, batchdata: dict) -> list[dict[str, float]]:
        """One optimiser step of ``engine``'s network on ``batchdata``: the loss and extras as floats, in one dict
        per sample of the batch (MONAI's decollated trainer output, the batch's values in each)."""
        device = engine.state.device
        batch = batch_to_device(batchdata, device)
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        with precision_context(device, self.precision):
            loss, extras = self.loss(engine.network, batch)
        loss.backward()
        gradient_norm = torch.nn.utils.clip_grad_norm_(
            engine.network.parameters(), self.grad_clip if self.grad_clip > 0 else float("inf")
        )
        if torch.isfinite(gradient_norm):
            engine.optimizer.step()
        else:  # one bad batch must not turn every weight into NaN
            logger.warning(f"iteration {engine.state.iteration}: non-finite gradient, update skipped")
        record = {"loss": float(loss.detach()), **extras}
        return [dict(record) for _ in range(batch["image"].shape[0])]


class MAEStep(_Step):
    """Pretraining step: masked autoencoding of all present planes (the network returns its own loss)."""

    def loss(self, network, batch):
        return network(batch["image"], batch["plane_mask"])["loss"], {}


class SegmentationStep(_Step):
    """Fine-tuning step for all-planes segmentation, with missing-plane augmentation.

    Args:
        max_dropped_planes, drop_probability: missing-plane augmentation (see :func:`drop_random_planes`).
        sa_only_probability: chance that a subject is trained on its SA planes alone (see
            :func:`drop_long_axis_views`), before the random removals.
        decoded_planes: decode only this many random present planes per step (0 = all). The encoder always sees
            every plane; the per-plane decoder's full-resolution convolutions dominate a CPU step, so decoding
            3 of 9 planes makes a step about twice as fast while every plane is still trained over the epochs.
        decoded_frames: run the decoder's full-resolution stage (and the loss) on this many random frames per step
            (0 = all). That stage works frame by frame and, with the loss, was ~60 % of a 3-plane CPU step; the
            coarser stages still see every frame (see :meth:`scripts.segmenter.CineSegmenter.forward`).
        dice_weight: weight of the soft Dice term beside cross-entropy.
        exclusion_weight: weight of the term that keeps a class out of the unlabelled rest of a plane-frame where
            it is drawn (:func:`scripts.losses.excluded_class_loss`; only partly labelled frames have such voxels).
    """

    def __init__(
        self,
        max_dropped_planes: int = 2,
        drop_probability: float = 0.5,
        decoded_planes: int = 0,
        decoded_frames: int = 0,
        dice_weight: float = 1.0,
        exclusion_weight: float = 1.0,
        sa_only_probability: float = 0.0,
        **kw,
    ):
        super().__init__(**kw)
        if decoded_planes < 0 or decoded_frames < 0:
            raise ValueError(
                f"decoded_planes and decoded_frames must be >= 0 (0 = all), got {decoded_planes} and {decoded_frames}"
            )
        self.max_dropped_planes = max_dropped_planes
        self.drop_probability = drop_probability
        self.decoded_planes = decoded_planes
        self.decoded_frames = decoded_frames
        self.dice_weight = dice_weight
        self.exclusion_weight = exclusion_weight
        self.sa_only_probability = sa_only_probability

    def loss(self, network, batch):
        image, plane_mask = drop_long_axis_views(
            batch["image"], batch["plane_mask"], len(LA_PLANES), self.sa_only_probability
        )
        image, plane_mask = drop_random_planes(image, plane_mask, self.max_dropped_planes, self.drop_probability)
        label = batch["label"].clone()
        label[~plane_mask[:, None, :, None, None, None].expand_as(label)] = UNLABELLED
        decode_planes = None
        if self.decoded_planes > 0:
            candidates = torch.nonzero(plane_mask.any(0)).flatten()
            decode_planes = candidates[torch.randperm(len(candidates), device=candidates.device)[: self.decoded_planes]]
            decode_planes = decode_planes.sort().values
            label = label[:, :, decode_planes]
        decode_frames = None
        num_frames = image.shape[3]
        if 0 < self.decoded_frames < num_frames:
            # uniform over all frames, labelled or not. With labels sparse in time (real cine contoured at ED and ES
            # only) many steps then decode no labelled frame; drawing among the labelled frames instead adapted worse
            # to held-out real studies over 3 seeds, and decoding all frames worse on the one fold tried
            # (docs/history.md, "Sparse labels in time")
            decode_frames = torch.randperm(num_frames, device=image.device)[: self.decoded_frames].sort().values
            label = label[:, :, :, decode_frames]
        logits = network(image, plane_mask, decode_planes, decode_frames, refine=False)
        return segmentation_loss(logits, label, batch["class_mask"], self.dice_weight, self.exclusion_weight), {}


class PhenotypeStep(_Step):
    """Fine-tuning step for phenotype regression on normalised targets, with missing-plane augmentation."""

    def __init__(self, max_dropped_planes: int = 2, drop_probability: float = 0.5, **kw):
        super().__init__(**kw)
        self.max_dropped_planes = max_dropped_planes
        self.drop_probability = drop_probability

    def loss(self, network, batch):
        image, plane_mask = drop_random_planes(
            batch["image"], batch["plane_mask"], self.max_dropped_planes, self.drop_probability
        )
        predicted = network.phenotype_head(network.embed(image, plane_mask))
        return phenotype_loss(predicted, batch["phenotypes"], network.phenotype_head), {}


# --- validation steps -----------------------------------------------------------------------------


class _EvalStep(abc.ABC):
    """Shared plumbing of validation steps: eval mode, no gradients, autocast, fixed random state."""

    def __init__(self, precision: str = "auto") -> None:
        self.precision = precision

    @abc.abstractmethod
    def evaluate(self, network: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """The validation measures of ``batch``, as plain floats."""

    def __call__(self, engine: Engine, batchdata: dict) -> dict[str, float]:
        """The validation measures of ``engine``'s network on ``batchdata``, seeded by the iteration."""
        device = engine.state.device
        batch = batch_to_device(batchdata, device)
        engine.network.eval()
        # the MAE masks at random: seeding by iteration makes validation losses comparable across epochs
        with torch.no_grad(), seeded_rng(engine.state.iteration, device), precision_context(device, self.precision):
            return self.evaluate(engine.network, batch)


class MAEValidationStep(_EvalStep):
    """Validation of pretraining: the masked reconstruction loss (lower is better)."""

    def evaluate(self, network, batch):
        return {"loss": float(network(batch["image"], batch["plane_mask"])["loss"])}


class SegmentationValidationStep(_EvalStep):
    """Validation of segmentation: mean Dice over annotated foreground classes present in the subject."""

    def evaluate(self, network, batch):
        logits = network(batch["image"], batch["plane_mask"])
        predicted = logits.argmax(1)
        scores = [
            dice_per_class(predicted[b], batch["label"][b, 0], batch["class_mask"][b]) for b in range(len(logits))
        ]
        scores = torch.stack(scores)
        return {"dice": float(scores.nanmean()) if bool(torch.isfinite(scores).any()) else 0.0}


class PhenotypeValidationStep(_EvalStep):
    """Validation of phenotype regression: mean absolute error in normalised units (lower is better)."""

    def evaluate(self, network, batch):
        head = network.phenotype_head
        predicted = head(network.embed(batch["image"], batch["plane_mask"])).float()
        target = (batch["phenotypes"].float() - head.target_mean) / head.target_std
        known = torch.isfinite(target)
        error = (predicted - target).abs()[known]
        return {"mae": float(error.mean()) if error.numel() else 0.0}
