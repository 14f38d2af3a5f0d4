"""Cohort inference: every plane and frame segmented, phenotypes estimated, embedding written, per subject.

Per subject ``<output_dir>/<id>/``: ``seg_<plane>.nii.gz`` for every input plane in that plane's own shape and
affine, ``phenotypes.json``, ``embedding.npy`` and ``report.json`` (planes used, missing, problems); for the cohort
``phenotypes.csv``, ``phenotypes_from_embedding.csv``, ``phenotypes_from_segmentation.csv`` and ``summary.json``
(subjects done and failed). A bad subject is reported and skipped.

Phenotypes come three ways: measured on the segmentations (:mod:`scripts.measures`), regressed on the embedding by
the phenotype head (the paper's linear head), and regressed on those measures by the measure head. ``phenotypes``
(json and csv) is the measure head's where the weights have it fit and an LV was measured, else the phenotype
head's; ``phenotypes_method`` says which. A value no heart has is left empty there and named in ``report.json``.
"""

from __future__ import annotations

import copy
import csv
import io
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from scripts.canonical import (
    LoadCineSubjectd,
    most_probable_class,
    parse_geometry,
    plan_sa_passes,
    probabilities_to_plane_labels,
)
from scripts.engines import precision_context
from scripts.files import atomic_path, json_number, save_nifti_atomic, write_json_atomic, write_text_atomic
from scripts.labels import PHENOTYPE_NAMES, PHENOTYPE_UNITS, SA_PLANE, UNLABELLED
from scripts.measures import (
    implausible_ejections,
    implausible_values,
    measure_features,
    phenotypes_from_volumes,
    unmeasurable_phenotypes,
    volume_curves_from_segmentations,
)
from scripts.subject import Subject, discover_subjects, is_subject_folder

logger = logging.getLogger(__name__)


def write_phenotype_csv(rows: list[dict[str, Any]], path: str | os.PathLike) -> None:
    """Cohort table: one row per subject, the phenotype columns of :data:`PHENOTYPE_NAMES` (mL, %, g); empty cells
    for values that could not be measured (NaN)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["subject", *PHENOTYPE_NAMES], extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {k: (("" if np.isnan(v) else f"{v:.3f}") if isinstance(v, float) else v) for k, v in row.items()}
        )
    write_text_atomic(buffer.getvalue(), path)


# --- weights and forward passes ---------------------------------------------------------------------


def load_network_weights(network: torch.nn.Module, checkpoint: str | os.PathLike) -> torch.nn.Module:
    """Load a full network state dict (plain, or wrapped as ``{"network": ...}`` by a training checkpoint)."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(
            f"no weights at {checkpoint}: pass --ckpt with a trained model (see docs/README.md for the training recipe)"
        )
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "network" in state and isinstance(state["network"], Mapping):
        state = state["network"]
    target = network.module if hasattr(network, "module") else network
    # weights of another preset share the keys but not the shapes; name one instead of torch's list of every tensor
    own = target.state_dict()
    resized = [key for key, value in state.items() if key in own and tuple(value.shape) != tuple(own[key].shape)]
    if resized:
        key = resized[0]
        raise RuntimeError(
            f"{checkpoint} holds a network of another size ({len(resized)} tensors differ, e.g. {key}: "
            f"{tuple(state[key].shape)} in the file, {tuple(own[key].shape)} here): check --preset matches the "
            "checkpoint (the shipped models/model.pt is preset small)"
        )
    missing, unexpected = target.load_state_dict(state, strict=False)
    # weights saved before the measure head existed load with it unfit (phenotypes then come from the embedding)
    missing = [key for key in missing if not key.startswith("measure_head.")]
    if missing or unexpected:
        raise RuntimeError(
            f"{checkpoint} does not match the network ({len(missing)} missing keys, e.g. {missing[:3]}; "
            f"{len(unexpected)} unexpected, e.g. {unexpected[:3]}): check --preset matches the checkpoint"
        )
    return network


