"""Evaluation report of one or several checkpoints on a labelled split: ``metrics.json``.

- Dice per class per view (SA, 2ch, 3ch, 4ch and all planes together), on the canonical grid over all frames,
  only where labels exist; the mean over subjects (a subject lacking a class in a view does not count there).
  The same on the segmentations as inference writes them (``dice_input_planes``: every input plane in its own
  grid, every SA slice of the stack, every acquired frame) against the subject's label files. The canonical grid
  holds 6 SA slices; the others, segmented by extra passes, include the basal slices where the atria meet the
  ventricles, so the atria score lower on the written segmentations.
- Phenotype mean absolute error and bias (mean signed error) per phenotype, with the mean-guess MAE (predicting the
  training mean) beside it,
  for the phenotypes regressed on the embedding, those measured on the segmentations of the input planes and
  (where the weights have it fit) those regressed on these measures by the measure head; the same measures
  on the subjects' own label files give the error floor of measuring on these planes.
- Missing-plane robustness: cosine similarity of the embedding, and phenotype shift, with 1 and 2 planes removed.
  The cosine is given for the raw embedding (as the paper reports it) and for the embedding standardised by the
  phenotype head's training statistics: the raw mean-pooled embedding is dominated by a component all subjects
  share, which keeps its cosine near 1 whatever the planes.
Several checkpoints (e.g. with and without pretraining) are evaluated on the same subjects, side by side.
"""

from __future__ import annotations

import copy
import itertools
import logging
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from scipy.stats import binomtest

from scripts.files import json_number, write_json_atomic
from scripts.inference import reported_phenotypes
from scripts.labelled_phases import labelled_phase_scores
from scripts.labels import CLASS_NAMES, LA_PLANES, PHENOTYPE_NAMES, SA_PLANE
from scripts.measures import (
    PHENOTYPE_CLASSES,
    phenotypes_from_segmentations,
    phenotypes_from_volumes,
    volume_curves_from_segmentations,
    voxel_volume_ml,
)
from scripts.metrics import dice_per_class, spurious_voxels
from scripts.sample_geometry import parse_geometry
from scripts.subject import DATALIST_JSON, Subject, load_datalist, load_subject
from scripts.subject_segmenter import SubjectSegmenter
from scripts.weights import load_network_weights

logger = logging.getLogger(__name__)

#: the phenotype entries of a model in ``metrics.json`` and how tables name them, in the order they are shown
PHENOTYPE_SOURCES = (
    ("phenotypes", "regressed on embedding"),
    ("phenotypes_from_measures", "regressed on measures"),
    ("phenotypes_from_segmentation", "measured on segmentation"),
)

VIEWS = ("sa",) + LA_PLANES
#: how many plane subsets are tried per subject for each number of removed planes (deterministic choice)
ROBUSTNESS_SUBSETS = 4


