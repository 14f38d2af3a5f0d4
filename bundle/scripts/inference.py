"""Cohort inference: every plane and frame segmented, phenotypes estimated, embedding written, per subject.

Per subject ``<output_dir>/<id>/``: ``seg_<plane>.nii.gz`` for every input plane in that plane's own shape and
affine, ``phenotypes.json``, ``embedding.npy``, ``report.json`` (planes used, missing, problems) and, unless switched
off, ``volume_curves.csv`` / ``.json`` (chamber volumes per frame and the cardiac phases) and, when the input was
DICOM, ``dicom_seg/`` (DICOM SEG referencing the source images, :mod:`scripts.dicom_seg`); for the cohort
``phenotypes.csv``, ``phenotypes_from_embedding.csv``, ``phenotypes_from_segmentation.csv`` and ``errors.csv``, a row
added as each subject finishes (a stopped run keeps them), and ``summary.json`` (subjects done and failed) at the end.
A bad subject is reported and skipped. The segmentation itself is
:class:`scripts.subject_segmenter.SubjectSegmenter`'s; this module finds the subjects and writes the files.

Phenotypes come three ways: measured on the segmentations (:mod:`scripts.measures`), regressed on the embedding by
the phenotype head (the paper's linear head), and regressed on those measures by the measure head. ``phenotypes``
(json and csv) is the measure head's where the weights have it fit and an LV was measured, else the phenotype
head's; ``phenotypes_method`` says which. A value no heart has is left empty there and named in ``report.json``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from scripts.blood_pool_signal import subject_blood_pool_signal
from scripts.cohort_report import checked_colour_by, write_cohort_report
from scripts.dicom import REPORT_NAME, convert_study, dicom_studies, is_dicom_study
from scripts.dicom_seg import write_dicom_segs
from scripts.files import (
    atomic_path,
    json_number,
    remove_partial_files,
    save_nifti_atomic,
    write_json_atomic,
    write_text_atomic,
)
from scripts.flags import as_flag
from scripts.labels import ALL_PLANE_FILES, PHENOTYPE_NAMES, PHENOTYPE_UNITS, SA_PLANE
from scripts.measures import (
    implausible_ejections,
    implausible_values,
    measure_features,
    phenotype_planes,
    phenotypes_from_volumes,
    unmeasurable_phenotypes,
    volume_curves_from_segmentations,
)
from scripts.progress import progress_eta
from scripts.quality_control import QC_COLUMNS, flag_summary, quality_control
from scripts.sample_geometry import parse_geometry
from scripts.subject import discover_subjects, is_subject_folder
from scripts.subject_report import write_subject_report
from scripts.subject_segmenter import SubjectSegmentation, SubjectSegmenter
from scripts.volume_curves import (
    curve_frame_interval_ms,
    plane_frame_interval_ms,
    volume_curves_record,
    write_volume_curves,
)
from scripts.weights import load_network_weights

logger = logging.getLogger(__name__)


#: Columns of the cohort tables that link a subject converted from DICOM back to the hospital's records.
IDENTIFIER_COLUMNS = ("patient_id", "study_instance_uid", "series_instance_uids")
#: the columns of ``errors.csv``: a subject the run skipped and why
ERROR_COLUMNS = ("subject", "error")
#: the cohort-table column saying where a row's values come from: ``segmentation`` (measured on it),
#: ``measure_head`` (regressed on those measures) or ``phenotype_head`` (regressed on the embedding alone, e.g. when
#: the SA stack is missing and the LV could not be measured)
SOURCE_COLUMN = "phenotypes_source"
#: the cohort-table column listing the plane files a row's values rest on (";"-joined): the segmented planes, whose
#: measures the measure head and whose embedding the phenotype head read; of the measured values each chamber's own
#: views (``phenotypes_from_segmentation_planes`` of ``phenotypes.json``)
PLANES_COLUMN = "planes"


def dicom_identifiers(subject_folder: str | os.PathLike) -> dict[str, str]:
    """The DICOM identifiers of a subject folder written by the DICOM conversion (its ``conversion.json``):
    :data:`IDENTIFIER_COLUMNS`, the series as ``plane=uid|uid;plane=uid``; empty when it was not converted."""
    report_path = Path(subject_folder) / REPORT_NAME
    if not report_path.is_file():
        return {}
    identifiers = json.loads(report_path.read_text()).get("identifiers") or {}
    series = identifiers.get("series_instance_uids") or {}
    return {
        "patient_id": identifiers.get("patient_id", ""),
        "study_instance_uid": identifiers.get("study_instance_uid", ""),
        "series_instance_uids": ";".join(f"{stem}={'|'.join(uids)}" for stem, uids in sorted(series.items())),
    }


def conversion_problems(subject_folder: str | os.PathLike) -> list[str]:
    """What the DICOM conversion of a subject folder repaired or dropped (its ``conversion.json``), one line per file
    or slice: an image whose geometry was taken from the other phases of its slice, a damaged file and the slice
    positions dropped with it, a repeated image whose pixels differ from the one kept; empty when it was not
    converted."""
    report_path = Path(subject_folder) / REPORT_NAME
    if not report_path.is_file():
        return []
    report = json.loads(report_path.read_text())
    lines = [f"DICOM {entry['file']}: {entry['repair']}" for entry in report.get("repaired_files") or []]
    lines += [f"DICOM {entry['file']}: dropped, {entry['reason']}" for entry in report.get("dropped_files") or []]
    lines += [
        f"DICOM series {entry['series_number']}: slice at {entry['position_along_normal_mm']:.1f} mm dropped "
        f"({len(entry['files'])} images): {entry['reason']}"
        for entry in report.get("dropped_slices") or []
    ]
    lines += [
        f"DICOM {entry['file']}: ignored, {entry['reason']}"
        for entry in report.get("ignored_files") or []
        if entry.get("pixels_differ")
    ]
    return lines


def unusable_folder_reason(folder: Path) -> str | None:
    """Why a folder of a dataset that is neither a subject folder nor a DICOM study cannot be segmented, when it
    looks meant to be one: empty, or holding NIfTI files none of which is named as a plane; None for a folder of
    other files (split files, notes), which is not a subject."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    if not files:
        return f"{folder} is empty: no images to segment (an export that failed?); remove it or fill it"
    nifti = sorted(p.name for p in files if p.name.endswith((".nii", ".nii.gz")))
    if nifti:
        expected = ", ".join(f"{stem}.nii.gz" for stem in ALL_PLANE_FILES)
        return f"{folder} holds NIfTI files ({', '.join(nifti[:4])}) but none named as a plane: name them {expected}"
    return None


