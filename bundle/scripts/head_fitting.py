"""Closed-form fits of the phenotype heads: the embedding head's normalisation and ridge regression on the training
representations, and the measure head's ridge regression on what is measured on the network's own segmentations.

The ridge fit is written here rather than taken from scikit-learn (not a dependency): ``RidgeCV`` with a grouped
splitter picks one penalty for all targets, ``GroupKFold`` assigns subjects to folds differently from the round-robin
below (so it could pick other penalties for the shipped heads), and the per-target handling of unknown (NaN) targets
would still be a loop of ours.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np
import torch

from scripts.flags import as_flag
from scripts.labels import PHENOTYPE_NAMES
from scripts.measures import measure_features, volume_curves_from_segmentations
from scripts.precision import precision_context, seeded_rng
from scripts.progress import ProgressLog
from scripts.steps import drop_random_planes
from scripts.subject_segmenter import SubjectSegmenter

logger = logging.getLogger(__name__)

#: ridge penalties tried for the closed-form phenotype head (in standardised units: 1 = one subject's worth)
RIDGE_PENALTIES = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)


def solve_ridge(features: np.ndarray, targets: np.ndarray, penalty: float) -> tuple[np.ndarray, float]:
    """Ridge regression with an unpenalised intercept: weight (D,) and bias of (N,) ``targets`` on (N, D)
    ``features``, both centred, with the L2 ``penalty``."""
    x_mean, y_mean = features.mean(0), targets.mean()
    centred = features - x_mean
    weight = np.linalg.solve(centred.T @ centred + penalty * np.eye(features.shape[1]), centred.T @ (targets - y_mean))
    return weight, float(y_mean - x_mean @ weight)


def cross_validated_penalty(
    features: np.ndarray, targets: np.ndarray, groups: np.ndarray, penalties: Sequence[float]
) -> float:
    """The penalty of ``penalties`` with the least squared error over 5 folds (fewer with fewer subjects), the
    subjects of (N,) ``groups`` dealt round-robin in sorted order so that one subject's rows stay in one fold.

    Args:
        features: (N, D); targets: (N,), all known.
    """
    subjects = np.unique(groups)
    fold_of = {subject: i % min(5, len(subjects)) for i, subject in enumerate(subjects)}
    folds = np.array([fold_of[subject] for subject in groups])
    errors = []
    for penalty in penalties:
        squared = 0.0
        for fold in np.unique(folds):
            w, b = solve_ridge(features[folds != fold], targets[folds != fold], penalty)
            squared += float(((features[folds == fold] @ w + b - targets[folds == fold]) ** 2).sum())
        errors.append(squared)
    return penalties[int(np.argmin(errors))]


def fit_ridge(
    features: np.ndarray, targets: np.ndarray, groups: np.ndarray, penalties: Sequence[float] = RIDGE_PENALTIES
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge regression of every target column on the features, each with its own penalty chosen by 5-fold
    cross-validation over ``groups`` (rows of one subject stay in one fold, :func:`cross_validated_penalty`).

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
    for k in range(num_targets):
        known = np.isfinite(targets[:, k])
        if len(np.unique(groups[known])) < 2:
            bias[k] = float(targets[known, k].mean()) if known.any() else 0.0
            continue
        x, y, g = features[known], targets[known, k], groups[known]
        chosen[k] = cross_validated_penalty(x, y, g, penalties)
        weight[k], bias[k] = solve_ridge(x, y, chosen[k])
    return weight, bias, chosen


def nan_mean_std(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and sample standard deviation of (N, K) ``values`` over their finite entries: (K,) each;
    mean 0 for a column with none, standard deviation 1 for a column with fewer than 2."""
    known = np.isfinite(values)
    counts = known.sum(0)
    mean = np.where(counts > 0, np.where(known, values, 0.0).sum(0) / np.maximum(counts, 1), 0.0)
    squares = np.where(known, (values - mean) ** 2, 0.0).sum(0)
    return mean, np.where(counts > 1, np.sqrt(squares / np.maximum(counts - 1, 1)), 1.0)


def penalties_text(penalties: np.ndarray) -> str:
    """The chosen ridge penalty of each phenotype that was fit, for the log."""
    return ", ".join(f"{name} {p:g}" for name, p in zip(PHENOTYPE_NAMES, penalties) if np.isfinite(p))


# --- the phenotype head (on the embedding) ----------------------------------------------------------


@torch.no_grad()
def training_representations(
    network: torch.nn.Module,
    items: Sequence[dict],
    preprocessing: Callable[[dict], dict],
    device: torch.device,
    precision: str,
    augmented_views: int,
    max_dropped_planes: int,
    seed: int,
) -> tuple[torch.Tensor, list[torch.Tensor], list[int]]:
    """The network's representations of the training ``items`` (loaded by ``preprocessing``), in eval mode under
    ``precision`` with the random generators seeded by ``seed`` (and restored afterwards).

    Returns:
        (N, D) representations with all planes; the (D,) representations to fit on: each item with all planes then,
        for a linear head, ``augmented_views`` times with 1 to ``max_dropped_planes`` planes removed at random; and
        the item index of each of those.
    """
    linear = network.phenotype_head.is_linear
    was_training = network.training
    network.eval()
    full_planes, features, rows = [], [], []
    progress = ProgressLog(logger, len(items), "phenotype head: representations of the training subjects")
    with precision_context(device, precision), seeded_rng(seed, device):
        for index, item in enumerate(items):
            sample = preprocessing(dict(item))
            image, plane_mask = sample["image"][None].to(device), sample["plane_mask"][None].to(device).bool()
            full_planes.append(network.embed(image, plane_mask)[0].float().cpu())
            features.append(full_planes[-1])
            rows.append(index)
            for _ in range(augmented_views if linear else 0):
                dropped_image, dropped_mask = drop_random_planes(image, plane_mask, max_dropped_planes, 1.0)
                features.append(network.embed(dropped_image, dropped_mask)[0].float().cpu())
                rows.append(index)
            progress.step()
    network.train(was_training)
    return torch.stack(full_planes), features, rows