def _nanmean(values: list[float]) -> float | None:
    """Mean of the finite values; None when there is none."""
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the angle between two (D,) vectors."""
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def plane_views(geometry: Mapping[str, Any]) -> list[str]:
    """The view (``sa``, ``la_2ch``, ...) of every canonical plane."""
    return ["sa" if record["name"].startswith("sa_") else record["name"] for record in geometry["planes"]]


def dice_on_input_planes(
    written: Mapping[str, tuple[np.ndarray, np.ndarray]], reference: Subject, class_mask: torch.Tensor
) -> dict[str, list[float]]:
    """Dice per class (as :func:`scripts.metrics.dice_per_class` with ``ignore_empty``) of the segmentations of
    every input plane in its own grid (``written``: file stem -> (labels (X, Y, S, T), affine), as
    :meth:`scripts.subject_segmenter.SubjectSegmenter.input_plane_labels` returns them) against the subject's label
    files, per view and over all planes together; views without a label file are left out."""
    pairs = {
        stem: (torch.from_numpy(labels), torch.from_numpy(reference.planes[stem].label))
        for stem, (labels, _) in written.items()
        if stem in reference.planes and reference.planes[stem].label is not None
    }
    for stem, (predicted, label) in pairs.items():
        if predicted.shape != label.shape:
            raise ValueError(
                f"{reference.id}: the segmentation of {stem} has shape {tuple(predicted.shape)}, its label file "
                f"{reference.planes[stem].label_path} {tuple(label.shape)}"
            )
    dice = {}
    for view in VIEWS + ("all",):
        chosen = [pair for stem, pair in pairs.items() if view in ("all", stem)]
        if chosen:
            predicted = torch.cat([p.reshape(-1) for p, _ in chosen])
            label = torch.cat([lab.reshape(-1) for _, lab in chosen])
            dice[view] = dice_per_class(predicted, label, class_mask, ignore_empty=True).tolist()
    return dice


def sa_labelled_phase_scores(
    written: Mapping[str, tuple[np.ndarray, np.ndarray]], reference: Subject
) -> dict[str, Any] | None:
    """:func:`scripts.labelled_phases.labelled_phase_scores` of the written SA segmentation against the SA label
    file, with the SA image for the phases inference writes (None without either, or with fewer than two frames
    showing the LV blood pool)."""
    plane = reference.planes.get(SA_PLANE)
    if SA_PLANE not in written or plane is None or plane.label is None:
        return None
    labels, affine = written[SA_PLANE]
    image = np.asarray(plane.image, dtype=np.float32).reshape(labels.shape)
    return labelled_phase_scores(labels, plane.label, voxel_volume_ml(affine), image)


def removal_subsets(present: list[int], count: int, seed: int) -> list[tuple[int, ...]]:
    """Up to :data:`ROBUSTNESS_SUBSETS` distinct sets of ``count`` present planes to remove (seeded, reproducible)."""
    combos = list(itertools.combinations(present, count)) if len(present) > count else []
    if len(combos) <= ROBUSTNESS_SUBSETS:
        return combos
    rng = np.random.default_rng(seed)
    return [combos[i] for i in sorted(rng.choice(len(combos), ROBUSTNESS_SUBSETS, replace=False))]


def sign_test_p(wins: int, losses: int) -> float:
    """Two-sided exact sign test (SciPy's binomial test at 1/2): the chance of a split at least this uneven if either
    model were as likely to be better on a subject (ties left out beforehand); 1 when no subject decides."""
    return float(binomtest(wins, wins + losses, 0.5).pvalue) if wins + losses else 1.0


def paired_comparison(
    first: list[dict[str, float | None]], second: list[dict[str, float | None]], higher_is_better: bool
) -> dict[str, dict[str, float]]:
    """Per key of the subjects' records (the same subjects, in the same order, for both models): over the subjects
    where both values exist, in how many each model is better, how many tie, the mean difference (first - second) and
    the sign test's p-value (:func:`sign_test_p`). Paired, so a subject that is hard for both counts once."""
    summary = {}
    for key in first[0] if first else ():
        pairs = [(a[key], b[key]) for a, b in zip(first, second)]
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None and np.isfinite(a) and np.isfinite(b)]
        if not pairs:
            continue
        difference = np.array([a - b for a, b in pairs])
        gain = difference if higher_is_better else -difference
        wins, losses = int((gain > 0).sum()), int((gain < 0).sum())
        summary[key] = {
            "subjects": len(pairs),
            "first_better": wins,
            "second_better": losses,
            "ties": len(pairs) - wins - losses,
            "mean_difference": float(difference.mean()),
            "sign_test_p": sign_test_p(wins, losses),
        }
    return summary


def paired_models(models: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The first two of a report's ``models`` (name -> its entry, with ``per_subject`` records of the same subjects
    in the same order) compared subject by subject (:func:`paired_comparison`) on the Dice of the grid and as
    written, and on the reported phenotypes' absolute error."""
    (first, first_model), (second, second_model) = list(models.items())[:2]
    paired: dict[str, Any] = {"first": first, "second": second}
    for key, higher_is_better in (("dice", True), ("dice_input_planes", True), ("reported_abs_error", False)):
        paired[key] = paired_comparison(
            [r[key] for r in first_model["per_subject"]], [r[key] for r in second_model["per_subject"]],
            higher_is_better,
        )  # fmt: skip
    return paired