def phenotype_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The columns of a phenotype table of ``rows``: ``subject``, :data:`IDENTIFIER_COLUMNS` where a row has one,
    :data:`SOURCE_COLUMN` (where the values come from) and :data:`PLANES_COLUMN` (the planes they rest on) where a row
    has them, :data:`PHENOTYPE_NAMES` (mL, %, g) and the :data:`scripts.quality_control.QC_COLUMNS` the rows have.
    More rows never remove a column."""
    identifiers = [c for c in IDENTIFIER_COLUMNS if any(row.get(c) for row in rows)]
    qc = [c for c in QC_COLUMNS if any(c in row for row in rows)]
    source = [c for c in (SOURCE_COLUMN, PLANES_COLUMN) if any(c in row for row in rows)]
    return ["subject", *identifiers, *source, *PHENOTYPE_NAMES, *qc]


def csv_text(rows: list[dict[str, Any]], fieldnames: list[str], header: bool = True) -> str:
    """``rows`` as CSV lines of the columns ``fieldnames`` (others ignored), after the header unless ``header`` is
    false; floats with 3 decimals, unknown ones (NaN) empty."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fieldnames, extrasaction="ignore")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow(
            {k: (("" if np.isnan(v) else f"{v:.3f}") if isinstance(v, float) else v) for k, v in row.items()}
        )
    return buffer.getvalue()


