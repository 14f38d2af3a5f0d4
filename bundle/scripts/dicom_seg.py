"""DICOM SEG of a subject's segmentations when its input was DICOM, for a PACS to store beside the source series.

Every source series of a segmented plane gets one DICOM SEG series (BINARY, one segment per class present in that
series, SNOMED-CT coded), written with highdicom and referencing the source MR instances. highdicom builds a SEG
only from source images at distinct positions, and a cine repeats each position once per cardiac phase: the SEG
series therefore holds one instance per phase, covering that phase's slices, so that all slices and frames of the
cine are segmented and each SEG frame references exactly one source instance (a SEG instance also spans one frame
of reference: where a series gives its images several, a phase gets one instance per frame of reference). Files:
``<subject>/dicom_seg/seg_<plane>_series<SeriesNumber>_phase<tt>[_part<n>].dcm`` (``tt`` and ``n`` from 1).

Grid: the DICOM conversion (:mod:`scripts.dicom`) stores pixels transposed, voxel (x, y, k, t) = (column, row) of
the image ``slices[k]["files"][t]`` of its ``conversion.json``; a SEG frame of that image is therefore
``(labels[:, :, k, t] == class).T`` (rows, columns). The affine of each plane is checked against every referenced
instance's own position, orientation and pixel spacing before writing, so that a grid the converter did not write
is refused rather than misplaced.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.sr.codedict import codes
from pydicom.valuerep import DA, DT, TM

from scripts.dicom import LPS_TO_RAS, REPORT_NAME
from scripts.files import atomic_path, remove_partial_files
from scripts.labels import CLASS_NAMES

logger = logging.getLogger(__name__)

#: the subject subfolder holding the DICOM SEG instances (one folder to send to a PACS)
SEG_FOLDER = "dicom_seg"
#: SNOMED-CT segmented property type of each class. The code dictionary has no blood-pool or cavity concepts, so
#: each blood pool is coded by its chamber (the segment label names the blood pool):
#: 1 LVBP: 87878005 Left ventricle; 2 LVMYO: 49848007 Left ventricle myocardium; 3 RVBP: 53085002 Right ventricle;
#: 4 LABP: 82471001 Left atrium; 5 RABP: 73829009 Right atrium.
SEGMENT_TYPES = {
    1: codes.SCT.LeftVentricle,
    2: codes.SCT.LeftVentricleMyocardium,
    3: codes.SCT.RightVentricle,
    4: codes.SCT.LeftAtrium,
    5: codes.SCT.RightAtrium,
}
#: added to the source SeriesNumber for the SEG series' number: lists the SEG after the acquisitions and keeps the
#: source's number in its last digits, without taking a number the scanner uses
SERIES_NUMBER_OFFSET = 100000
#: the converter fits one line through the slice positions; a referenced image may lie this far from its voxel (mm)
POSITION_TOL_MM = 0.1
#: largest difference allowed between an image's direction cosines times spacing and the affine's columns (mm)
AXIS_TOL_MM = 1e-3
METADATA_PATH = Path(__file__).resolve().parents[1] / "configs" / "metadata.json"


class DicomSegError(RuntimeError):
    """A DICOM SEG cannot be written; the message names the subject, the plane and the source series."""


@dataclass(frozen=True)
class SourceImage:
    """One source instance of a converted plane and the voxel indices it was written to."""

    path: Path
    slice_index: int  # k of voxels (:, :, k, t)
    frame_index: int  # t of voxels (:, :, k, t)
    sop_instance_uid: str  # as the conversion recorded it; "" in reports written before it did
    series_instance_uid: str


def algorithm_identification(metadata: Mapping[str, Any]) -> hd.AlgorithmIdentificationSequence:
    """The bundle's name and version (``configs/metadata.json``) as the SEG's algorithm identification."""
    return hd.AlgorithmIdentificationSequence(
        name=metadata["name"], family=codes.cid7162.ArtificialIntelligence, version=metadata["version"]
    )


def plane_source_images(entry: Mapping[str, Any], study_dir: Path) -> list[SourceImage]:
    """The source images of one ``written`` entry of ``conversion.json``, each with its (slice, frame) indices."""
    images = []
    for k, slice_record in enumerate(entry["slices"]):
        frames = len(slice_record["files"])
        uids = slice_record.get("sop_instance_uids") or [""] * frames
        series = slice_record.get("series_instance_uids") or [entry["series_instance_uid"][0]] * frames
        for t, (file, uid, series_uid) in enumerate(zip(slice_record["files"], uids, series)):
            images.append(SourceImage(study_dir / file, k, t, uid, series_uid))
    return images


def _blank_invalid_dates(dataset: pydicom.Dataset) -> pydicom.Dataset:
    """``dataset`` (a header read for the SEG, not written back) with its top-level dates and times that are not
    valid values emptied: anonymised archives hold e.g. StudyDate 20120000 or PatientBirthDate 00000000, which
    highdicom refuses to copy into the SEG; the study stays identified by its StudyInstanceUID."""
    parsers = {"DA": DA, "DT": DT, "TM": TM}
    for element in dataset:
        if element.VR in parsers and isinstance(element.value, str) and element.value:
            try:
                parsers[element.VR](element.value)
            except ValueError:
                element.value = ""
    return dataset


def _check_image_on_grid(dataset: pydicom.Dataset, image: SourceImage, affine_ras: np.ndarray) -> str | None:
    """Why ``dataset`` does not lie on voxels (:, :, k) of ``affine_ras`` (4x4, voxel -> RAS mm) with its columns
    along x and its rows along y, or None when it does (within :data:`POSITION_TOL_MM` / :data:`AXIS_TOL_MM`)."""
    affine_lps = np.linalg.inv(LPS_TO_RAS) @ affine_ras
    orientation = np.asarray(dataset.ImageOrientationPatient, dtype=float)
    row_spacing, col_spacing = (float(v) for v in dataset.PixelSpacing)
    origin = affine_lps[:3] @ np.array([0.0, 0.0, image.slice_index, 1.0])
    offset = float(np.linalg.norm(np.asarray(dataset.ImagePositionPatient, dtype=float) - origin))
    if offset > POSITION_TOL_MM:
        return f"ImagePositionPatient {offset:.3f} mm from voxel (0, 0, {image.slice_index})"
    along_x = np.abs(orientation[:3] * col_spacing - affine_lps[:3, 0]).max()
    along_y = np.abs(orientation[3:] * row_spacing - affine_lps[:3, 1]).max()
    if max(along_x, along_y) > AXIS_TOL_MM:
        return "rows and columns do not run along the segmentation's y and x axes"
    return None


def _set_grid_geometry(dataset: pydicom.Dataset, image: SourceImage, affine_ras: np.ndarray) -> None:
    """Give ``dataset`` (a header read for the SEG, not written back) the position, orientation and pixel spacing of
    voxels (:, :, k) of ``affine_ras``: those the DICOM conversion gave an image whose own were missing or unusable
    (taken from the other phases of its slice, ``repaired_files`` of ``conversion.json``)."""
    affine_lps = np.linalg.inv(LPS_TO_RAS) @ affine_ras
    col_spacing, row_spacing = np.linalg.norm(affine_lps[:3, :2], axis=0)
    directions = np.concatenate([affine_lps[:3, 0] / col_spacing, affine_lps[:3, 1] / row_spacing])
    dataset.ImagePositionPatient = [float(v) for v in affine_lps[:3] @ np.array([0.0, 0.0, image.slice_index, 1.0])]
    dataset.ImageOrientationPatient = [float(v) for v in directions]
    dataset.PixelSpacing = [float(row_spacing), float(col_spacing)]


def _read_source_header(image: SourceImage, affine_ras: np.ndarray, repaired: bool = False) -> pydicom.Dataset:
    """The header of a source image, checked to be the instance converted and to lie on its voxels, with invalid
    dates emptied (:func:`_blank_invalid_dates`); ``repaired``: an image whose geometry the conversion took from its
    slice, given that geometry (:func:`_set_grid_geometry`). Headers only: highdicom copies the references and
    geometry, never the source pixels.

    Raises:
        ValueError: the file is missing, holds another instance, or does not lie on the plane's grid.
    """
    if not image.path.is_file():
        raise ValueError(f"source image {image.path} is gone")
    dataset = pydicom.dcmread(image.path, stop_before_pixels=True)
    if image.sop_instance_uid and dataset.SOPInstanceUID != image.sop_instance_uid:
        raise ValueError(f"{image.path} now holds another instance than the one converted")
    if repaired:
        _set_grid_geometry(dataset, image, affine_ras)
    problem = _check_image_on_grid(dataset, image, affine_ras)
    if problem is not None:
        raise ValueError(f"{image.path}: {problem}")
    return _blank_invalid_dates(dataset)


def _series_labels(numbers: Mapping[str, int]) -> dict[str, str]:
    """File-name part per source SeriesInstanceUID: ``series<SeriesNumber>``, with ``_<index>`` where two series of
    one plane share a number (SeriesNumber is not required to be unique)."""
    counts = defaultdict(int)
    for number in numbers.values():
        counts[number] += 1
    return {
        uid: f"series{number}" + (f"_{index}" if counts[number] > 1 else "")
        for index, (uid, number) in enumerate(sorted(numbers.items(), key=lambda item: (item[1], item[0])))
    }


def write_series_segs(
    labels: np.ndarray,
    images: list[SourceImage],
    stem: str,
    series_label: str,
    out_dir: Path,
    algorithm: hd.AlgorithmIdentificationSequence,
    manufacturer: str,
    affine_ras: np.ndarray,
    repaired: frozenset[Path] = frozenset(),
) -> list[Path]:
    """One SEG instance per frame of one source series (per frame of reference where its images have several):
    ``labels`` (X, Y, S, T) uint8 class values of the plane,
    ``images`` that series' source images, ``manufacturer`` the software's makers (the SEG's Manufacturer; model
    name and version are the algorithm's), ``repaired`` the source files whose geometry the conversion took from
    their slice; returns the files written (none when no class is present).

    Raises:
        ValueError: a source image is missing, not the instance recorded, or not on the plane's grid.
    """
    slices = sorted({image.slice_index for image in images})
    present = np.unique(labels[:, :, slices])
    classes = [int(c) for c in present if c in SEGMENT_TYPES]
    if not classes:
        return []
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=CLASS_NAMES[value],
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=SEGMENT_TYPES[value],
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for number, value in enumerate(classes, start=1)
    ]
    seg_series_uid = hd.UID()
    by_frame: dict[int, list[SourceImage]] = defaultdict(list)
    for image in images:
        by_frame[image.frame_index].append(image)
    written = []
    for t in sorted(by_frame):
        frame_images = sorted(by_frame[t], key=lambda image: image.slice_index)
        datasets = [_read_source_header(image, affine_ras, image.path in repaired) for image in frame_images]
        # one SEG instance spans one frame of reference; some archives give every image its own (e.g. Sunnybrook)
        groups: dict[str, list[int]] = defaultdict(list)
        for index, dataset in enumerate(datasets):
            groups[str(dataset.get("FrameOfReferenceUID", ""))].append(index)
        for part, members in enumerate(groups.values(), start=1):
            # (slices, rows, columns, segments): a frame is the transposed (X, Y) slice, one channel per class
            frame_labels = np.stack([labels[:, :, frame_images[i].slice_index, t].T for i in members])
            masks = np.stack([frame_labels == value for value in classes], axis=-1)
            first = datasets[members[0]]
            segmentation = hd.seg.Segmentation(
                source_images=[datasets[i] for i in members],
                pixel_array=masks,
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=descriptions,
                series_instance_uid=seg_series_uid,
                series_number=SERIES_NUMBER_OFFSET + int(first.get("SeriesNumber") or 0),
                sop_instance_uid=hd.UID(),
                instance_number=len(written) + 1,
                manufacturer=manufacturer,
                manufacturer_model_name=algorithm[0].AlgorithmName,
                software_versions=algorithm[0].AlgorithmVersion,
                device_serial_number="none",  # software: no device serial number
                series_description=f"AI segmentation {stem} of series {first.get('SeriesNumber', '')}"[:64],
                content_label="HEART",
                content_description=f"cardiac phase {t + 1} of {len(by_frame)}",
                # every source instance gets its frames, empty ones too: the cine is complete in every SEG series
                omit_empty_frames=False,
            )
            name = f"seg_{stem}_{series_label}_phase{t + 1:02d}" + (f"_part{part}" if len(groups) > 1 else "")
            with atomic_path(out_dir / f"{name}.dcm") as temp_path:
                segmentation.save_as(temp_path)
            written.append(out_dir / f"{name}.dcm")
    return written


def write_dicom_segs(
    subject_dir: str | os.PathLike,
    planes: Mapping[str, tuple[np.ndarray, np.ndarray]],
    out_dir: str | os.PathLike,
) -> list[Path]:
    """Write the DICOM SEG of every segmented plane of a subject folder converted from DICOM (its
    ``conversion.json``) into ``<out_dir>/dicom_seg``, replacing an earlier run's; nothing for a subject given as
    NIfTI. ``planes``: ``{stem: (labels (X, Y, S, T) class values, 4x4 voxel -> RAS mm affine)}`` in each input
    plane's own grid, as inference writes ``seg_<stem>.nii.gz``. Returns the files written.

    Raises:
        DicomSegError: a plane cannot be written, naming the subject, the plane and the source series.
    """
    subject_dir, out_dir = Path(subject_dir), Path(out_dir)
    report_path = subject_dir / REPORT_NAME
    if not report_path.is_file():
        return []
    report = json.loads(report_path.read_text())
    study_dir = Path(report["study_dir"])
    seg_dir = out_dir / SEG_FOLDER
    if seg_dir.is_dir():
        # an earlier run's SEGs would not match this run's segmentations
        remove_partial_files(seg_dir)
        for stale in seg_dir.glob("*.dcm"):
            stale.unlink()
    metadata = json.loads(METADATA_PATH.read_text())
    algorithm = algorithm_identification(metadata)
    repaired = frozenset(study_dir / entry["file"] for entry in report.get("repaired_files", []))
    written = []
    for stem, (labels, affine) in sorted(planes.items()):
        entry = report["written"].get(stem)
        if entry is None:
            raise DicomSegError(f"{out_dir.name}: plane {stem} is not in {report_path}, so its source is unknown")
        source = nib.load(subject_dir / entry["file"])
        if labels.shape != tuple(entry["shape"]) or not np.allclose(affine, source.affine, atol=1e-4):
            raise DicomSegError(
                f"{out_dir.name}: the segmentation of plane {stem} ({labels.shape}) is not on the grid of the "
                f"converted series ({tuple(entry['shape'])}), so it cannot be mapped onto the source images"
            )
        by_series: dict[str, list[SourceImage]] = defaultdict(list)
        for image in plane_source_images(entry, study_dir):
            by_series[image.series_instance_uid].append(image)
        try:
            numbers = {
                uid: int(pydicom.dcmread(images[0].path, stop_before_pixels=True).get("SeriesNumber") or 0)
                for uid, images in by_series.items()
            }
        except (OSError, InvalidDicomError) as err:
            raise DicomSegError(f"{out_dir.name}: plane {stem}: cannot read its source series ({err})") from err
        series_labels = _series_labels(numbers)
        for series_uid, images in by_series.items():
            try:
                files = write_series_segs(
                    labels,
                    images,
                    stem,
                    series_labels[series_uid],
                    seg_dir,
                    algorithm,
                    metadata["authors"],
                    affine,
                    repaired,
                )
            except Exception as err:  # highdicom and pydicom raise many types; the subject fails with this name
                raise DicomSegError(
                    f"{out_dir.name}: DICOM SEG of plane {stem}, series {series_uid} (SeriesNumber "
                    f"{numbers[series_uid]}): {err}"
                ) from err
            if not files:
                logger.warning(f"{out_dir.name}: no class segmented in plane {stem}, series {series_uid}: no SEG")
            written.extend(files)
    return written