def phenotypes_from_reference_labels(subject: Subject) -> list[float]:
    """Phenotypes measured on a subject's own label files (order of ``PHENOTYPE_NAMES``): what the measures give
    with a perfect segmentation, i.e. the error floor of measuring on these planes. NaN where a needed class is not
    annotated or a view has no labels."""
    planes = {name: (plane.label, plane.affine) for name, plane in subject.planes.items() if plane.label is not None}
    measured = phenotypes_from_segmentations(planes)
    annotated = set(subject.annotated_classes)
    return [measured[name] if set(PHENOTYPE_CLASSES[name]) <= annotated else float("nan") for name in PHENOTYPE_NAMES]


def scores_per_view(
    predicted: torch.Tensor, label: torch.Tensor, class_mask: torch.Tensor, views: list[str], plane_mask: torch.Tensor
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Dice per class (:func:`scripts.metrics.dice_per_class` with ``ignore_empty``) and spurious voxels per class
    (:func:`scripts.metrics.spurious_voxels`) of a canonical prediction, per view and over all present planes.

    Args:
        predicted, label: (P, T, H, W) class maps on the canonical grid (the label :data:`UNLABELLED` where not
            annotated).
        class_mask: (C,) bool; views: the view of each of the P planes (:func:`plane_views`); plane_mask: (P,) bool.
    """
    dice: dict[str, list[float]] = {}
    spurious: dict[str, list[float]] = {}
    for view in VIEWS + ("all",):
        planes = [k for k, v in enumerate(views) if (view == "all" or v == view) and bool(plane_mask[k])]
        if planes:
            view_predicted, view_label = predicted[planes], label[planes]
            dice[view] = dice_per_class(view_predicted, view_label, class_mask, ignore_empty=True).tolist()
            spurious[view] = spurious_voxels(view_predicted, view_label, class_mask).tolist()
    return dice, spurious


def robustness_trials(
    segmenter: SubjectSegmenter,
    sample: Mapping[str, Any],
    embedding: np.ndarray,
    phenotypes: np.ndarray,
    seed: int,
) -> dict[str, list[dict[str, Any]]]:
    """Missing-plane robustness of one subject: for 1 and 2 planes removed (:func:`removal_subsets`, seeded), per
    trial the cosine of the embedding with the full-plane ``embedding`` (D,), raw and standardised by the phenotype
    head's training statistics, and the shift of the (K,) ``phenotypes``."""
    image = sample["image"][None].to(segmenter.device)
    plane_mask = sample["plane_mask"][None].to(segmenter.device)
    present = [k for k in range(len(sample["plane_mask"])) if bool(sample["plane_mask"][k])]
    head = segmenter.model.phenotype_head
    feature_mean, feature_std = head.feature_mean.cpu().numpy(), head.feature_std.cpu().numpy()
    robustness: dict[str, list[dict[str, Any]]] = {}
    for count in (1, 2):
        robustness[str(count)] = []
        for removed in removal_subsets(present, count, seed):
            reduced_mask = plane_mask.clone()
            reduced_mask[0, list(removed)] = False
            reduced_image = image * reduced_mask[:, None, :, None, None, None]
            reduced_embedding, reduced_phenotypes = segmenter.embed_and_phenotype(reduced_image, reduced_mask)
            robustness[str(count)].append(
                {
                    "cosine": cosine_similarity(embedding, reduced_embedding),
                    "standardised_cosine": cosine_similarity(
                        (embedding - feature_mean) / feature_std, (reduced_embedding - feature_mean) / feature_std
                    ),
                    "shift": (reduced_phenotypes - phenotypes).tolist(),
                }
            )
    return robustness


def training_mean_guess(
    dataset_dir: str | os.PathLike,
    evaluated: list[dict[str, Any]],
    reference_dir: str | os.PathLike | None,
    datalist: str | os.PathLike | None,
) -> tuple[np.ndarray, str]:
    """The mean-guess baseline: the (K,) mean of each phenotype over the training split of ``reference_dir``
    (default ``dataset_dir``; NaN where no training subject knows it), and where it comes from, for the report.

    The training split is read from ``datalist`` when the reference is ``dataset_dir`` (a cross-validation fold's own
    training subjects), else from the reference folder's ``datalist.json``. Warns when there is no training subject
    (no mean guess), and when ``evaluated`` items are in it too (the guess then includes their own values)."""
    same_dataset = reference_dir is None or Path(reference_dir).resolve() == Path(dataset_dir).resolve()
    training = (
        load_datalist(dataset_dir, "training", datalist) if same_dataset else load_datalist(reference_dir, "training")
    )
    # (subjects, phenotypes) even with no training subject, whose mean guess is then unknown (None in the report)
    training_values = np.array(
        [np.asarray(i["phenotypes"], dtype=np.float64) for i in training], dtype=np.float64
    ).reshape(len(training), len(PHENOTYPE_NAMES))
    reference_name = dataset_dir if same_dataset else reference_dir
    if not training:
        logger.warning(
            f"{reference_name}: no subject in its training split "
            f"({(datalist if same_dataset else None) or DATALIST_JSON}), so no mean guess: "
            "the report gives each phenotype's MAE without the mean-guess MAE beside it; pass "
            "--reference_dataset_dir with the cohort the model was trained on to score against its mean"
        )
    # without a datalist every subject is in every split: the mean guess would include the evaluated subjects
    overlap = {i["subject"] for i in training} & {i["subject"] for i in evaluated}
    if overlap:
        logger.warning(
            f"{reference_name}: {len(overlap)} of the {len(evaluated)} evaluated subjects are also in the training "
            "split the mean guess is taken from, so it includes their own values (a folder without "
            "datalist.json has every subject in every split); pass --reference_dataset_dir with the cohort the "
            "model was trained on for an out-of-sample mean guess"
        )
    known = np.isfinite(training_values)
    training_mean = np.where(known.any(0), np.nansum(training_values, 0) / np.maximum(known.sum(0), 1), np.nan)
    source = f"{reference_name} (training split, {len(training)} subjects" + (
        f", {len(overlap)} of them evaluated here)" if overlap else ")"
    )
    return training_mean, source


class CohortEvaluator:
    """Write ``metrics.json`` for the checkpoints given, on the subjects of one datalist split.

    Args:
        segmenter: the config's network (on its device), canonical loader, precision and inference's test-time
            shifts (for the Dice and the measures as written), as
            :class:`scripts.subject_segmenter.SubjectSegmenter`; the first checkpoint is loaded into its network,
            the others into copies of it.
        checkpoints: name -> weights file; empty paths are skipped (e.g. no scratch baseline).
        output_dir: where ``metrics.json`` goes.
    """

    def __init__(self, segmenter: SubjectSegmenter, checkpoints: Mapping[str, str], output_dir: str) -> None:
        self.segmenter = segmenter
        self.checkpoints = {name: path for name, path in checkpoints.items() if path}
        self.output_dir = Path(output_dir)
        self.failures: list[dict[str, Any]] = []

    # --- per subject ----------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate_subject(
        self,
        segmenter: SubjectSegmenter,
        item: Mapping[str, Any],
        sample: Mapping[str, Any],
        reference: Subject,
        seed: int,
    ) -> dict[str, Any]:
        """Dice, phenotypes (regressed and measured on the segmentation of every input plane) and robustness of one
        subject by one model (``segmenter``: its network with the evaluator's loader, precision and shifts; ``item``
        its datalist entry, ``sample`` the loaded canonical sample, ``reference`` its files as read for it: the label
        files to score against, and the source of inference's extra SA passes); the sample is cut again around the LV
        where the model's segmenter recentres it (:meth:`SubjectSegmenter.centred_sample`)."""
        sample = segmenter.centred_sample(item, reference, sample)
        full = segmenter.predict(sample)
        class_mask = sample["class_mask"]
        views = plane_views(parse_geometry(sample["geometry"]))
        dice, spurious = scores_per_view(full["labels"], sample["label"][0], class_mask, views, sample["plane_mask"])
        embedding, phenotypes = full["embedding"].numpy(), full["phenotypes"].numpy()
        planes, _ = segmenter.input_plane_labels(item, sample, full["probabilities"], reference)
        volumes = volume_curves_from_segmentations(planes)
        measured = phenotypes_from_volumes(volumes)
        # what inference reports where the weights have a fit measure head (see reported_phenotypes)
        from_measures = reported_phenotypes(segmenter.model, phenotypes, volumes)[0]
        return {
            "dice": dice,
            "dice_input_planes": dice_on_input_planes(planes, reference, class_mask),
            "labelled_phases": sa_labelled_phase_scores(planes, reference),
            "spurious": spurious,
            "phenotypes": phenotypes.tolist(),
            "measured": [measured[name] for name in PHENOTYPE_NAMES],
            "from_measures": from_measures.tolist() if bool(segmenter.model.measure_head.fitted) else None,
            "truth": np.asarray(sample["phenotypes"], dtype=np.float64).tolist(),
            "robustness": robustness_trials(segmenter, sample, embedding, phenotypes, seed),
        }

    @staticmethod
    def subject_record(subject_id: str, result: Mapping[str, Any]) -> dict[str, Any]:
        """What the report keeps of one subject (``result`` of :meth:`evaluate_subject`), for paired comparisons:
        Dice per class over all planes and frames, on the canonical grid and as written (None where the labels do
        not show the class), and the absolute error of each reported phenotype (the measure head's where it is
        fit, else the embedding head's, as inference reports them; None where the truth or the value is unknown)."""

        def dice_of(key: str) -> dict[str, float | None]:
            values = result[key].get("all", [float("nan")] * (len(CLASS_NAMES) - 1))
            return {name: json_number(value) for name, value in zip(CLASS_NAMES[1:], values)}

        reported = result["from_measures"] if result["from_measures"] is not None else result["phenotypes"]
        errors = np.abs(np.asarray(reported, dtype=np.float64) - np.asarray(result["truth"], dtype=np.float64))
        phases = result["labelled_phases"]
        return {
            "subject": subject_id,
            "dice": dice_of("dice"),
            "dice_input_planes": dice_of("dice_input_planes"),
            "labelled_phases": (
                None if phases is None else {k: v for k, v in phases.items() if k != "lv_volume_ml_model"}
            ),
            "reported_abs_error": {name: json_number(error) for name, error in zip(PHENOTYPE_NAMES, errors)},
        }

    # --- cohort ---------------------------------------------------------------------------------------

    @staticmethod
    def summarise_dice(per_subject: list[dict[str, Any]], key: str = "dice") -> dict[str, dict[str, float | None]]:
        """Mean Dice (entry ``key`` of each subject) per view and class over the subjects whose labels show the
        class in that view."""
        summary = {}
        for view in VIEWS + ("all",):
            rows = [s[key][view] for s in per_subject if view in s[key]]
            if rows:
                summary[view] = {
                    CLASS_NAMES[c + 1]: _nanmean([r[c] for r in rows]) for c in range(len(CLASS_NAMES) - 1)
                }
        return summary

    @staticmethod
    def summarise_spurious(per_subject: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, int]]]:
        """Per view and class whose labels lack it in some subjects: in how many of those (``absent``) the model
        paints at least one voxel of it (``painted``)."""
        summary: dict[str, dict[str, dict[str, int]]] = {}
        for view in VIEWS + ("all",):
            rows = [s["spurious"][view] for s in per_subject if view in s["spurious"]]
            for c in range(len(CLASS_NAMES) - 1):
                counts = [r[c] for r in rows if np.isfinite(r[c])]
                if counts:
                    summary.setdefault(view, {})[CLASS_NAMES[c + 1]] = {
                        "absent": len(counts),
                        "painted": sum(count > 0 for count in counts),
                    }
        return summary

    @staticmethod
    def summarise_labelled_phases(per_subject: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Means over the subjects with SA labels at two or more frames (see :mod:`scripts.labelled_phases`): Dice
        per class at the contoured ED and ES, |LVEF error| (points, the model's ED and ES from its own curve), the
        model's ED and ES frames against the contoured ones (cFD, frames; from its volume curve and, ``signal_*``, as
        inference writes them, from the LV blood-pool signal), the correlation of its LV volume curve
        with the contoured one (subjects contoured at three or more frames) and the subjects with a frame outside
        the contoured volume range."""
        scored = [s["labelled_phases"] for s in per_subject if s["labelled_phases"] is not None]
        if not scored:
            return None
        summary: dict[str, Any] = {
            f"dice_{phase}": {
                name: _nanmean([s[f"dice_{phase}"][name] for s in scored]) for name in ("LVBP", "LVMYO", "RVBP")
            }
            for phase in ("ed", "es")
        }
        summary["lvef_abs_error"] = _nanmean([abs(s["lvef_error"]) for s in scored if s["lvef_error"] is not None])
        frame_keys = [f"{source}{phase}_frame_difference" for source in ("", "signal_") for phase in ("ed", "es")]
        for key in (*frame_keys, "lv_curve_correlation"):
            summary[key] = _nanmean([s[key] for s in scored if s.get(key) is not None])
        summary["subjects_with_frames_outside_range"] = sum(bool(s["frames_outside_range"]) for s in scored)
        summary["subjects"] = len(scored)
        return summary

    @staticmethod
    def summarise_phenotypes(
        per_subject: list[dict[str, Any]], training_mean: np.ndarray, source: str = "phenotypes"
    ) -> dict[str, Any]:
        """MAE per phenotype of ``source`` ("phenotypes": regressed on the embedding, "measured": from the
        segmentations, "from_measures": regressed on those measures by the measure head, as inference reports them)
        beside the mean guess, and the bias (mean of value - truth: a segmentation that blurs the cycle over time
        reads ED too small and ES too large, so EF too low), over the subjects where both the truth and the value
        exist."""
        predicted = np.array([s[source] for s in per_subject], dtype=np.float64)
        truth = np.array([s["truth"] for s in per_subject])
        summary = {}
        for k, name in enumerate(PHENOTYPE_NAMES):
            known = np.isfinite(truth[:, k]) & np.isfinite(predicted[:, k])
            if not known.any():
                continue
            error = predicted[known, k] - truth[known, k]
            mae = float(np.abs(error).mean())
            mean_guess = (
                float(np.abs(training_mean[k] - truth[known, k]).mean()) if np.isfinite(training_mean[k]) else None
            )
            summary[name] = {
                "mae": mae,
                "mean_guess_mae": mean_guess,
                "ratio_to_mean_guess": mae / mean_guess if mean_guess else None,
                "bias": float(error.mean()),
                "subjects": int(known.sum()),
            }
        return summary

    @staticmethod
    def summarise_robustness(per_subject: list[dict[str, Any]]) -> dict[str, Any]:
        """Per number of planes removed, over every trial of every subject: the mean and least embedding cosine (raw
        and standardised) and the mean absolute shift of each phenotype."""
        summary = {}
        for count in ("1", "2"):
            trials = [t for s in per_subject for t in s["robustness"][count]]
            if not trials:
                continue
            cosines = np.array([t["cosine"] for t in trials])
            standardised = np.array([t["standardised_cosine"] for t in trials])
            shifts = np.abs(np.array([t["shift"] for t in trials]))
            summary[f"{count}_planes_removed"] = {
                "embedding_cosine_mean": float(cosines.mean()),
                "embedding_cosine_min": float(cosines.min()),
                "standardised_embedding_cosine_mean": float(standardised.mean()),
                "standardised_embedding_cosine_min": float(standardised.min()),
                "phenotype_abs_shift_mean": {
                    name: float(shifts[:, k].mean()) for k, name in enumerate(PHENOTYPE_NAMES)
                },
                "trials": len(trials),
            }
        return summary

    def load_models(self) -> dict[str, SubjectSegmenter]:
        """Name -> segmenter of each checkpoint, its weights loaded and in eval mode.

        One network per checkpoint (the config's for the first, copies of it as built for the others, so that weights
        without a measure head do not inherit another checkpoint's), so that each subject is read once and scored by
        every model while it is in memory: a canonical sample is ~37 MB and the files behind it up to ~1 GB, too much
        to keep for a large cohort or to read once per model."""
        network = self.segmenter.network
        copies = [copy.deepcopy(network) for _ in range(len(self.checkpoints) - 1)]
        return {
            name: self.segmenter.with_network(load_network_weights(model, checkpoint).eval())
            for model, (name, checkpoint) in zip([network] + copies, self.checkpoints.items())
        }

    def evaluate_subjects(self, items: list[dict[str, Any]], models: Mapping[str, SubjectSegmenter]) -> dict[str, Any]:
        """Read each subject once and score it by every model; a subject that cannot be read is listed and skipped.

        Returns:
            ``per_model`` (name -> :meth:`evaluate_subject` results in subject order), ``subject_ids``, ``failures``
            and ``reference_phenotypes`` (per subject: measured on its label files, and the truth).
        """
        per_model: dict[str, list[dict[str, Any]]] = {name: [] for name in models}
        subject_ids, failures, reference_phenotypes = [], [], []
        for item in items:
            try:
                files = load_subject(item["subject"], self.segmenter.load_subject.label_map)
                sample = self.segmenter.load_subject(dict(item), files)
            except Exception as err:  # keep going past a bad subject; it is listed in the report
                logger.error(f"{item.get('id')}: skipped: {err}")
                failures.append({"subject": item.get("id"), "error": str(err)})
                continue
            for name, segmenter in models.items():
                per_model[name].append(self.evaluate_subject(segmenter, item, sample, files, seed=len(subject_ids)))
            subject_ids.append(sample["id"])
            logger.info(f"{sample['id']}: evaluated ({len(subject_ids) + len(failures)} of {len(items)} subjects)")
            reference_phenotypes.append(
                {
                    "measured": phenotypes_from_reference_labels(files),
                    "truth": np.asarray(sample["phenotypes"], dtype=np.float64).tolist(),
                }
            )
            del files, sample
        return {
            "per_model": per_model,
            "subject_ids": subject_ids,
            "failures": failures,
            "reference_phenotypes": reference_phenotypes,
        }

    def model_report(
        self,
        checkpoint: str,
        per_subject: list[dict[str, Any]],
        subject_ids: list[str],
        training_mean: np.ndarray,
        measure_head_fitted: bool,
    ) -> dict[str, Any]:
        """One model's entry of ``metrics.json``: the summaries of its ``per_subject`` results and the records of
        each subject; the measure head's phenotypes where the weights have it fit."""
        entry = {
            "checkpoint": str(checkpoint),
            "dice": self.summarise_dice(per_subject),
            "dice_input_planes": self.summarise_dice(per_subject, "dice_input_planes"),
            "labelled_phases": self.summarise_labelled_phases(per_subject),
            "spurious": self.summarise_spurious(per_subject),
            "phenotypes": self.summarise_phenotypes(per_subject, training_mean),
            "phenotypes_from_segmentation": self.summarise_phenotypes(per_subject, training_mean, "measured"),
            "robustness": self.summarise_robustness(per_subject),
            "per_subject": [self.subject_record(i, r) for i, r in zip(subject_ids, per_subject)],
        }
        if measure_head_fitted:
            entry["phenotypes_from_measures"] = self.summarise_phenotypes(per_subject, training_mean, "from_measures")
        return entry

    def run(
        self,
        dataset_dir: str | os.PathLike,
        split: str = "test",
        reference_dir: str | os.PathLike | None = None,
        datalist: str | os.PathLike | None = None,
    ) -> dict[str, Any]:
        """Evaluate on ``split`` of ``dataset_dir`` as listed in its ``datalist`` (see
        :func:`scripts.subject.load_datalist`); the mean guess is the training-split mean of ``reference_dir``
        (default ``dataset_dir``, see :func:`training_mean_guess`), so a held-out cohort can be scored against the
        cohort the model was trained on. Writes ``metrics.json``, prints a summary and returns the report."""
        if not self.checkpoints:
            raise ValueError("no checkpoint to evaluate: pass --ckpt (and optionally --scratch_ckpt)")
        items = load_datalist(dataset_dir, split, datalist)
        if not items:
            raise FileNotFoundError(f"no subject in split {split!r} of {dataset_dir} ({datalist or DATALIST_JSON})")
        training_mean, mean_guess_from = training_mean_guess(dataset_dir, items, reference_dir, datalist)
        models = self.load_models()
        evaluated = self.evaluate_subjects(items, models)
        self.failures = evaluated["failures"]
        subject_ids = evaluated["subject_ids"]
        report: dict[str, Any] = {
            "dataset_dir": str(dataset_dir),
            "split": split,
            # the split file named on the command line (a cross-validation fold); None: the folder's datalist.json
            "datalist": str(datalist) if datalist else None,
            "subjects": subject_ids,
            "failed": evaluated["failures"],
            "mean_guess_from": mean_guess_from,
            "phenotypes_from_reference_labels": self.summarise_phenotypes(
                evaluated["reference_phenotypes"], training_mean, "measured"
            ),
            "models": {},
        }
        for name, checkpoint in self.checkpoints.items():
            per_subject = evaluated["per_model"][name]
            fitted = bool(models[name].model.measure_head.fitted)
            report["models"][name] = self.model_report(checkpoint, per_subject, subject_ids, training_mean, fitted)
            logger.info(f"evaluated {name} ({checkpoint}) on {len(per_subject)} subjects")
        if len(report["models"]) > 1:
            # the first model (pretrained) against the second (scratch), subject by subject
            report["paired"] = paired_models(report["models"])
        write_json_atomic(report, self.output_dir / "metrics.json")
        print_summary(report)
        print(f"metrics written to {self.output_dir / 'metrics.json'}")
        return report

    def exit_status(self) -> None:
        """End the process with status 1, naming the subjects the last :meth:`run` could not evaluate: a report
        that silently leaves subjects out must not read as a complete one."""
        if self.failures:
            names = ", ".join(str(failure["subject"]) for failure in self.failures)
            raise SystemExit(
                f"{len(self.failures)} subject(s) failed ({names}); the report covers the others, reasons under "
                f"'failed' in {self.output_dir / 'metrics.json'}"
            )


def two_decimals(value: float | None) -> str:
    """``value`` with 2 decimals, or n/a when unknown (a mean guess without training subjects)."""
    return "n/a" if value is None else f"{value:.2f}"


def print_summary(report: Mapping[str, Any]) -> None:
    """A short side-by-side table of the headline numbers on stdout."""
    names = list(report["models"])
    print(f"evaluation on {len(report['subjects'])} subjects ({report['split']}): " + " | ".join(names))
    print("  Dice over all planes and frames: canonical grid | as written (every input plane and SA slice)")
    for cls in CLASS_NAMES[1:]:
        values = [
            report["models"][n][key].get("all", {}).get(cls) for n in names for key in ("dice", "dice_input_planes")
        ]
        print(f"  Dice {cls:6s} " + " | ".join("  n/a " if v is None else f"{v:.3f}" for v in values))
    for n in names:
        phases = report["models"][n]["labelled_phases"]
        if phases:
            print(
                f"  {n}: at the labelled ED | ES: Dice LVBP {two_decimals(phases['dice_ed']['LVBP'])} | "
                f"{two_decimals(phases['dice_es']['LVBP'])}, LVMYO {two_decimals(phases['dice_ed']['LVMYO'])} | "
                f"{two_decimals(phases['dice_es']['LVMYO'])}; |LVEF error| {two_decimals(phases['lvef_abs_error'])} "
                f"points; model's ED | ES {two_decimals(phases['ed_frame_difference'])} | "
                f"{two_decimals(phases['es_frame_difference'])} frames off (as written, from the blood-pool signal: "
                f"{two_decimals(phases.get('signal_ed_frame_difference'))} | "
                f"{two_decimals(phases.get('signal_es_frame_difference'))}); LV curve correlation "
                f"{two_decimals(phases['lv_curve_correlation'])}; {phases['subjects_with_frames_outside_range']} of "
                f"{phases['subjects']} subjects with an LV volume outside the labelled ED-ES range"
            )
    reference = report["phenotypes_from_reference_labels"]
    for source, title in PHENOTYPE_SOURCES:
        if not any(source in report["models"][n] for n in names):
            continue
        print(
            f"  phenotype MAE, {title}:"
            + (" (measured on the reference labels)" if source == "phenotypes_from_segmentation" else "")
        )
        for phenotype in ("LVEDV", "LVEF", "LVM", "RVEDV", "RVEF"):
            entries = [report["models"][n].get(source, {}).get(phenotype) for n in names]
            if source == "phenotypes_from_segmentation":
                entries.append(reference.get(phenotype))
            if all(e is None for e in entries):
                continue
            cells = [
                "  n/a " if e is None else f"MAE {e['mae']:.2f} (mean-guess {two_decimals(e['mean_guess_mae'])})"
                for e in entries
            ]
            print(f"    {phenotype:6s} " + " | ".join(cells))
    for n in names:
        robust = report["models"][n]["robustness"].get("2_planes_removed")
        if robust:
            print(
                f"  {n}: embedding cosine with 2 planes removed {robust['embedding_cosine_mean']:.3f} "
                f"(standardised {robust['standardised_embedding_cosine_mean']:.3f})"
            )