class CohortTable:
    """A cohort CSV table written as the subjects finish, so that a run stopped part-way (killed, out of time)
    leaves the rows of the subjects it finished; once complete it holds what writing all its rows at once writes.

    Each row is appended to the file and flushed; a row that brings a column the earlier rows lacked (a subject
    converted from DICOM after NIfTI ones) rewrites the table, atomically, under the new header.

    Args:
        path: the table's file.
        columns: the table's columns for the rows so far.
        keep_empty: a table without rows is a header alone (else no file: ``errors.csv`` exists only when a subject
            failed).
    """

    def __init__(
        self, path: Path, columns: Callable[[list[dict[str, Any]]], list[str]], keep_empty: bool = True
    ) -> None:
        self.path, self.columns, self.keep_empty = path, columns, keep_empty
        self.rows: list[dict[str, Any]] = []
        self.fieldnames: list[str] = []

    def start(self) -> None:
        """Replace an earlier run's table with an empty one: its rows come back only as this run keeps or redoes
        their subjects, so that none is written twice."""
        self.rows = []
        self.fieldnames = self.columns(self.rows)
        if self.keep_empty:
            write_text_atomic(csv_text(self.rows, self.fieldnames), self.path)
        else:
            self.path.unlink(missing_ok=True)

    def append(self, row: dict[str, Any]) -> None:
        """Add one subject's row to the file."""
        self.rows.append(row)
        fieldnames = self.columns(self.rows)
        if fieldnames != self.fieldnames or not self.path.is_file():
            self.fieldnames = fieldnames
            write_text_atomic(csv_text(self.rows, fieldnames), self.path)
            return
        # one short write of a whole line: a process killed around it leaves the line or nothing
        with open(self.path, "a", newline="") as handle:
            handle.write(csv_text([row], fieldnames, header=False))


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


#: a subject's rows of the cohort tables, written after every other file of the subject: its presence marks the
#: subject's folder complete, and ``skip_existing`` reads the rows back instead of predicting the subject again
COHORT_ROWS_NAME = "cohort_rows.json"


def write_cohort_rows(rows: Mapping[str, Mapping[str, Any]], path: str | os.PathLike) -> None:
    """Write a subject's rows (``{table: {column: value}}``, as :meth:`CohortPredictor.write_subject` returns
    them) as JSON, unknown values (NaN) as null."""
    record = {
        table: {k: json_number(v) if isinstance(v, float) else v for k, v in row.items()} for table, row in rows.items()
    }
    write_json_atomic(record, path)