def _segment_planes(
    network: torch.nn.Module,
    sample: Mapping[str, Any],
    device: torch.device,
    precision: str,
    planes: Sequence[int] | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits (C, P', T, H, W) of the P' = len(planes) planes asked for, on ``device``; their canonical indices (P',);
    the embedding (D,)). ``planes`` defaults to the planes the sample has."""
    image = sample["image"][None].to(device)
    plane_mask = sample["plane_mask"][None].to(device)
    if planes is None:
        planes = torch.nonzero(sample["plane_mask"]).flatten().tolist()
    decode_planes = torch.as_tensor(planes, dtype=torch.long, device=device)
    with precision_context(device, precision):
        logits, embedding = network.segment_and_embed(image, plane_mask, decode_planes)
    return logits[0], decode_planes.cpu(), embedding[0]


def _probabilities_on_grid(logits: torch.Tensor, decode_planes: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """float16 (C, P, T, H, W) softmax of ``logits`` (C, P', T, H, W) on the canonical ``grid`` (P, T, H, W), zero on
    the planes not decoded. float16 halves the memory of a subject's maps (~100 MB at the small preset); a probability
    needs no more digits."""
    probabilities = torch.zeros((logits.shape[0],) + tuple(grid), dtype=torch.float16)
    probabilities[:, decode_planes] = logits.float().softmax(0).to(torch.float16).cpu()
    return probabilities


@torch.no_grad()
def predict_sample(
    network: torch.nn.Module,
    sample: Mapping[str, Any],
    device: torch.device,
    precision: str = "auto",
    planes: Sequence[int] | None = None,
) -> dict[str, torch.Tensor]:
    """One encoder pass for everything inference reports about a canonical sample (CPU tensors):
    ``labels`` uint8 (P, T, H, W), ``probabilities`` float16 (C, P, T, H, W) (the softmax; what is written back onto
    the input planes, :func:`segment_input_planes`), ``embedding`` (D,) and ``phenotypes`` (K,) in physical units.

    ``planes`` (canonical plane indices; default: the planes the sample has) are the ones segmented; the others'
    labels are 0. The decoder works plane by plane and dominates the cost, so a plane not asked for is not computed
    (an absent plane, or the LA planes of an extra SA pass).
    """
    logits, decode_planes, embedding = _segment_planes(network, sample, device, precision, planes)
    with precision_context(device, precision):
        phenotypes = network.phenotype_head.predict_physical(embedding[None])
    grid = sample["image"].shape[1:]
    labels = torch.zeros(grid, dtype=torch.uint8)
    labels[decode_planes] = most_probable_class(logits).cpu()
    return {
        "labels": labels,
        "probabilities": _probabilities_on_grid(logits, decode_planes, grid),
        "embedding": embedding.float().cpu(),
        "phenotypes": phenotypes[0].float().cpu(),
    }


@torch.no_grad()
def predict_pass(
    network: torch.nn.Module,
    sample: Mapping[str, Any],
    device: torch.device,
    precision: str = "auto",
    planes: Sequence[int] | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """A further pass of :func:`segment_input_planes` (an extra SA stack, a test-time shift) as
    :func:`scripts.canonical.probabilities_to_plane_labels` takes it: the float16 probabilities (C, P', T, H, W) of
    the P' ``planes`` decoded (default: the planes the sample has) and the sample's geometry with only their records.

    No labels, embedding or phenotypes: the pass adds probabilities only. A plane not decoded is left out rather than
    kept as zeros: zeros would not change the mean's most probable class, but the write-back would still cut them
    (an extra SA pass encodes the LA views too) and blend densely wherever their class 0 disagrees with the others.
    """
    logits, decode_planes, _ = _segment_planes(network, sample, device, precision, planes)
    geometry = parse_geometry(sample["geometry"])
    geometry["planes"] = [geometry["planes"][k] for k in decode_planes.tolist()]
    return logits.float().softmax(0).to(torch.float16).cpu(), geometry


@torch.no_grad()
def phenotypes_from_measures(network: torch.nn.Module, volumes: Mapping[str, np.ndarray | None]) -> np.ndarray | None:
    """(K,) phenotypes (physical units) from the measure head of ``network`` on a subject's volume curves (see
    :func:`scripts.measures.volume_curves_from_segmentations`); None while the head is unfit."""
    head = network.measure_head
    if not bool(head.fitted):
        return None
    features = torch.as_tensor(measure_features(volumes), dtype=torch.float32, device=head.fitted.device)
    return head.predict_physical(features[None])[0].cpu().numpy()


def reported_phenotypes(
    network: torch.nn.Module, from_embedding: np.ndarray, volumes: Mapping[str, np.ndarray | None]
) -> tuple[np.ndarray, str, list[str]]:
    """The (K,) phenotypes inference reports, the head they come from and the phenotypes left empty (NaN) because
    no heart has their value (:func:`scripts.measures.implausible_values`).

    The measure head's where it is fit and the segmentation measured an LV (its measures hinge on the SA stack;
    without one they would all be imputed), with the phenotypes of chambers whose view is missing left empty rather
    than regressed from the other chambers; else ``from_embedding``, the phenotype head's.
    """
    values, method = from_embedding.astype(np.float64), "phenotype_head"
    lv = volumes.get("LVBP")
    if lv is not None and np.max(lv) > 0:
        from_measures = phenotypes_from_measures(network, volumes)
        if from_measures is not None:
            values, method = from_measures.astype(np.float64), "measure_head"
            values[[PHENOTYPE_NAMES.index(name) for name in unmeasurable_phenotypes(volumes)]] = np.nan
    implausible = implausible_values(dict(zip(PHENOTYPE_NAMES, values.tolist())))
    values[[PHENOTYPE_NAMES.index(name) for name in implausible]] = np.nan
    return values, method, implausible


def segment_input_planes(
    network: torch.nn.Module,
    load_subject: LoadCineSubjectd,
    item: Mapping[str, Any],
    sample: Mapping[str, Any],
    probabilities: torch.Tensor,
    device: torch.device,
    precision: str = "auto",
    subject: Subject | None = None,
    centre_shifts_px: Sequence[Sequence[float]] = (),
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[int]]:
    """Labels of every input plane in its own shape, and the SA slices left unsegmented (normally none).

    ``probabilities`` (C, P, T, H, W) are the canonical prediction of ``sample`` (:func:`predict_sample`). Further
    passes of ``network`` add to it:

    - extra SA passes cover the slices of the stack that the canonical grid skipped. An extra pass encodes all planes
      (the LA views inform the SA slices) but decodes only its SA slices;
    - ``centre_shifts_px``: test-time shifts, one more canonical pass (and its extra SA passes) per (u, v) shift of
      the heart centre in canonical pixels (``LoadCineSubjectd.centre_shift_px``), so every slice is predicted again
      with the patch grid elsewhere on the heart.

    :func:`scripts.canonical.probabilities_to_plane_labels` writes the mean probabilities of all passes back. A
    pass's sample comes through ``load_subject``'s cache when it has one (training caches the extra SA stacks too,
    see ``RandSAStackd``), else from ``subject`` (the files of ``item``, already read), else from the files read once
    for all passes.

    Returns:
        file stem -> (labels uint8 (X, Y, S, T), affine (4, 4)); the SA slice
        indices that no pass covered.
    """

    def load_pass(shift_px: Sequence[float], sa_slices: Sequence[int] | None = None) -> dict[str, Any]:
        nonlocal subject  # the files, read on the first pass that needs them
        loader = copy.copy(load_subject)
        loader.centre_shift_px, loader.sa_slice_indices = [float(x) for x in shift_px], sa_slices
        if subject is None:
            subject = load_subject.read_files(item)
        return loader(dict(item), subject)

    def extra_sa_passes(canonical: Mapping[str, Any], shift_px: Sequence[float]) -> list[tuple[torch.Tensor, dict]]:
        covered = [r["slice"] for r in parse_geometry(canonical["geometry"])["planes"] if r["source"] == SA_PLANE]
        passes = []
        for sa_slices in plan_sa_passes(canonical["geometry"], covered):
            extra = load_pass(shift_px, sa_slices)
            records = parse_geometry(extra["geometry"])["planes"]
            sa_planes = [k for k, record in enumerate(records) if record["source"] == SA_PLANE]
            passes.append(predict_pass(network, extra, device, precision, sa_planes))
        return passes

    passes = [(probabilities, sample["geometry"]), *extra_sa_passes(sample, load_subject.centre_shift_px)]
    for shift_px in centre_shifts_px:
        shifted = load_pass(shift_px)
        passes.append(predict_pass(network, shifted, device, precision))
        passes += extra_sa_passes(shifted, shift_px)
    outputs = probabilities_to_plane_labels(passes)
    uncovered: list[int] = []
    if SA_PLANE in outputs:
        sa_labels = outputs[SA_PLANE][0]
        uncovered = [z for z in range(sa_labels.shape[2]) if (sa_labels[:, :, z] == UNLABELLED).all()]
    for array, _ in outputs.values():
        array[array == UNLABELLED] = 0
    return outputs, uncovered


def segment_subject(
    network: torch.nn.Module,
    load_subject: LoadCineSubjectd,
    item: Mapping[str, Any],
    device: torch.device,
    precision: str = "auto",
    centre_shifts_px: Sequence[Sequence[float]] = (),
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, tuple[np.ndarray, np.ndarray]], list[int]]:
    """Load one datalist ``item`` (its files read once for all passes) and segment it (``centre_shifts_px``: the
    test-time shifts of :func:`segment_input_planes`).

    Returns:
        the canonical sample; its :func:`predict_sample` result; and :func:`segment_input_planes`' labels of every
        input plane and SA slices left unsegmented.
    """
    files = load_subject.read_files(item)
    sample = load_subject(dict(item), files)
    prediction = predict_sample(network, sample, device, precision)
    planes, uncovered = segment_input_planes(
        network, load_subject, item, sample, prediction["probabilities"], device, precision, files, centre_shifts_px
    )
    return sample, prediction, planes, uncovered


def is_dicom_file(path: Path) -> bool:
    """True for a file with the DICOM preamble magic ``DICM`` at byte 128."""
    try:
        with open(path, "rb") as stream:
            stream.seek(128)
            return stream.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom_study(folder: Path) -> bool:
    """A folder (any nesting) holding at least one DICOM file and no NIfTI subject files."""
    if is_subject_folder(folder):
        return False
    return any(p.is_file() and is_dicom_file(p) for p in folder.rglob("*"))


class CohortPredictor:
    """Segment, phenotype and embed every subject found under a path.

    Args:
        network: a ``scripts.net.CineHeartNet`` (already on ``device``).
        load_subject: the canonical loader of the config (``LoadCineSubjectd``); its grid must match training.
        checkpoint: weights to load before predicting (a state dict file); None keeps the network's weights.
        output_dir: where per-subject folders and the cohort table are written.
        device: torch device of the network.
        precision: "auto" (bf16 autocast where fast) or "fp32".
        centre_shifts_px: test-time shifts of the crop, (u, v) canonical pixels each (see
            :func:`segment_input_planes`); empty: one pass.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        load_subject: LoadCineSubjectd,
        checkpoint: str | None,
        output_dir: str,
        device: torch.device | str = "cpu",
        precision: str = "auto",
        centre_shifts_px: Sequence[Sequence[float]] = (),
    ) -> None:
        self.network = network
        self.load_subject = load_subject
        self.checkpoint = checkpoint
        self.output_dir = Path(output_dir)
        self.device = torch.device(device)
        self.precision = precision
        self.centre_shifts_px = [[float(x) for x in shift] for shift in centre_shifts_px]

    def resolve_inputs(self, input_path: str | os.PathLike) -> list[dict[str, Any]]:
        """Datalist items for a subject folder, a dataset folder, or DICOM studies (converted first)."""
        path = Path(input_path)
        if not path.exists():
            raise FileNotFoundError(f"input {path} does not exist: pass --dataset_dir with a subject or dataset folder")
        if path.is_dir() and is_dicom_study(path) and not any(is_subject_folder(p) for p in path.iterdir()):
            studies = [p for p in sorted(path.iterdir()) if p.is_dir() and is_dicom_study(p)]
            return [self.convert_dicom(study) for study in (studies or [path])]
        return discover_subjects(path)

    def convert_dicom(self, study: Path) -> dict[str, Any]:
        from scripts.dicom import convert_study

        converted = self.output_dir / study.name / "converted"
        logger.info(f"converting DICOM study {study} -> {converted}")
        convert_study(study, converted)
        return {"subject": str(converted), "id": study.name}

    @property
    def model(self) -> torch.nn.Module:
        """The network without a (Distributed)DataParallel wrapper: inference calls its methods directly."""
        return self.network.module if hasattr(self.network, "module") else self.network

    def predict_subject(self, item: Mapping[str, Any]) -> dict[str, Any]:
        sample, result, planes, sa_slices_unsegmented = segment_subject(
            self.model, self.load_subject, item, self.device, self.precision, self.centre_shifts_px
        )
        subject_id = sample["id"]
        subject_dir = self.output_dir / subject_id
        for stem, (array, affine) in planes.items():
            save_nifti_atomic(array.astype(np.uint8), affine, subject_dir / f"seg_{stem}.nii.gz")
        from_embedding = {name: float(v) for name, v in zip(PHENOTYPE_NAMES, result["phenotypes"].tolist())}
        volumes = volume_curves_from_segmentations(planes)
        measured = phenotypes_from_volumes(volumes)
        values, method, implausible = reported_phenotypes(self.model, result["phenotypes"].numpy(), volumes)
        phenotypes = dict(zip(PHENOTYPE_NAMES, values.tolist()))
        write_json_atomic(
            {
                "subject": subject_id,
                "units": PHENOTYPE_UNITS,
                "phenotypes": {k: json_number(v) for k, v in phenotypes.items()},
                # measure_head: regressed on what is measured on the segmentation; phenotype_head: on the embedding
                # (weights without a fit measure head, or no LV found to measure)
                "phenotypes_method": method,
                "phenotypes_from_embedding": from_embedding,
                "phenotypes_from_segmentation": {k: json_number(v) for k, v in measured.items()},
            },
            subject_dir / "phenotypes.json",
        )
        with atomic_path(subject_dir / "embedding.npy") as temp_path:
            np.save(temp_path, result["embedding"].numpy().astype(np.float32))
        geometry = parse_geometry(sample["geometry"])
        plane_names = [record["name"] for record in geometry["planes"]]
        missing = [name for name, present in zip(plane_names, sample["plane_mask"].tolist()) if not present]
        report = {
            "subject": subject_id,
            "source": str(item["subject"]),
            "segmented_planes": sorted(planes),
            "sa_slices_unsegmented": sa_slices_unsegmented,
            "canonical_planes_missing": missing,
            "heart_centre_method": geometry.get("centre_method"),
            "problems": [p for p in sample["problems"].split("\n") if p],
            # chambers whose measured ES (or minimum) volume exceeded the ED (maximum) one: SV and EF left empty
            "ejection_not_measured": implausible_ejections(measured),
            # phenotypes left empty because the head gave a value no heart has (e.g. a scan far from its training data)
            "phenotypes_implausible": implausible,
        }
        write_json_atomic(report, subject_dir / "report.json")
        if missing:
            logger.warning(f"{subject_id}: planes missing (reported, not invented): {', '.join(missing)}")
        return {
            "estimated": {"subject": subject_id, **phenotypes},
            "from_embedding": {"subject": subject_id, **from_embedding},
            "measured": {"subject": subject_id, **measured},
        }

    def run(self, input_path: str | os.PathLike) -> dict[str, Any]:
        if self.checkpoint:
            load_network_weights(self.network, self.checkpoint)
        self.network.eval()
        items = self.resolve_inputs(input_path)
        if not items:
            raise FileNotFoundError(f"no subject found under {input_path}: expected sa.nii.gz / la_*.nii.gz or DICOM")
        rows, failures = [], []
        for item in items:
            name = item.get("id") or Path(item["subject"]).name
            try:
                rows.append(self.predict_subject(item))
                logger.info(f"{name}: done")
            except Exception as err:  # a batch job keeps going past a bad subject, and says why it failed
                logger.error(f"{name}: skipped: {err}")
                failures.append({"subject": name, "error": str(err)})
        write_phenotype_csv([r["estimated"] for r in rows], self.output_dir / "phenotypes.csv")
        write_phenotype_csv([r["from_embedding"] for r in rows], self.output_dir / "phenotypes_from_embedding.csv")
        write_phenotype_csv([r["measured"] for r in rows], self.output_dir / "phenotypes_from_segmentation.csv")
        summary = {
            "done": [r["estimated"]["subject"] for r in rows],
            "failed": failures,
            "output_dir": str(self.output_dir),
        }
        write_json_atomic(summary, self.output_dir / "summary.json")
        print(f"segmentations, phenotypes and embeddings of {len(rows)} subject(s) in {self.output_dir}")
        if failures:
            print(f"{len(failures)} subject(s) failed, see {self.output_dir / 'summary.json'}")
        return summary