def fit_linear_phenotype_head(
    head: torch.nn.Module, features: list[torch.Tensor], rows: list[int], normalised_targets: np.ndarray
) -> None:
    """Set the linear ``head`` to the ridge regression (:func:`fit_ridge`) of (N, K) ``normalised_targets`` (one row
    per item) on the (D,) representations ``features``, standardised by the head's feature statistics, of the items
    ``rows``."""
    rows = np.asarray(rows)
    # the features were gathered on the CPU; the head's statistics live on the network's device (CUDA too)
    feature_mean, feature_std = head.feature_mean.cpu(), head.feature_std.cpu()
    standardised = ((torch.stack(features) - feature_mean) / feature_std).double().numpy()
    weight, bias, penalties = fit_ridge(standardised, normalised_targets[rows], rows)
    head.set_linear(weight, bias)
    logger.info(
        f"phenotype head: ridge fit on {len(rows)} representations of {len(normalised_targets)} subjects, "
        f"penalties {penalties_text(penalties)}"
    )


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
    measure_segmenter: SubjectSegmenter | None = None,
    measure_head_subjects: int | None = None,
) -> torch.nn.Module:
    """Set the phenotype head's normalisation from the training items and, for a linear head, fit it in closed form;
    with ``measure_head`` (a bool, or the command line's ``true`` / ``false``) fit the measure head too
    (:func:`fit_measure_head` with ``measure_segmenter``, a segmenter of ``network`` as inference runs it, on at
    most ``measure_head_subjects`` of the items).

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
    full_planes, features, rows = training_representations(
        network, items, preprocessing, device, precision, augmented_views, max_dropped_planes, seed
    )
    spread = full_planes.std(0).clamp_min(1e-6) if len(full_planes) > 1 else torch.ones(full_planes.shape[1])
    head.set_feature_stats(full_planes.mean(0), spread)
    logger.info(f"phenotype head: representation statistics from {len(full_planes)} training subjects")
    if head.is_linear:
        fit_linear_phenotype_head(head, features, rows, (values - mean) / std)
    if as_flag(measure_head, "fit_measure_head"):
        if measure_segmenter is None or measure_segmenter.model is not network:
            raise ValueError("fitting the measure head needs measure_segmenter, a segmenter of the network being fit")
        fit_measure_head(measure_segmenter, items, measure_head_subjects)
    return network


# --- the measure head (on the segmentation's measures) ----------------------------------------------


def fit_measure_head(
    segmenter: SubjectSegmenter, items: Sequence[dict], max_subjects: int | None = None
) -> torch.nn.Module:
    """Fit the measure head of ``segmenter``'s network (``MeasureHead``) in closed form: ridge regression
    (:func:`fit_ridge`) of the normalised phenotypes of ``items`` on the standardised measures of the network's own
    segmentation of every input plane, each subject with all its planes and the segmenter's test-time shifts (what
    inference measures). Returns the network.

    ``max_subjects`` (None or 0: all) fits on that many of the items, evenly spread over their order: segmenting a
    subject costs ~3.6 s of 2 CPU cores at `small`, and 47 measures need far fewer subjects than a large cohort has.

    The segmentation must stay as it is afterwards (train with the encoder and decoder frozen), and so must the way
    inference writes it back onto the planes, or the fit goes stale. Uses the phenotype head's target statistics:
    call :func:`prepare_phenotype_head` first. A measure missing for every subject (a view no subject has) is left out
    by its zero weight.
    """
    network = segmenter.model
    head = network.measure_head
    head.set_target_stats(network.phenotype_head.target_mean, network.phenotype_head.target_std)
    if max_subjects and len(items) > max_subjects:
        items = [items[k] for k in np.rint(np.linspace(0, len(items) - 1, int(max_subjects))).astype(int)]
    features = np.stack(segmentation_measures(segmenter, items))
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
        f"measure head: ridge fit on the segmentations of {len(items)} subjects, penalties {penalties_text(penalties)}"
    )
    return network


def segmentation_measures(segmenter: SubjectSegmenter, items: Sequence[dict]) -> list[np.ndarray]:
    """The measure features (``scripts.measures.measure_features``) of the segmentation of each of ``items``, the
    network in eval mode (its mode is restored afterwards)."""
    network = segmenter.model
    was_training = network.training
    network.eval()
    features = []
    progress = ProgressLog(logger, len(items), "measure head: segmented the training subjects")
    for item in items:
        planes = segmenter.segment(item).planes
        features.append(measure_features(volume_curves_from_segmentations(planes)))
        progress.step()
    network.train(was_training)
    return features