def read_cohort_rows(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The rows :func:`write_cohort_rows` wrote, unknown phenotypes NaN again."""
    record = json.loads(Path(path).read_text())
    return {
        table: {k: float("nan") if v is None and k in PHENOTYPE_NAMES else v for k, v in row.items()}
        for table, row in record.items()
    }


def submit(executor: Executor | None, function: Callable[..., Any], *args: Any) -> Future:
    """``function(*args)`` on ``executor``, or run now (None) with its result or exception in a finished future."""
    if executor is not None:
        return executor.submit(function, *args)
    future: Future = Future()
    try:
        future.set_result(function(*args))
    except Exception as err:
        future.set_exception(err)
    return future


class CohortPredictor:
    """Segment, phenotype and embed every subject found under a path.

    Args:
        segmenter: the network (already on its device), canonical loader, precision and test-time shifts of the
            config (:class:`scripts.subject_segmenter.SubjectSegmenter`).
        checkpoint: weights to load into the segmenter's network before predicting (a state dict file); None keeps
            the network's weights.
        output_dir: where per-subject folders and the cohort table are written.
        write_volume_curves: write each subject's ``volume_curves.csv`` / ``.json`` (a flag: bool or true/false).
        write_cardiac_phases: add the cardiac phases to them (:mod:`scripts.phases`).
        write_dicom_seg: for a subject converted from DICOM, write a DICOM SEG series per segmented source series
            into its ``dicom_seg`` folder (:mod:`scripts.dicom_seg`); a SEG that cannot be written fails the subject
            (a flag: bool or true/false).
        write_reports: write each subject's ``report.html`` / ``.png`` (:mod:`scripts.subject_report`) and the
            cohort's ``cohort_report.html`` (:mod:`scripts.cohort_report`).
        report_colour_by: the phenotype colouring the cohort report's embedding map.
        quality_control: run :func:`scripts.quality_control.quality_control` on each subject's segmentations: its
            flags in ``report.json`` and their count and summary in the cohort tables (a flag: bool or true/false).
        skip_existing: keep the subjects whose folder an earlier run completed (:data:`COHORT_ROWS_NAME`) as they
            are, their rows read back into the cohort tables, and predict the others (a flag: bool or true/false).
        write_in_background: write each subject's folder (segmentations, tables, curves, reports) in a thread while
            the next subject is read and segmented, so that the network is not idle through the writing; the rows and
            failures still come in the subjects' order (a flag: bool or true/false).
    """

    def __init__(
        self,
        segmenter: SubjectSegmenter,
        checkpoint: str | None,
        output_dir: str,
        write_volume_curves: bool | str = True,
        write_cardiac_phases: bool | str = True,
        write_dicom_seg: bool | str = True,
        write_reports: bool | str = True,
        report_colour_by: str = "LVEF",
        quality_control: bool | str = True,
        skip_existing: bool | str = False,
        write_in_background: bool | str = True,
    ) -> None:
        self.segmenter = segmenter
        self.checkpoint = checkpoint
        self.output_dir = Path(output_dir)
        self.write_volume_curves = as_flag(write_volume_curves, "write_volume_curves")
        self.write_cardiac_phases = as_flag(write_cardiac_phases, "write_cardiac_phases")
        self.run_quality_control = as_flag(quality_control, "quality_control")
        self.write_dicom_seg = as_flag(write_dicom_seg, "write_dicom_seg")
        self.write_reports = as_flag(write_reports, "write_reports")
        self.report_colour_by = checked_colour_by(report_colour_by)
        self.skip_existing = as_flag(skip_existing, "skip_existing")
        self.write_in_background = as_flag(write_in_background, "write_in_background")
        #: the subjects the last run skipped, each {"subject", "error"}
        self.failures: list[dict[str, str]] = []
        #: the cohort tables, by the key of a subject's rows (:meth:`write_subject`)
        self.tables = {
            key: CohortTable(self.output_dir / name, phenotype_columns)
            for key, name in (
                ("estimated", "phenotypes.csv"),
                ("from_embedding", "phenotypes_from_embedding.csv"),
                ("measured", "phenotypes_from_segmentation.csv"),
            )
        }
        # one row per failed subject, for a spreadsheet or a scheduler; absent when none failed
        self.errors = CohortTable(self.output_dir / "errors.csv", lambda rows: list(ERROR_COLUMNS), keep_empty=False)

    def refuse_output_in_input(self, input_path: Path) -> None:
        """Refuse an ``output_dir`` inside the input tree or holding it: ``seg_<plane>.nii.gz`` would be written beside
        (or over) the input's own label files."""
        output, given = self.output_dir.resolve(), input_path.resolve()
        if output.is_relative_to(given) or given.is_relative_to(output):
            raise ValueError(
                f"--output_dir {self.output_dir} {'is inside' if output.is_relative_to(given) else 'holds'} the input "
                f"{input_path}: the segmentations would be written into the input's folders, over its label files; "
                "choose an output folder outside it"
            )

    def resolve_inputs(self, input_path: str | os.PathLike) -> list[dict[str, Any]]:
        """Datalist items for a subject folder, a dataset folder, or DICOM studies (``dicom_study`` items, converted
        one by one by :meth:`convert_dicom` so that a bad study fails alone)."""
        path = Path(input_path)
        if not path.exists():
            raise FileNotFoundError(f"input {path} does not exist: pass --dataset_dir with a subject or dataset folder")
        if path.is_dir() and is_dicom_study(path) and not any(is_subject_folder(p) for p in path.iterdir()):
            return [{"dicom_study": str(study), "id": study.name} for study in dicom_studies(path)]
        items = discover_subjects(path)
        if is_subject_folder(path):
            return items
        # a dataset folder: DICOM studies beside the subject folders are segmented too, and a folder that looks like
        # a subject but cannot be one fails by name instead of being passed over
        for folder in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if is_subject_folder(folder):
                continue
            if is_dicom_study(folder):
                items += [{"dicom_study": str(study), "id": study.name} for study in dicom_studies(folder)]
            elif (reason := unusable_folder_reason(folder)) is not None:
                items.append({"id": folder.name, "unusable": reason})
        return items

    def convert_dicom(self, item: Mapping[str, Any]) -> dict[str, Any]:
        """Convert the DICOM study of a ``dicom_study`` item into ``<output_dir>/<id>/converted``; the subject's
        datalist item."""
        converted = self.output_dir / item["id"] / "converted"
        logger.info(f"converting DICOM study {item['dicom_study']} -> {converted}")
        convert_study(Path(item["dicom_study"]), converted)
        return {"subject": str(converted), "id": item["id"]}

    def write_phenotypes(
        self, subject_id: str, segmentation: SubjectSegmentation, measured: dict[str, float], volumes: Mapping
    ) -> tuple[dict[str, float], dict[str, float], list[str], str]:
        """Write ``phenotypes.json`` (the reported phenotypes, the head they come from, those from the embedding and
        those measured); returns the reported ones, those from the embedding, and the names left empty because no
        heart has their value."""
        from_embedding_values = segmentation.prediction["phenotypes"]
        from_embedding = {name: float(v) for name, v in zip(PHENOTYPE_NAMES, from_embedding_values.tolist())}
        values, method, implausible = reported_phenotypes(self.segmenter.model, from_embedding_values.numpy(), volumes)
        phenotypes = dict(zip(PHENOTYPE_NAMES, values.tolist()))
        record = {
            "subject": subject_id,
            "units": PHENOTYPE_UNITS,
            "phenotypes": {k: json_number(v) for k, v in phenotypes.items()},
            # measure_head: regressed on what is measured on the segmentation; phenotype_head: on the embedding
            # (weights without a fit measure head, or no LV found to measure)
            "phenotypes_method": method,
            "phenotypes_from_embedding": from_embedding,
            "phenotypes_from_segmentation": {k: json_number(v) for k, v in measured.items()},
            # what each value rests on: both heads read every segmented plane (its measures, its embedding); each
            # measured value its chamber's own views
            "phenotypes_planes": sorted(segmentation.planes),
            "phenotypes_from_segmentation_planes": phenotype_planes(segmentation.planes),
        }
        write_json_atomic(record, self.output_dir / subject_id / "phenotypes.json")
        return phenotypes, from_embedding, implausible, method

    def write_report(
        self,
        item: Mapping[str, Any],
        segmentation: SubjectSegmentation,
        measured: dict[str, float],
        implausible: list[str],
        identifiers: Mapping[str, str],
        qc_flags: list[dict[str, str]] | None = None,
    ) -> None:
        """Write ``report.json``: the source, the planes segmented and missing, the heart-centre method, the
        loader's problems, the phenotypes left empty, the DICOM ``identifiers`` (:func:`dicom_identifiers`) and,
        unless switched off (None), the quality-control flags; warn about missing planes."""
        sample = segmentation.sample
        subject_id = sample["id"]
        geometry = parse_geometry(sample["geometry"])
        plane_names = [record["name"] for record in geometry["planes"]]
        missing = [name for name, present in zip(plane_names, sample["plane_mask"].tolist()) if not present]
        report = {
            "subject": subject_id,
            "source": str(item["subject"]),
            "segmented_planes": sorted(segmentation.planes),
            "sa_slices_unsegmented": segmentation.sa_slices_unsegmented,
            # SA slices past the LV apex whose labels were cleared (a blob on the liver or diaphragm)
            "sa_slices_beyond_apex": segmentation.sa_slices_beyond_apex,
            "canonical_planes_missing": missing,
            "heart_centre_method": geometry.get("centre_method"),
            # world (mm) point every crop is centred on (its projection onto each plane)
            "heart_centre_mm": [round(x, 2) for x in geometry["centre_mm"]],
            "problems": [p for p in sample["problems"].split("\n") if p] + conversion_problems(item["subject"]),
            # chambers whose measured ES (or minimum) volume exceeded the ED (maximum) one: SV and EF left empty
            "ejection_not_measured": implausible_ejections(measured),
            # phenotypes left empty because the head gave a value no heart has (e.g. a scan far from its training data)
            "phenotypes_implausible": implausible,
            # PatientID, StudyInstanceUID and the SeriesInstanceUIDs used, when the input was DICOM
            "dicom_identifiers": identifiers,
        }
        if qc_flags is not None:
            # each {"view", "check", "reason"} (scripts/quality_control.py); an empty list: every check passed
            report["quality_control"] = qc_flags
        write_json_atomic(report, self.output_dir / subject_id / "report.json")
        if missing:
            logger.warning(f"{subject_id}: planes missing (reported, not invented): {', '.join(missing)}")

    def write_subject(self, item: Mapping[str, Any], segmentation: SubjectSegmentation) -> dict[str, Any]:
        """Write the folder of one datalist ``item`` from its ``segmentation`` (:meth:`SubjectSegmenter.segment`) and
        its rows of the cohort tables (:data:`COHORT_ROWS_NAME`, last); returns the rows. Runs beside the next
        subject's segmentation when ``write_in_background`` is on: it reads the network's heads but runs no pass."""
        subject_id = segmentation.sample["id"]
        subject_dir = self.output_dir / subject_id
        # each input plane's frame interval (ms; None where its header has no time unit), read once: the written
        # segmentation keeps it as its time spacing (a viewer plays it at the input's pace); the curves are timed by it
        intervals_ms = {stem: plane_frame_interval_ms(item["subject"], stem) for stem in segmentation.planes}
        for stem, (array, affine) in segmentation.planes.items():
            save_nifti_atomic(
                array.astype(np.uint8), affine, subject_dir / f"seg_{stem}.nii.gz", intervals_ms[stem] or 0.0
            )
        for stale in sorted(subject_dir.glob("seg_*.nii.gz")):
            # a plane segmented by an earlier run but missing from this one must not pass for this run's output
            if stale.name.removeprefix("seg_").removesuffix(".nii.gz") not in segmentation.planes:
                logger.warning(
                    f"{subject_id}: removed {stale.name} of an earlier run (that plane is not in this input)"
                )
                stale.unlink()
        if self.write_dicom_seg:
            # fails the subject when a SEG cannot be written: a PACS expecting it must not get a subject without it
            write_dicom_segs(item["subject"], segmentation.planes, subject_dir)
        volumes = volume_curves_from_segmentations(segmentation.planes)
        with_phases = self.write_volume_curves and self.write_cardiac_phases
        phase_signal = None
        if SA_PLANE in segmentation.planes and (with_phases or self.run_quality_control):
            sa_labels = segmentation.planes[SA_PLANE][0]
            phase_signal = subject_blood_pool_signal(item["subject"], sa_labels, segmentation.images.get(SA_PLANE))
        measured = phenotypes_from_volumes(volumes)
        phenotypes, from_embedding, implausible, method = self.write_phenotypes(
            subject_id, segmentation, measured, volumes
        )
        with atomic_path(subject_dir / "embedding.npy") as temp_path:
            np.save(temp_path, segmentation.prediction["embedding"].numpy().astype(np.float32))
        identifiers = dicom_identifiers(item["subject"])
        qc_flags = quality_control(segmentation.planes, volumes, phase_signal) if self.run_quality_control else None
        qc_columns = flag_summary(qc_flags) if qc_flags is not None else {}
        self.write_report(item, segmentation, measured, implausible, identifiers, qc_flags)
        if self.write_volume_curves:
            interval_ms = curve_frame_interval_ms(intervals_ms)
            record = volume_curves_record(subject_id, volumes, interval_ms, self.write_cardiac_phases, phase_signal)
            write_volume_curves(record, subject_dir)
        if self.write_reports:
            written = {stem: labels for stem, (labels, _) in segmentation.planes.items()}
            write_subject_report(item["subject"], subject_dir, segmentation.images, written)
        origin = {"subject": subject_id, **identifiers, PLANES_COLUMN: ";".join(sorted(segmentation.planes))}
        rows = {
            "estimated": {**origin, SOURCE_COLUMN: method, **phenotypes, **qc_columns},
            "from_embedding": {**origin, SOURCE_COLUMN: "phenotype_head", **from_embedding},
            "measured": {**origin, SOURCE_COLUMN: "segmentation", **measured, **qc_columns},
        }
        write_cohort_rows(rows, subject_dir / COHORT_ROWS_NAME)
        return rows

    def add_subject_rows(self, rows: Mapping[str, dict[str, Any]]) -> None:
        """Append a finished subject's rows (:meth:`write_subject`) to the three cohort tables."""
        for key, table in self.tables.items():
            table.append(rows[key])

    def add_failure(self, where: str, name: str, err: Exception, failures: list[dict[str, str]]) -> None:
        """Log and record a subject that failed (``where``: its place in the run) in ``failures`` and ``errors.csv``."""
        logger.error(f"{where}: skipped: {err}")
        failures.append({"subject": name, "error": str(err)})
        self.errors.append(failures[-1])

    def write_cohort(self, rows: list[dict[str, Any]], failures: list[dict[str, str]]) -> dict[str, Any]:
        """Write ``summary.json`` (subjects done and failed) and the cohort report; returns the summary. The three
        cohort tables and ``errors.csv`` (subject, error) were written as the subjects finished."""
        summary = {
            "done": [r["estimated"]["subject"] for r in rows],
            "failed": failures,
            "output_dir": str(self.output_dir),
        }
        write_json_atomic(summary, self.output_dir / "summary.json")
        if self.write_reports and rows:
            write_cohort_report(self.output_dir, summary["done"], self.report_colour_by)
        return summary

    def run(self, input_path: str | os.PathLike) -> dict[str, Any]:
        """Predict every subject under ``input_path`` (a subject, a dataset or DICOM studies), keeping going past a
        subject that fails; returns the summary."""
        self.refuse_output_in_input(Path(input_path))
        if self.checkpoint:
            load_network_weights(self.segmenter.network, self.checkpoint)
        self.segmenter.network.eval()
        items = self.resolve_inputs(input_path)
        if not items:
            raise FileNotFoundError(f"no subject found under {input_path}: expected sa.nii.gz / la_*.nii.gz or DICOM")
        rows, failures = [], []
        # files a run killed mid-write left unfinished: the cohort tables', then each subject's
        remove_partial_files(self.output_dir)
        # an earlier run's rows and failures are not this run's: its complete subjects come back as they are kept
        for table in (*self.tables.values(), self.errors):
            table.start()
        started, done = time.monotonic(), 0
        # the subject whose folder is being written (index, name, its rows to come) while the next one is segmented
        writing: tuple[int, str, Future] | None = None

        def finish_writing() -> None:
            """Wait for the subject being written and take its rows, or its failure, into the cohort tables."""
            nonlocal writing, done
            if writing is None:
                return
            (index, name, future), writing = writing, None
            try:
                rows.append(future.result())
            except Exception as err:  # its folder could not be written: the subject fails, the batch goes on
                self.add_failure(f"[{index}/{len(items)}] {name}", name, err, failures)
                return
            self.add_subject_rows(rows[-1])
            done += 1
            logger.info(f"[{index}/{len(items)}] {name}: done; {progress_eta(started, done, len(items) - index)}")

        with (
            ThreadPoolExecutor(1, thread_name_prefix="write-subject") if self.write_in_background else nullcontext(None)
        ) as writer:
            for index, item in enumerate(items, start=1):
                name = item.get("id") or Path(item["subject"]).name
                completed = self.output_dir / name / COHORT_ROWS_NAME
                for folder in (completed.parent, completed.parent / "converted"):
                    remove_partial_files(folder)
                if self.skip_existing and completed.is_file():
                    finish_writing()
                    rows.append(read_cohort_rows(completed))
                    self.add_subject_rows(rows[-1])
                    logger.info(f"[{index}/{len(items)}] {name}: complete from an earlier run, kept (skip_existing)")
                    continue
                try:
                    # a subject stopped half-way through this time must not pass for complete at the next run
                    completed.unlink(missing_ok=True)
                    if "unusable" in item:
                        raise ValueError(item["unusable"])
                    if "dicom_study" in item:
                        item = self.convert_dicom(item)
                    segmentation = self.segmenter.segment(item)
                except Exception as err:  # a batch job keeps going past a bad subject, and says why it failed
                    finish_writing()
                    self.add_failure(f"[{index}/{len(items)}] {name}", name, err, failures)
                    continue
                finish_writing()
                writing = (index, name, submit(writer, self.write_subject, item, segmentation))
            finish_writing()
        summary = self.write_cohort(rows, failures)
        self.failures = failures
        print(f"segmentations, phenotypes and embeddings of {len(rows)} subject(s) in {self.output_dir}")
        if failures:
            print(f"{len(failures)} subject(s) failed, see {self.output_dir / 'summary.json'}")
        return summary

    def exit_status(self) -> None:
        """End the process with status 1, naming the failed subjects, if the last :meth:`run` skipped any: a batch
        job's caller (a scheduler, a PACS script) must see a failure without reading ``summary.json``."""
        if self.failures:
            names = ", ".join(failure["subject"] for failure in self.failures)
            raise SystemExit(
                f"{len(self.failures)} subject(s) failed ({names}); see {self.output_dir / 'summary.json'}"
            )
