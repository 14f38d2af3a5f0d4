"""Iteration steps, losses and small handlers that plug the networks into MONAI's ignite engines.

The bundle configs build MONAI ``SupervisedTrainer`` / ``SupervisedEvaluator`` objects and pass one of the step
objects below as ``iteration_update``: each step moves the canonical batch (see ``docs/CONTRACTS.md``) to the
engine's device, runs the network under bf16 autocast where the device supports it, and returns a dict of plain
floats, so ignite metrics (``Average``) and MONAI's Stats/TensorBoard handlers read them without decollation.
"""

from __future__ import annotations

import abc
import contextlib
import glob
import logging
import os
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver
from monai.engines.utils import default_metric_cmp_fn
from monai.handlers import CheckpointSaver

from scripts.flags import as_flag
from scripts.labels import NUM_CLASSES, PHENOTYPE_NAMES, UNLABELLED
from scripts.net import autocast_context

logger = logging.getLogger(__name__)

BATCH_TENSOR_KEYS = ("image", "plane_mask", "label", "class_mask", "phenotypes")


def precision_context(device: torch.device | str, precision: str = "auto") -> contextlib.AbstractContextManager:
    """``"auto"``: bf16 autocast where the device computes bf16 natively, fp32 elsewhere; ``"fp32"``: always fp32."""
    if precision not in ("auto", "fp32"):
        raise ValueError(f"precision must be 'auto' or 'fp32', got {precision!r}")
    return autocast_context(device) if precision == "auto" else contextlib.nullcontext()


@contextlib.contextmanager
def seeded_rng(seed: int, device: torch.device | str) -> Iterator[None]:
    """Run a block with torch's random generators seeded by ``seed`` and restore them afterwards: the CPU's and, on
    CUDA, the device's, which ``torch.manual_seed`` reseeds too. Seeded validation then leaves the training's random
    streams (on CUDA the MAE's masks) where they were, rather than restarting them at the same seed every epoch."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


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


# --- losses ---------------------------------------------------------------------------------------


def partial_label_log_probs(logits: torch.Tensor, class_mask: torch.Tensor) -> torch.Tensor:
    """Log-probabilities where classes that a subject does not annotate are merged into background.

    A subject annotated only for LV (e.g. Sunnybrook) calls its RV "background"; summing the probabilities of
    the unannotated classes into background (marginal likelihood) stops that from teaching the network that the
    RV is background.

    Args:
        logits: (B, C, ...) raw scores.
        class_mask: (B, C) bool, True for annotated classes (background always counts as annotated).

    Returns:
        (B, C, ...) log-probabilities; unannotated channels are -inf-like and background holds their mass.
    """
    log_probs = F.log_softmax(logits.float(), dim=1)
    annotated = class_mask.clone().bool()
    annotated[:, 0] = True
    if bool(annotated.all()):
        return log_probs
    view = (annotated.shape[0], annotated.shape[1]) + (1,) * (logits.ndim - 2)
    masked = log_probs.masked_fill(~annotated.view(view), float("-inf"))
    unannotated_mass = log_probs.masked_fill(annotated.view(view), float("-inf")).logsumexp(dim=1)
    background = torch.logaddexp(log_probs[:, 0], unannotated_mass)
    return torch.cat([background.unsqueeze(1), masked[:, 1:]], dim=1).clamp_min(-1e4)


def segmentation_loss(
    logits: torch.Tensor, label: torch.Tensor, class_mask: torch.Tensor, dice_weight: float = 1.0
) -> torch.Tensor:
    """Cross-entropy + soft Dice over annotated voxels and classes (a plane or class without labels adds no loss).

    The Dice term is taken per subject, plane and class (over the plane's frames) and averaged over the pairs whose
    labels show the class: a structure that is small in one view (the RA in 4ch, the RV in 2ch) then weighs as much
    as the same structure in a view where it is large, instead of vanishing in a whole-subject overlap.

    Args:
        logits: (B, C, P, T, H, W).
        label: (B, 1, P, T, H, W) uint8, :data:`UNLABELLED` where not annotated (incl. missing planes).
        class_mask: (B, C) bool, classes annotated per subject.
    """
    target = label[:, 0].long()
    valid = target != UNLABELLED
    if not bool(valid.any()):
        return logits.sum() * 0.0
    log_probs = partial_label_log_probs(logits, class_mask)
    cross_entropy = F.nll_loss(log_probs, target, ignore_index=UNLABELLED)
    if dice_weight == 0:
        return cross_entropy
    # soft Dice per (subject, plane, class) without a one-hot tensor: the overlap is the probability of the true
    # class, summed per bin with scatter_add (full-size one-hot tensors cost more than the network's head)
    batch, num_classes, num_planes = logits.shape[:3]
    probs = log_probs.exp()
    safe_target = target.masked_fill(~valid, 0)
    true_class_prob = probs.gather(1, safe_target.unsqueeze(1)).squeeze(1) * valid
    plane_index = torch.arange(batch * num_planes, device=logits.device).view(batch, num_planes, 1, 1, 1)
    bins = plane_index * num_classes + safe_target
    num_bins = batch * num_planes * num_classes
    intersection = torch.zeros(num_bins, device=logits.device).scatter_add(0, bins.flatten(), true_class_prob.flatten())
    label_volume = torch.zeros(num_bins, device=logits.device).scatter_add(0, bins.flatten(), valid.flatten().float())
    intersection = intersection.view(batch, num_planes, num_classes)
    label_volume = label_volume.view(batch, num_planes, num_classes)
    # (B, C, P, T, H, W) -> (B, P, C)
    predicted_volume = (probs * valid.unsqueeze(1)).flatten(3).sum(-1).transpose(1, 2)
    dice = (2 * intersection + 1.0) / (predicted_volume + label_volume + 1.0)
    # the pairs whose labels show an annotated foreground class; false positives elsewhere are the cross-entropy's
    shown = (label_volume > 0) & class_mask.bool()[:, None, :]
    shown[..., 0] = False
    dice_loss = (1 - dice)[shown].mean() if bool(shown.any()) else dice.sum() * 0.0
    return cross_entropy + dice_weight * dice_loss


def phenotype_loss(predicted_normalised: torch.Tensor, phenotypes: torch.Tensor, head: torch.nn.Module) -> torch.Tensor:
    """Mean squared error on normalised targets, ignoring unknown (NaN) phenotypes.

    Args:
        predicted_normalised: (B, K) head output in normalised units.
        phenotypes: (B, K) targets in physical units, NaN where unknown.
        head: the phenotype head, holding ``target_mean`` and ``target_std`` buffers (K,).
    """
    target = (phenotypes.float() - head.target_mean) / head.target_std
    known = torch.isfinite(target)
    if not bool(known.any()):
        return predicted_normalised.sum() * 0.0
    return F.mse_loss(predicted_normalised.float()[known], target[known])


def dice_per_class(
    predicted: torch.Tensor, label: torch.Tensor, class_mask: torch.Tensor, ignore_empty: bool = False
) -> torch.Tensor:
    """Hard Dice per foreground class over annotated voxels; NaN where a class is absent from both or unannotated.

    Args:
        predicted: (..., ) integer class map.
        label: same shape, :data:`UNLABELLED` where not annotated.
        class_mask: (C,) bool.
        ignore_empty: NaN also where the label has no voxel of the class, whatever the prediction (as MONAI's
            ``DiceMetric(ignore_empty=True)``): without a reference structure there is no overlap to score, and a
            few spurious voxels would otherwise count as Dice 0. :func:`spurious_voxels` counts those instead.

    Returns:
        (C - 1,) float tensor for classes 1..C-1.
    """
    valid = label != UNLABELLED
    scores = torch.full((NUM_CLASSES - 1,), float("nan"))
    for c in range(1, NUM_CLASSES):
        if not bool(class_mask[c]):
            continue
        pred_c = (predicted == c) & valid
        true_c = (label == c) & valid
        if ignore_empty and not bool(true_c.any()):
            continue
        denominator = pred_c.sum() + true_c.sum()
        if denominator > 0:
            scores[c - 1] = float(2 * (pred_c & true_c).sum()) / float(denominator)
    return scores


def spurious_voxels(predicted: torch.Tensor, label: torch.Tensor, class_mask: torch.Tensor) -> torch.Tensor:
    """Voxels predicted as each foreground class where the annotated label has none of it (e.g. an RA painted into
    a 2-chamber view); NaN where the label shows the class or does not annotate it.

    Args: as :func:`dice_per_class`. Returns: (C - 1,) float tensor for classes 1..C-1.
    """
    valid = label != UNLABELLED
    counts = torch.full((NUM_CLASSES - 1,), float("nan"))
    for c in range(1, NUM_CLASSES):
        if bool(class_mask[c]) and not bool(((label == c) & valid).any()):
            counts[c - 1] = float(((predicted == c) & valid).sum())
    return counts


# --- iteration steps ------------------------------------------------------------------------------


class _Step(abc.ABC):
    """Shared plumbing of the training steps: device, autocast, backward, gradient clipping."""

    def __init__(self, grad_clip: float = 1.0, precision: str = "auto") -> None:
        self.grad_clip = grad_clip
        self.precision = precision

    @abc.abstractmethod
    def loss(self, network: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        """The scalar training loss of ``batch`` and extra floats to report."""

    def __call__(self, engine: Engine, batchdata: dict) -> dict[str, float]:
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
        return {"loss": float(loss.detach()), **extras}


class MAEStep(_Step):
    """Pretraining step: masked autoencoding of all present planes (the network returns its own loss)."""

    def loss(self, network, batch):
        return network(batch["image"], batch["plane_mask"])["loss"], {}


class SegmentationStep(_Step):
    """Fine-tuning step for all-planes segmentation, with missing-plane augmentation.

    Args:
        max_dropped_planes, drop_probability: missing-plane augmentation (see :func:`drop_random_planes`).
        decoded_planes: decode only this many random present planes per step (0 = all). The encoder always sees
            every plane; the per-plane decoder's full-resolution convolutions dominate a CPU step, so decoding
            3 of 9 planes makes a step about twice as fast while every plane is still trained over the epochs.
        decoded_frames: run the decoder's full-resolution stage (and the loss) on this many random frames per step
            (0 = all). That stage works frame by frame and, with the loss, was ~60 % of a 3-plane CPU step; the
            coarser stages still see every frame (see :meth:`scripts.net.CineSegmenter.forward`).
        dice_weight: weight of the soft Dice term beside cross-entropy.
    """

    def __init__(
        self,
        max_dropped_planes: int = 2,
        drop_probability: float = 0.5,
        decoded_planes: int = 0,
        decoded_frames: int = 0,
        dice_weight: float = 1.0,
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

    def loss(self, network, batch):
        image, plane_mask = drop_random_planes(
            batch["image"], batch["plane_mask"], self.max_dropped_planes, self.drop_probability
        )
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
        logits = network(image, plane_mask, decode_planes, decode_frames)
        return segmentation_loss(logits, label, batch["class_mask"], self.dice_weight), {}


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


class _EvalStep(abc.ABC):
    """Shared plumbing of validation steps: eval mode, no gradients, autocast, fixed random state."""

    def __init__(self, precision: str = "auto") -> None:
        self.precision = precision

    @abc.abstractmethod
    def evaluate(self, network: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """The validation measures of ``batch``, as plain floats."""

    def __call__(self, engine: Engine, batchdata: dict) -> dict[str, float]:
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


def lower_is_better(current: float, previous: float) -> bool:
    """Metric comparison for losses and errors (MONAI's default treats higher as better)."""
    return previous < 0 or current < previous


def metric_comparison(lower_metric_is_better: bool) -> Callable[[float, float], bool]:
    """The evaluator's ``metric_cmp_fn`` for a key metric that is an error (lower is better) or a score."""
    return lower_is_better if lower_metric_is_better else default_metric_cmp_fn


# --- setup helpers used by the configs ------------------------------------------------------------


#: ridge penalties tried for the closed-form phenotype head (in standardised units: 1 = one subject's worth)
RIDGE_PENALTIES = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)


def fit_ridge(
    features: np.ndarray, targets: np.ndarray, groups: np.ndarray, penalties: Sequence[float] = RIDGE_PENALTIES
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge regression of every target column on the features, each with its own penalty chosen by 5-fold
    cross-validation over ``groups`` (rows of one subject stay in one fold).

    Args:
        features: (N, D) standardised representations.
        targets: (N, K) normalised targets, NaN where unknown (such rows do not enter that column's fit).
        groups: (N,) subject index of each row.
        penalties: the L2 penalties tried.

    Returns:
        weight (K, D), bias (K,) and the chosen penalty per column (K,); a column known for fewer than 2 subjects
        gets weight 0 and bias = its mean (0 when never known).
    """
    num_targets, width = targets.shape[1], features.shape[1]
    weight, bias, chosen = np.zeros((num_targets, width)), np.zeros(num_targets), np.full(num_targets, np.nan)

    def solve(x: np.ndarray, y: np.ndarray, penalty: float) -> tuple[np.ndarray, float]:
        x_mean, y_mean = x.mean(0), y.mean()
        centred = x - x_mean
        w = np.linalg.solve(centred.T @ centred + penalty * np.eye(width), centred.T @ (y - y_mean))
        return w, float(y_mean - x_mean @ w)

    for k in range(num_targets):
        known = np.isfinite(targets[:, k])
        subjects = np.unique(groups[known])
        if len(subjects) < 2:
            bias[k] = float(targets[known, k].mean()) if known.any() else 0.0
            continue
        x, y, g = features[known], targets[known, k], groups[known]
        fold_of = {subject: i % min(5, len(subjects)) for i, subject in enumerate(subjects)}
        folds = np.array([fold_of[subject] for subject in g])
        errors = []
        for penalty in penalties:
            squared = 0.0
            for fold in np.unique(folds):
                w, b = solve(x[folds != fold], y[folds != fold], penalty)
                squared += float(((x[folds == fold] @ w + b - y[folds == fold]) ** 2).sum())
            errors.append(squared)
        chosen[k] = penalties[int(np.argmin(errors))]
        weight[k], bias[k] = solve(x, y, chosen[k])
    return weight, bias, chosen


def nan_mean_std(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and sample standard deviation of (N, K) ``values`` over their finite entries: (K,) each;
    mean 0 for a column with none, standard deviation 1 for a column with fewer than 2."""
    known = np.isfinite(values)
    counts = known.sum(0)
    mean = np.where(counts > 0, np.where(known, values, 0.0).sum(0) / np.maximum(counts, 1), 0.0)
    squares = np.where(known, (values - mean) ** 2, 0.0).sum(0)
    return mean, np.where(counts > 1, np.sqrt(squares / np.maximum(counts - 1, 1)), 1.0)


def prepare_phenotype_head(
    network: torch.nn.Module,
    items: Sequence[dict],
    preprocessing: Callable[[dict], dict] | None = None,
    device: torch.device | str = "cpu",
    precision: str = "auto",
    augmented_views: int = 2,
    max_dropped_planes: int = 2,
    seed: int = 0,
    measure_head: bool | str = False,
    load_subject: Callable[[dict], dict] | None = None,
    measure_head_subjects: int | None = None,
    centre_shifts_px: Sequence[Sequence[float]] = (),
) -> torch.nn.Module:
    """Set the phenotype head's normalisation from the training items and, for a linear head, fit it in closed form;
    with ``measure_head`` (a bool, or the command line's ``true`` / ``false``) fit the measure head too
    (:func:`fit_measure_head`, which segments through ``load_subject``, the config's canonical loader, at most
    ``measure_head_subjects`` of the items, with inference's test-time ``centre_shifts_px``).

    ``target_mean`` / ``target_std`` (K,) come from the items' phenotypes (unknown (NaN) values skipped; a phenotype
    known for no subject keeps mean 0 and std 1). With ``preprocessing`` (the deterministic loader of the items),
    ``feature_mean`` / ``feature_std`` (D,) come from the representations the network's current encoder gives them,
    so call it after loading the encoder (and keep the encoder frozen for them to stay valid). A linear head is then
    set to the ridge regression (:func:`fit_ridge`) of the normalised targets on the standardised representations
    of every subject with all its planes and ``augmented_views`` times with 1 to ``max_dropped_planes`` planes
    removed at random (seeded): the least-squares answer of a linear probe with few subjects, and robust to
    missing planes by construction. Training epochs after it start from there.
    """
    values = np.stack([np.asarray(item["phenotypes"], dtype=np.float64) for item in items])
    if not np.isfinite(values).any():
        raise ValueError("no training subject has phenotypes: add phenotypes.csv to the dataset folder")
    mean, std = nan_mean_std(values)
    std = np.maximum(std, 1e-3)
    head = network.phenotype_head
    head.set_target_stats(mean, std)
    if preprocessing is None:
        return network
    device = torch.device(device)
    was_training = network.training
    network.eval()
    full_planes, features, rows = [], [], []  # rows: the item index of each entry of ``features``
    with torch.no_grad(), precision_context(device, precision), seeded_rng(seed, device):
        for index, item in enumerate(items):
            sample = preprocessing(dict(item))
            image, plane_mask = sample["image"][None].to(device), sample["plane_mask"][None].to(device).bool()
            full_planes.append(network.embed(image, plane_mask)[0].float().cpu())
            features.append(full_planes[-1])
            rows.append(index)
            if not head.is_linear:
                continue
            for _ in range(augmented_views):
                dropped_image, dropped_mask = drop_random_planes(image, plane_mask, max_dropped_planes, 1.0)
                features.append(network.embed(dropped_image, dropped_mask)[0].float().cpu())
                rows.append(index)
    network.train(was_training)
    full_planes = torch.stack(full_planes)
    spread = full_planes.std(0).clamp_min(1e-6) if len(full_planes) > 1 else torch.ones(full_planes.shape[1])
    head.set_feature_stats(full_planes.mean(0), spread)
    logger.info(f"phenotype head: representation statistics from {len(full_planes)} training subjects")
    if head.is_linear:
        rows = np.asarray(rows)
        # the features were gathered on the CPU; the head's statistics live on the network's device (CUDA too)
        feature_mean, feature_std = head.feature_mean.cpu(), head.feature_std.cpu()
        standardised = ((torch.stack(features) - feature_mean) / feature_std).double().numpy()
        weight, bias, penalties = fit_ridge(standardised, ((values - mean) / std)[rows], rows)
        head.set_linear(weight, bias)
        logger.info(
            f"phenotype head: ridge fit on {len(rows)} representations of {len(items)} subjects, penalties "
            + ", ".join(f"{name} {p:g}" for name, p in zip(PHENOTYPE_NAMES, penalties) if np.isfinite(p))
        )
    if as_flag(measure_head, "fit_measure_head"):
        if load_subject is None:
            raise ValueError("fitting the measure head needs load_subject (the config's canonical loader)")
        fit_measure_head(network, items, load_subject, device, precision, measure_head_subjects, centre_shifts_px)
    return network


def fit_measure_head(
    network: torch.nn.Module,
    items: Sequence[dict],
    load_subject: Callable[[dict], dict],
    device: torch.device | str = "cpu",
    precision: str = "auto",
    max_subjects: int | None = None,
    centre_shifts_px: Sequence[Sequence[float]] = (),
) -> torch.nn.Module:
    """Fit ``network.measure_head`` (:class:`scripts.net.MeasureHead`) in closed form: ridge regression
    (:func:`fit_ridge`) of the normalised phenotypes of ``items`` on the standardised measures of the network's own
    segmentation of every input plane, each subject with all its planes and inference's test-time ``centre_shifts_px``
    (what inference measures).

    ``max_subjects`` (None or 0: all) fits on that many of the items, evenly spread over their order: segmenting a
    subject costs ~3.6 s of 2 CPU cores at `small`, and 47 measures need far fewer subjects than a large cohort has.

    The segmentation must stay as it is afterwards (train with the encoder and decoder frozen), and so must the way
    inference writes it back onto the planes, or the fit goes stale. Uses the phenotype head's target statistics:
    call :func:`prepare_phenotype_head` first. A measure missing for every subject (a view no subject has) is left out
    by its zero weight.
    """
    from scripts.inference import segment_subject  # scripts.inference imports this module
    from scripts.measures import measure_features, volume_curves_from_segmentations

    head = network.measure_head
    head.set_target_stats(network.phenotype_head.target_mean, network.phenotype_head.target_std)
    device = torch.device(device)
    was_training = network.training
    if max_subjects and len(items) > max_subjects:
        items = [items[k] for k in np.rint(np.linspace(0, len(items) - 1, int(max_subjects))).astype(int)]
    network.eval()
    features = []
    for item in items:
        planes = segment_subject(network, load_subject, item, device, precision, centre_shifts_px)[2]
        features.append(measure_features(volume_curves_from_segmentations(planes)))
        if len(features) % 50 == 0:
            logger.info(f"measure head: segmented {len(features)} of {len(items)} training subjects")
    network.train(was_training)
    features = np.stack(features)
    mean, spread = nan_mean_std(features)
    # a measure constant over the training subjects carries nothing: keep it at 0 rather than magnify its noise
    spread = np.where(spread > 1e-6, spread, 1.0)
    head.set_feature_stats(mean, spread)
    standardised = np.nan_to_num((features - mean) / spread, nan=0.0)
    values = np.stack([np.asarray(item["phenotypes"], dtype=np.float64) for item in items])
    targets = (values - head.target_mean.double().cpu().numpy()) / head.target_std.double().cpu().numpy()
    weight, bias, penalties = fit_ridge(standardised, targets, np.arange(len(items)))
    head.set_linear(weight, bias)
    logger.info(
        f"measure head: ridge fit on the segmentations of {len(items)} subjects, penalties "
        + ", ".join(f"{name} {p:g}" for name, p in zip(PHENOTYPE_NAMES, penalties) if np.isfinite(p))
    )
    return network


def freeze(module: torch.nn.Module, frozen: bool = True) -> torch.nn.Module:
    """Freeze (or unfreeze) all parameters of ``module``; returns it for use inside config expressions."""
    for parameter in module.parameters():
        parameter.requires_grad_(not frozen)
    return module


def trainable_parameters(
    network: torch.nn.Module,
    learning_rate: float | None = None,
    head_learning_rate: float | None = None,
    layer_decay: float = 1.0,
) -> list[dict[str, Any]]:
    """Optimiser parameter groups of the parameters that require gradients (what is left after freezing).

    With ``head_learning_rate`` the modules outside ``encoder`` (segmentation decoder, phenotype head, MAE decoder)
    get their own learning rate: a pretrained encoder is tuned gently while freshly initialised heads need larger
    steps to be trained within a short schedule. With ``layer_decay`` < 1 the encoder's rate also shrinks with
    depth from the output (layer-wise decay, as MAE/BEiT fine-tune): block ``i`` of ``L`` gets
    ``learning_rate * layer_decay ** (L - i)``, the patch and plane embeddings ``layer_decay ** L``, the final norm
    the full rate, so the early layers, whose pretrained features are the most general, move least.

    Args:
        network: the network being trained.
        learning_rate: rate of the encoder's last layer (None: the optimiser's default).
        head_learning_rate: rate of everything else (None: same as the encoder).
        layer_decay: per-block factor in (0, 1]; 1 = one rate for the whole encoder.
    """
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer_decay must lie in (0, 1], got {layer_decay}")
    target = network.module if hasattr(network, "module") else network
    if layer_decay == 1.0 and (head_learning_rate is None or head_learning_rate == learning_rate):
        # one group, so checkpoints of single-rate runs resume whatever the rates are called
        return [{"params": [p for p in target.parameters() if p.requires_grad]}]
    if layer_decay < 1.0 and learning_rate is None:
        raise ValueError("layer_decay scales the encoder's learning_rate: give one")
    # blocks between an encoder parameter and the encoder's output: the final norm 0, block i of L (1-based)
    # L - i, the embeddings (any other encoder parameter) L; read from the modules, not parsed from names
    blocks = target.encoder.blocks
    steps_below_top = {id(p): len(blocks) - 1 - k for k, block in enumerate(blocks) for p in block.parameters()}
    steps_below_top.update({id(p): 0 for p in target.encoder.norm.parameters()})

    # group key: (0 = encoder, decay steps) or (1 = heads, 0); sorted, the encoder groups come first as before
    groups: dict[tuple[int, int], dict[str, Any]] = {}
    for name, parameter in target.named_parameters():
        if not parameter.requires_grad:
            continue
        if name.startswith("encoder."):
            steps = steps_below_top.get(id(parameter), len(blocks)) if layer_decay < 1.0 else 0
            key, rate = (0, steps), None if learning_rate is None else learning_rate * layer_decay**steps
        else:
            key, rate = (1, 0), head_learning_rate
        group = groups.setdefault(key, {"params": []} if rate is None else {"params": [], "lr": float(rate)})
        group["params"].append(parameter)
    return [groups[key] for key in sorted(groups)]


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
        candidates = glob.glob(os.path.join(self.ckpt_dir, "checkpoint_epoch=*.pt"))
        if not candidates:
            logger.info(f"resume requested but no checkpoint in {self.ckpt_dir}: starting at epoch 1")
            return
        latest = max(candidates, key=lambda p: int(p.rsplit("=", 1)[1].split(".")[0]))
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


def load_pretrained(
    network: torch.nn.Module,
    checkpoint: str | None,
    freeze_encoder: bool = False,
    train_only: str | None = None,
) -> torch.nn.Module:
    """Start a fine-tuning from ``checkpoint`` (``None`` or ``""`` = from scratch).

    A pretraining (MAE) checkpoint gives the encoder; a ``CineHeartNet`` checkpoint (e.g. the segmentation model,
    when fine-tuning phenotypes on top of it) gives every tensor it shares with ``network``.

    Args:
        freeze_encoder: keep the encoder's weights fixed (a bool, or the command line's ``true`` / ``false``).
        train_only: with ``freeze_encoder``, the one submodule left trainable (e.g. ``"phenotype_head"``: a head fit
            on the segmentation model leaves its segmentation unchanged); everything else is frozen too.
    """
    from scripts.net import _unwrap_state_dict, load_encoder_weights

    if checkpoint:
        if not os.path.isfile(checkpoint):
            raise FileNotFoundError(
                f"pretrained checkpoint {checkpoint} not found: run the previous workflow first, "
                "or pass --pretrained_ckpt \"''\" to fine-tune from scratch"
            )
        state = _unwrap_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
        own = network.state_dict()
        is_heart_checkpoint = any(k.startswith("segmenter.") for k in state)
        if is_heart_checkpoint:
            shared = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
            network.load_state_dict(shared, strict=False)
            logger.info(f"loaded {len(shared)} of {len(own)} tensors from {checkpoint}")
        else:
            info = load_encoder_weights(network, state)
            logger.info(f"loaded the pretrained encoder ({info['loaded']} tensors) from {checkpoint}")
    else:
        logger.info("no pretrained checkpoint: training from scratch")
    if as_flag(freeze_encoder, "freeze_encoder"):
        freeze(network.encoder)
        if train_only:
            freeze(network)
            freeze(getattr(network, train_only), frozen=False)
    return network
