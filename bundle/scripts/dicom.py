"""Convert a DICOM cine MR study into a subject folder (``sa.nii.gz``, ``la_2ch/3ch/4ch.nii.gz``).

The study folder may hold any file names, any nesting, several series and non-DICOM files. Images are
grouped by SeriesInstanceUID and by slice position (ImagePositionPatient projected on the slice normal),
phases are ordered by TriggerTime (InstanceNumber where TriggerTime is missing), and each cine series is
identified as the short-axis (SA) stack or a 2/3/4-chamber long-axis (LA) view, from its SeriesDescription
where that names a view, otherwise from its geometry relative to the SA stack. Anything that cannot be
identified is skipped and listed in ``conversion.json``, never guessed. A damaged file costs its slice position
(:func:`drop_damaged_slices`; inside a stack, also the slices on the shorter side of the gap), not the study, and
of two images at one position and phase one is kept (:func:`resolve_repeated_images`); both are listed there too.

Coordinates: DICOM patient space is LPS millimetres, NIfTI (nibabel) world space is RAS millimetres; the
written affines map voxel (column, row, slice) to RAS. Pixel arrays are stored transposed, as (X, Y) =
(column, row), the usual NIfTI-from-DICOM layout.
"""

from __future__ import annotations

import os
import re
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import get_decoder

from scripts.files import save_nifti_atomic, write_json_atomic
from scripts.labels import ALL_PLANE_FILES
from scripts.subject import is_subject_folder

# Many archives hold UIDs with leading zeros (e.g. Sunnybrook); they still group series correctly, and pydicom warns
# on every lazy access to them, so this one message is silenced (a process-wide filter: the accesses happen later).
warnings.filterwarnings("ignore", message="Invalid value for VR UI")

#: Fewest phases per slice position for a series to count as cine (2-image PSIR/LGE pairs are not cine).
MIN_CINE_PHASES = 5
#: Tolerances for "same orientation" (direction-cosine difference) and "same position" (mm).
ORIENTATION_TOL = 1e-3
POSITION_TOL_MM = 0.05
#: Slice gaps may deviate this much (fraction of the mean gap) before a stack counts as irregular.
SPACING_REL_TOL = 0.05
#: Slices may lie this far (mm) in-plane from the fitted line through the slice positions.
MAX_IN_PLANE_RESIDUAL_MM = 0.05
#: |cos| between an LA plane normal and the long axis must stay below this (plane within ~20 deg of the axis).
LA_NORMAL_MAX_COS = 0.35
#: Of several series of one LA view, those whose planes lie within this angle (deg) of the one nearest to containing
#: the SA long axis count as equally well planned, and the latest of them is taken.
LA_TILT_TIE_DEG = 3.0
#: An SA-parallel single slice has |cos| between its normal and the long axis above this.
SA_NORMAL_MIN_COS = 0.95
#: Typical angle (deg, modulo 180) of each LA view's line in the SA plane, clockwise from the anterior
#: direction when the SA plane is viewed with anterior up and the patient's left on the right:
#: 2ch runs anterior-inferior, 4ch crosses RV and LV lateral wall, 3ch runs through the LVOT
#: (antero-septal to infero-lateral). A view must lie within LA_VIEW_ANGLE_TOL_DEG of its angle.
LA_VIEW_ANGLES_DEG = {"la_2ch": 10.0, "la_4ch": 80.0, "la_3ch": 135.0}
LA_VIEW_ANGLE_TOL_DEG = 22.0
#: Direction from the LV base towards the apex in LPS (left, anterior, inferior) for normal anatomy.
APEX_DIRECTION_LPS = np.array([1.0, -1.0, -1.0]) / np.sqrt(3.0)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
REPORT_NAME = "conversion.json"
#: How a stack whose slices have different phase counts is treated (documented in every report).
FRAME_COUNT_MISMATCH_POLICY = "error"

# SeriesDescription patterns, matched on the lower-cased description with non-alphanumerics as spaces.
_VIEW_PATTERNS = {
    "sa": r"\b(sa|sax|short axis|shortaxis|sa stack|lv sa)\b",
    "la_2ch": r"\b(2ch|2 ch|ch2|2cv|2 chamber|2chamber|two chamber|vla)\b",
    "la_3ch": r"\b(3ch|3 ch|ch3|3cv|3 chamber|3chamber|three chamber|lvot)\b",
    "la_4ch": r"\b(4ch|4 ch|ch4|4cv|4 chamber|4chamber|four chamber|hla)\b",
}
_NON_CINE_PATTERN = (
    r"\b(loc|localiser|localizer|scout|survey|lge|psir|late|delayed|molli|shmolli|t1 ?map|t2 ?map|mapping"
    r"|perfusion|perf|flow|tagging)\b"
)


class DicomConversionError(RuntimeError):
    """A study cannot be converted; the message names the study folder, the file and what to do."""


@dataclass(frozen=True)
class ImageHeader:
    """Geometry and ordering attributes of one single-frame DICOM image (positions in LPS mm)."""

    path: Path
    series_uid: str
    series_number: int
    study_uid: str
    patient_id: str
    description: str
    instance_number: int | None
    trigger_time_ms: float | None
    position: np.ndarray  # (3,) ImagePositionPatient: centre of the first transmitted pixel
    row_dir: np.ndarray  # (3,) direction of increasing column index
    col_dir: np.ndarray  # (3,) direction of increasing row index
    pixel_spacing: tuple[float, float]  # (between rows, between columns) mm
    rows: int
    cols: int
    # what a derived object (a DICOM SEG) references the image by
    sop_instance_uid: str = ""
    sop_class_uid: str = ""
    slice_location_mm: float | None = None

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal (3,), row_dir x col_dir."""
        normal = np.cross(self.row_dir, self.col_dir)
        return normal / np.linalg.norm(normal)


@dataclass
class CineStack:
    """A cine series (or several merged single-slice series): slices[k][t] ordered along the normal and in time."""

    series_uids: list[str]
    series_numbers: list[int]
    description: str
    slices: list[list[ImageHeader]]
    phase_order: str  # "trigger_time" or "instance_number"
    identified_by: str = ""
    # slice positions dropped while building the stack (``dropped_slices`` report entries)
    dropped: list[dict[str, Any]] = field(default_factory=list)

    @property
    def first(self) -> ImageHeader:
        """The first image of the first slice; its geometry is the stack's in-plane geometry."""
        return self.slices[0][0]

    @property
    def num_phases(self) -> int:
        """Phases per slice (all slices agree, checked on construction)."""
        return len(self.slices[0])

    def slice_positions_mm(self) -> np.ndarray:
        """Slice positions along the normal (S,), mm, ascending."""
        return np.array([float(np.dot(s[0].position, self.first.normal)) for s in self.slices])


@dataclass(frozen=True)
class DamagedImage:
    """A DICOM image file that cannot be converted: its pixel data is missing, cut short or does not match Rows x
    Columns, or the file is cut short or unreadable. What its header still tells (empty or None where unknown) says
    which slice position it belongs to, so that the slice can be dropped instead of the study failing."""

    path: Path
    reason: str
    series_uid: str = ""
    series_number: int = 0
    description: str = ""
    sop_instance_uid: str = ""
    position: np.ndarray | None = None
    row_dir: np.ndarray | None = None
    col_dir: np.ndarray | None = None

    @property
    def placeable(self) -> bool:
        """True when the header names the image's series, position and orientation: its slice position is known."""
        return bool(self.series_uid) and self.position is not None and self.row_dir is not None


@dataclass(frozen=True)
class SliceGap:
    """A slice position dropped from a series (every phase of it): stacks built later are not bridged across it."""

    series_uid: str
    position: np.ndarray  # (3,) LPS mm
    row_dir: np.ndarray
    col_dir: np.ndarray


@dataclass
class _StudyScan:
    """Everything found in a study folder: readable image headers, files ignored with their reason, images whose
    geometry was taken from the other phases of their slice (``repaired``: file, what was done), damaged images, and
    what was dropped because of them (``dropped_files``, ``dropped_slices``, the ``gaps`` the slices leave, and the
    ``unattributed`` damaged images, whose slice position is unknown)."""

    headers: list[ImageHeader] = field(default_factory=list)
    ignored: list[dict[str, Any]] = field(default_factory=list)
    repaired: list[dict[str, str]] = field(default_factory=list)
    damaged: list[DamagedImage] = field(default_factory=list)
    dropped_files: list[dict[str, Any]] = field(default_factory=list)
    dropped_slices: list[dict[str, Any]] = field(default_factory=list)
    gaps: list[SliceGap] = field(default_factory=list)
    # damaged images whose slice position is unknown
    unattributed: list[DamagedImage] = field(default_factory=list)


# --- reading ---------------------------------------------------------------------------------------
def _error(study_dir: Path, file: Path | None, problem: str, remedy: str) -> DicomConversionError:
    """Build a DicomConversionError whose message names the study, the file and the remedy."""
    where = f" file {file}:" if file is not None else ""
    return DicomConversionError(f"cannot convert DICOM study {study_dir}:{where} {problem}. {remedy}")


#: The attributes that place an image in space, with their number of values; an image missing one (or holding an
#: unusable value) is placed only where its series leaves exactly one slot for it (:func:`place_unplaced_images`).
GEOMETRY_ATTRIBUTES = {"ImagePositionPatient": 3, "ImageOrientationPatient": 6, "PixelSpacing": 2}
#: |cos| between ImageOrientationPatient's row and column directions above this: not two perpendicular directions.
MAX_DIRECTION_COS = 0.01
#: SliceLocation (mm) of an unplaced image and of the slice it is placed in may differ this much.
SLICE_LOCATION_TOL_MM = 0.1


def _shown(value: Any) -> str:
    """A stored attribute value as a short quoted string, for messages."""
    text = "\\".join(str(v) for v in value) if isinstance(value, (list, tuple, MultiValue)) else str(value)
    return f'"{text if len(text) <= 60 else text[:57] + "..."}"'


def _is_absent(value: Any) -> bool:
    """True for an attribute that is not there or holds no value."""
    return value is None or (isinstance(value, (str, bytes, list, tuple, MultiValue)) and len(value) == 0)


def _numbers(dataset: pydicom.Dataset, keyword: str, count: int) -> np.ndarray | None:
    """The ``count`` finite numbers of a numeric attribute; None where absent or empty.

    Raises:
        ValueError: the attribute holds anything else (text, NaN, infinity, another number of values), naming it.
    """
    value = dataset.get(keyword)
    if _is_absent(value):
        return None
    values = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    try:
        numbers = np.array([float(v) for v in values], dtype=float)
    except (TypeError, ValueError):
        numbers = np.full(0, np.nan)
    if numbers.shape != (count,) or not np.isfinite(numbers).all():
        raise ValueError(f"{keyword} {_shown(value)} is not {count} finite number(s)")
    return numbers


def _integer(dataset: pydicom.Dataset, keyword: str) -> int | None:
    """An integer attribute; None where absent or empty.

    Raises:
        ValueError: the attribute is not a whole number, naming it.
    """
    number = _numbers(dataset, keyword, 1)
    if number is None:
        return None
    if number[0] != round(number[0]):
        raise ValueError(f"{keyword} {_shown(dataset.get(keyword))} is not a whole number")
    return int(number[0])


def _optional_slice_location(dataset: pydicom.Dataset) -> np.ndarray | None:
    """SliceLocation (1,), or None where absent or unusable: it is informative only (it narrows where an image
    without position may go), so an unreadable one counts as absent rather than failing the study."""
    try:
        return _numbers(dataset, "SliceLocation", 1)
    except ValueError:
        return None


def _geometry(dataset: pydicom.Dataset) -> tuple[dict[str, Any], dict[str, str]]:
    """The usable geometry of an image as :class:`ImageHeader` keyword arguments (``position``, ``row_dir`` and
    ``col_dir``, ``pixel_spacing``) and, per unusable DICOM attribute, why (absent, or its value and the fault)."""
    geometry: dict[str, Any] = {}
    faults: dict[str, str] = {}
    for keyword, count in GEOMETRY_ATTRIBUTES.items():
        try:
            value = _numbers(dataset, keyword, count)
        except ValueError as exc:
            faults[keyword] = str(exc)
            continue
        if value is None:
            faults[keyword] = f"no {keyword}"
        elif keyword == "ImagePositionPatient":
            geometry["position"] = value
        elif keyword == "ImageOrientationPatient":
            row_norm, col_norm = np.linalg.norm(value[:3]), np.linalg.norm(value[3:])
            if (
                min(row_norm, col_norm) < 1e-3
                or abs(np.dot(value[:3], value[3:])) > MAX_DIRECTION_COS * row_norm * col_norm
            ):
                faults[keyword] = (
                    f"ImageOrientationPatient {_shown(value.tolist())} is not two perpendicular directions"
                )
            else:
                geometry["row_dir"], geometry["col_dir"] = value[:3] / row_norm, value[3:] / col_norm
        elif value.min() <= 0:
            faults[keyword] = f"PixelSpacing {_shown(value.tolist())} is not two positive spacings"
        else:
            geometry["pixel_spacing"] = (float(value[0]), float(value[1]))
    return geometry, faults


@dataclass
class UnplacedImage:
    """An image whose geometry (:data:`GEOMETRY_ATTRIBUTES`) is missing or unusable.

    Attributes:
        fields: :class:`ImageHeader` keyword arguments read from the file, geometry only where usable.
        faults: per unusable attribute, why.
    """

    fields: dict[str, Any]
    faults: dict[str, str]

    @property
    def path(self) -> Path:
        """The image's file."""
        return self.fields["path"]


def _pixel_fault(dataset: pydicom.Dataset, rows: int, cols: int) -> str | None:
    """Why an image's pixel data cannot be the Rows x Columns image its header describes (absent, cut short, of
    another size, undecodable), or None.

    Uncompressed data is checked by its length. Compressed data is decoded where a decoder is installed; where none
    is, the pixels are left to :func:`_read_pixels`, whose error names the set-up's fault rather than the file's.
    """
    if "PixelData" not in dataset:
        return "no pixel data"
    syntax = dataset.file_meta.get("TransferSyntaxUID")
    if syntax is None or not syntax.is_compressed:
        try:
            bits = _integer(dataset, "BitsAllocated") or 16
            samples = _integer(dataset, "SamplesPerPixel") or 1
        except ValueError as exc:
            return f"pixel data not readable: {exc}"
        expected, length = rows * cols * samples * bits // 8, len(dataset.PixelData)
        # DICOM pads a value of odd length with one byte
        if not expected <= length <= expected + 1:
            return f"pixel data of {length} bytes, not the {expected} of Rows x Columns {rows} x {cols} ({bits}-bit)"
        return None
    try:
        available = get_decoder(syntax).is_available
    except NotImplementedError:  # a transfer syntax pydicom has no decoder for at all
        available = False
    if available:
        try:
            dataset.pixel_array
        except Exception as exc:  # decoding errors come from several pixel handlers
            return f"pixel data cannot be decoded ({exc})"
    return None


def _damaged(dataset: pydicom.Dataset, path: Path, reason: str) -> DamagedImage:
    """A damaged image with what its header still says of where it belongs: its series and its usable geometry."""
    geometry, _ = _geometry(dataset)
    try:
        series_number = _integer(dataset, "SeriesNumber") or 0
    except ValueError:  # informative only: the series is told by its SeriesInstanceUID
        series_number = 0
    return DamagedImage(
        path=path,
        reason=reason,
        series_uid=str(dataset.get("SeriesInstanceUID", "") or ""),
        series_number=series_number,
        description=str(dataset.get("SeriesDescription", "") or ""),
        sop_instance_uid=str(dataset.get("SOPInstanceUID", "") or ""),
        position=geometry.get("position"),
        row_dir=geometry.get("row_dir"),
        col_dir=geometry.get("col_dir"),
    )


def _read_header(path: Path, study_dir: Path) -> ImageHeader | UnplacedImage | DamagedImage | str:
    """Read one file; return its header, the image without its geometry, the damaged image (unreadable, cut short,
    pixel data missing or not matching Rows x Columns), or the reason the file is ignored (not an image).

    Raises:
        DicomConversionError: an image with an unusable attribute other than its geometry, size and pixel data
            (TriggerTime, InstanceNumber, ...).
    """
    try:
        dataset = pydicom.dcmread(path)
    except InvalidDicomError:
        return "not a DICOM file"
    except Exception as exc:  # pydicom raises many types on truncated or malformed files
        return DamagedImage(path, f"unreadable DICOM ({type(exc).__name__}: {exc})")
    if "Rows" not in dataset:
        sop_class = dataset.get("SOPClassUID") or dataset.file_meta.get("MediaStorageSOPClassUID")
        if len(dataset) == 0 or "TransferSyntaxUID" not in dataset.file_meta:
            # the DICM prefix, then no data set or file meta information without its required transfer syntax: a file
            # cut short in its header
            return DamagedImage(path, "DICOM file cut short in its header (no data set or incomplete file meta)")
        if sop_class and str(getattr(sop_class, "name", "")).endswith("Image Storage"):
            # pydicom reads truncated files without complaint; an image class without Rows is one.
            return _damaged(dataset, path, f"{sop_class.name} file without Rows (cut short?)")
        return "DICOM without an image (e.g. DICOMDIR, report)"
    try:
        if (_integer(dataset, "NumberOfFrames") or 1) > 1:
            return "multi-frame (enhanced) DICOM is not supported; export the series as single-frame images"
    except ValueError as exc:
        raise _error(study_dir, path, f"unusable attribute: {exc}", "Correct or remove the file.") from exc
    try:
        rows, cols = _integer(dataset, "Rows"), _integer(dataset, "Columns")
    except ValueError as exc:
        return _damaged(dataset, path, f"{exc}, so the pixel data cannot be read")
    if rows is None or cols is None or min(rows, cols) < 1:
        return _damaged(dataset, path, f"Rows x Columns {rows} x {cols} is not an image size")
    fault = _pixel_fault(dataset, rows, cols)
    if fault is not None:
        return _damaged(dataset, path, fault)
    try:
        trigger_time = _numbers(dataset, "TriggerTime", 1)
        slice_location = _optional_slice_location(dataset)
        fields = {
            "path": path,
            "series_uid": str(dataset.get("SeriesInstanceUID", "")),
            "series_number": _integer(dataset, "SeriesNumber") or 0,
            "study_uid": str(dataset.get("StudyInstanceUID", "") or ""),
            "patient_id": str(dataset.get("PatientID", "") or ""),
            "description": str(dataset.get("SeriesDescription", "") or ""),
            "instance_number": _integer(dataset, "InstanceNumber"),
            "trigger_time_ms": None if trigger_time is None else float(trigger_time[0]),
            "slice_location_mm": None if slice_location is None else float(slice_location[0]),
            "rows": rows,
            "cols": cols,
            "sop_instance_uid": str(dataset.get("SOPInstanceUID", "") or ""),
            "sop_class_uid": str(dataset.get("SOPClassUID", "") or ""),
        }
    except ValueError as exc:
        raise _error(study_dir, path, f"unusable attribute: {exc}", "Correct or remove the file.") from exc
    geometry, faults = _geometry(dataset)
    if faults:
        return UnplacedImage({**fields, **geometry}, faults)
    return ImageHeader(**fields, **geometry)


def _instance_uid(image: ImageHeader | UnplacedImage | DamagedImage) -> str:
    """The SOPInstanceUID an image file holds ("" where it has none)."""
    return image.fields["sop_instance_uid"] if isinstance(image, UnplacedImage) else image.sop_instance_uid


def scan_study(study_dir: Path) -> _StudyScan:
    """Read every file under ``study_dir`` (recursively), ignoring non-DICOM files and second copies of an instance
    (the same SOPInstanceUID in two files, as a repeated export leaves; an intact copy is kept before a damaged one);
    images without usable geometry are placed by :func:`place_unplaced_images`, and the slices of damaged images
    dropped by :func:`drop_damaged_slices`."""
    scan = _StudyScan()
    images: list[ImageHeader | UnplacedImage | DamagedImage] = []
    for path in sorted(p for p in study_dir.rglob("*") if p.is_file()):
        result = _read_header(path, study_dir)
        if isinstance(result, str):
            scan.ignored.append({"file": str(path.relative_to(study_dir)), "reason": result})
        else:
            images.append(result)
    first_file_of_instance: dict[str, Path] = {}
    unplaced: list[UnplacedImage] = []
    # a stable sort: intact images first, each kind in path order
    for image in sorted(images, key=lambda item: isinstance(item, DamagedImage)):
        uid = _instance_uid(image)
        if uid and uid in first_file_of_instance:
            first = first_file_of_instance[uid].relative_to(study_dir)
            damage = f" damaged ({image.reason})" if isinstance(image, DamagedImage) else ""
            scan.ignored.append(
                {
                    "file": str(image.path.relative_to(study_dir)),
                    "reason": f"a second{damage} copy of the instance in {first}",
                }
            )
            continue
        if uid:
            first_file_of_instance[uid] = image.path
        if isinstance(image, DamagedImage):
            scan.damaged.append(image)
        elif isinstance(image, UnplacedImage):
            unplaced.append(image)
        else:
            scan.headers.append(image)
    place_unplaced_images(scan, unplaced, study_dir)
    drop_damaged_slices(scan, study_dir)
    return scan


def _coincide(image: ImageHeader | DamagedImage | SliceGap, other: DamagedImage | SliceGap) -> bool:
    """True when two placed things (an image, a damaged image with its geometry, a gap) share row and column
    directions and position along their normal."""
    normal = np.cross(np.asarray(image.row_dir), np.asarray(image.col_dir))
    offset = float(np.dot(np.asarray(image.position) - np.asarray(other.position), normal / np.linalg.norm(normal)))
    return _parallel(image, other) and abs(offset) <= POSITION_TOL_MM


def _parallel(image: ImageHeader | DamagedImage | SliceGap, other: DamagedImage | SliceGap) -> bool:
    """True when ``image`` and ``other`` (both with a known orientation) share row and column directions."""
    return bool(
        np.allclose(np.asarray(image.row_dir), np.asarray(other.row_dir), atol=ORIENTATION_TOL)
        and np.allclose(np.asarray(image.col_dir), np.asarray(other.col_dir), atol=ORIENTATION_TOL)
    )


def _dropped_slice_entry(slice_images: Sequence[ImageHeader], reason: str, study_dir: Path) -> dict[str, Any]:
    """A ``dropped_slices`` report entry: the slice position's series, position along its normal (as the written
    planes' ``position_along_normal_mm``), its files and why it was dropped."""
    first = slice_images[0]
    return {
        "series_instance_uid": sorted({image.series_uid for image in slice_images}),
        "series_number": sorted({image.series_number for image in slice_images}),
        "series_description": first.description,
        "position_along_normal_mm": float(np.dot(first.position, first.normal)),
        "files": [str(image.path.relative_to(study_dir)) for image in slice_images],
        "reason": reason,
    }


def drop_damaged_slices(scan: _StudyScan, study_dir: Path) -> None:
    """Drop the slice position of each damaged image, every phase of it (a slice missing a phase is no cine), and
    list the damaged file in ``scan.dropped_files`` and the slice in ``scan.dropped_slices`` and ``scan.gaps``.

    A damaged image whose header places it at a slice position of its series drops that slice position (an SA stack
    keeps its other slices; a long-axis view, one slice, is dropped). One that cannot be placed so but names a series
    with a single slice position (a long-axis view, or an SA slice exported as its own series) drops that slice,
    which lacks an image. Any other is dropped alone, named, and kept in ``scan.unattributed``: a stack left with
    slices lacking phases drops those when it is built (:func:`_make_stack`). A header cut short may hold a cut value
    last, so a series or position that matches none of the study's counts as unknown.
    """
    for image in sorted(scan.damaged, key=lambda item: item.path):
        file = str(image.path.relative_to(study_dir))
        series = [header for header in scan.headers if image.series_uid and header.series_uid == image.series_uid]
        members = [header for header in series if image.placeable and _coincide(header, image)]
        why = f"{file} at this slice position: {image.reason}"
        # a slice position another damaged image dropped already
        placed = bool(members) or any(
            image.placeable and gap.series_uid == image.series_uid and _coincide(image, gap) for gap in scan.gaps
        )
        if not placed:
            groups = _slice_groups(series) if series else []
            members = groups[0] if len(groups) == 1 else []
            why = f"{file} of this single-slice series, its position unknown: {image.reason}"
            placed = bool(members)
        scan.dropped_files.append(
            {
                "file": file,
                "series_instance_uid": image.series_uid,
                "series_number": image.series_number,
                "reason": image.reason,
                # False: neither its header nor its series tells the slice it belongs to
                "placed": placed,
            }
        )
        if not placed:
            scan.unattributed.append(image)
        if not members:
            continue
        scan.headers = [header for header in scan.headers if not any(header is member for member in members)]
        scan.gaps.append(SliceGap(image.series_uid, members[0].position, members[0].row_dir, members[0].col_dir))
        reason = f"{why}; every phase of the slice position is dropped, as a slice missing a phase is no cine"
        scan.dropped_slices.append(_dropped_slice_entry(members, reason, study_dir))


def _phase_key(fields: dict[str, Any], image: ImageHeader) -> str | None:
    """What tells the phase of an unplaced image (its ``fields``) apart from ``image``'s: ``trigger_time_ms`` where
    both have one, else ``instance_number`` where both have one, else None."""
    for key in ("trigger_time_ms", "instance_number"):
        if fields[key] is not None and getattr(image, key) is not None:
            return key
    return None


def _fits_slice(fields: dict[str, Any], slice_images: list[ImageHeader]) -> bool:
    """True when an unplaced image (its ``fields``) can be one phase of ``slice_images``: their usable geometry,
    matrix and SliceLocation agree and none of them has its phase (TriggerTime, else InstanceNumber)."""
    first = slice_images[0]
    if (fields["rows"], fields["cols"]) != (first.rows, first.cols):
        return False
    if "row_dir" in fields and not (
        np.allclose(fields["row_dir"], first.row_dir, atol=ORIENTATION_TOL)
        and np.allclose(fields["col_dir"], first.col_dir, atol=ORIENTATION_TOL)
    ):
        return False
    if "pixel_spacing" in fields and not np.allclose(fields["pixel_spacing"], first.pixel_spacing, atol=1e-4):
        return False
    if "position" in fields and not np.allclose(fields["position"], first.position, atol=1e-3):
        return False
    location = fields["slice_location_mm"]
    if location is not None and first.slice_location_mm is not None:
        if abs(location - first.slice_location_mm) > SLICE_LOCATION_TOL_MM:
            return False
    for image in slice_images:
        key = _phase_key(fields, image)
        if key is None or fields[key] == getattr(image, key):
            return False
    return True


def place_unplaced_images(scan: _StudyScan, unplaced: list[UnplacedImage], study_dir: Path) -> None:
    """Give each image without usable geometry that of the one slice of its series it can belong to, and list the
    repair in ``scan.repaired``; never a guess.

    A slice position of the image's series (its images with usable geometry) is a candidate when its images share
    the image's usable geometry, matrix and SliceLocation and none of them has the image's phase (TriggerTime, else
    InstanceNumber). Of several candidates, those with fewer images than the fullest slice; the image is placed only
    when one remains, and no other unplaced image is placed there at the same phase. Every image is judged against
    the same images, so the outcome does not depend on the order of the files. An image that cannot be placed in a
    series whose SeriesDescription names a non-cine sequence (a localiser) is ignored and listed in ``scan.ignored``.

    Raises:
        DicomConversionError: no slice, or several, could hold an image (naming the file and what is wrong).
    """
    placements: list[tuple[UnplacedImage, list[ImageHeader]]] = []
    for image in sorted(unplaced, key=lambda item: item.path):
        fields = image.fields
        series = _slice_groups([header for header in scan.headers if header.series_uid == fields["series_uid"]])
        fitting = [group for group in series if _fits_slice(fields, group)]
        fullest = max((len(group) for group in series), default=0)
        chosen = [group for group in fitting if len(group) < fullest] if len(fitting) > 1 else fitting
        # another unplaced image of the same phase sent to the same slice: one of them belongs elsewhere
        clash = len(chosen) == 1 and any(
            group is chosen[0] and _same_phase(image, other) for other, group in placements
        )
        if (len(chosen) != 1 or clash) and re.search(_NON_CINE_PATTERN, _normalise_description(fields["description"])):
            # a localiser or mapping image is never converted: without its geometry it can be left out, named
            scan.ignored.append(
                {
                    "file": str(image.path.relative_to(study_dir)),
                    "reason": f"{'; '.join(image.faults.values())}, in a non-cine series "
                    f"(SeriesDescription {fields['description']!r})",
                }
            )
            continue
        if len(chosen) != 1 or clash:
            raise _error(
                study_dir,
                image.path,
                f"{'; '.join(image.faults.values())}, so it cannot be placed in space, and "
                f"{'several' if len(fitting) > 1 or clash else 'no'} slice position(s) of its series "
                f"({sum(map(len, series))} placed images) could hold an image of its phase",
                "Remove the file from the study folder or re-export the series with its geometry.",
            )
        placements.append((image, chosen[0]))
    for image, slice_images in placements:
        template = slice_images[0]
        recovered = {
            "position": template.position,
            "row_dir": template.row_dir,
            "col_dir": template.col_dir,
            "pixel_spacing": template.pixel_spacing,
        }
        scan.headers.append(ImageHeader(**{**recovered, **image.fields}))
        scan.repaired.append(
            {
                "file": str(image.path.relative_to(study_dir)),
                "repair": f"{'; '.join(image.faults.values())}: its geometry is taken from the {len(slice_images)} "
                f"other phases of its slice (series {template.series_number}, the only slice position lacking an "
                "image of its phase), which agree with every usable attribute it has",
            }
        )


def _same_phase(image: UnplacedImage, other: UnplacedImage) -> bool:
    """True when two unplaced images have the same TriggerTime (or, without, the same InstanceNumber)."""
    for key in ("trigger_time_ms", "instance_number"):
        if image.fields[key] is not None and other.fields[key] is not None:
            return image.fields[key] == other.fields[key]
    return True


def _slice_groups(images: Sequence[ImageHeader]) -> list[list[ImageHeader]]:
    """The slice positions (as :func:`_group_by_position`) of each orientation among ``images``."""
    by_orientation: list[list[ImageHeader]] = []
    for image in images:
        for group in by_orientation:
            if _same_orientation(group[0], image):
                group.append(image)
                break
        else:
            by_orientation.append([image])
    return [slice_images for group in by_orientation for slice_images in _group_by_position(group)]


# --- building stacks -------------------------------------------------------------------------------
def _same_orientation(a: ImageHeader, b: ImageHeader) -> bool:
    """True when both images share row and column directions."""
    return bool(
        np.allclose(a.row_dir, b.row_dir, atol=ORIENTATION_TOL)
        and np.allclose(a.col_dir, b.col_dir, atol=ORIENTATION_TOL)
    )


def _same_grid(a: ImageHeader, b: ImageHeader) -> bool:
    """True when both images share orientation, matrix size and pixel spacing."""
    spacing_equal = np.allclose(a.pixel_spacing, b.pixel_spacing, atol=1e-4)
    return _same_orientation(a, b) and (a.rows, a.cols) == (b.rows, b.cols) and bool(spacing_equal)


def _group_by_position(images: Sequence[ImageHeader]) -> list[list[ImageHeader]]:
    """Split images of one orientation into slice positions along the normal, ascending."""
    normal = images[0].normal
    ordered = sorted(images, key=lambda image: float(np.dot(image.position, normal)))
    groups: list[list[ImageHeader]] = [[ordered[0]]]
    for image in ordered[1:]:
        gap = float(np.dot(image.position - groups[-1][0].position, normal))
        if gap > POSITION_TOL_MM:
            groups.append([image])
        else:
            groups[-1].append(image)
    return groups


def _order_phases(slice_images: list[ImageHeader], by_trigger_time: bool) -> list[ImageHeader]:
    """Order one slice position's images in time."""
    if by_trigger_time:
        return sorted(slice_images, key=lambda image: (image.trigger_time_ms, image.instance_number or 0))
    return sorted(slice_images, key=lambda image: image.instance_number or 0)


def _grid_key(image: ImageHeader) -> tuple:
    """What :func:`_same_grid` compares, rounded to its tolerances, to count the images sharing a grid."""
    return (
        tuple(np.round(np.concatenate([image.row_dir, image.col_dir]), 3)),
        (image.rows, image.cols),
        tuple(np.round(image.pixel_spacing, 4)),
    )


def _non_cine_reason(images: Sequence[ImageHeader]) -> str | None:
    """Why a series is not a cine series we convert, or None when it is a cine candidate."""
    description = _normalise_description(images[0].description)
    if re.search(_NON_CINE_PATTERN, description):
        return f"SeriesDescription {images[0].description!r} names a non-cine sequence"
    if not all(_same_grid(images[0], image) for image in images):
        grids = [_grid_key(image) for image in images]
        usual = max(set(grids), key=grids.count)
        odd = [image.path.name for image, grid in zip(images, grids) if grid != usual]
        return (
            "images differ in orientation, matrix or pixel spacing (localiser or mixed series): "
            f"{len(odd)} of {len(images)} differ from the others, e.g. {', '.join(odd[:3])}"
        )
    phases_per_slice = {len(group) for group in _group_by_position(images)}
    if max(phases_per_slice) < MIN_CINE_PHASES:
        return f"not cine: {max(phases_per_slice)} image(s) per slice position (< {MIN_CINE_PHASES} phases)"
    return None


def fit_slice_line(slices: list[list[ImageHeader]]) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares line through the slice positions: ImagePositionPatient of slice k ~ origin + k * step.

    Scanners store positions with sub-micrometre jitter; the fitted line is the affine that is closest to every
    slice, rather than one that is exact for the first slice only.

    Returns:
        origin (3,) and step (3,) in LPS mm; step is 0 for a single slice.
    """
    positions = np.array([s[0].position for s in slices])
    if len(slices) == 1:
        return positions[0], np.zeros(3)
    index = np.arange(len(slices), dtype=float)
    design = np.stack([np.ones_like(index), index], axis=1)
    (origin, step), *_ = np.linalg.lstsq(design, positions, rcond=None)
    return origin, step


def _check_stack_geometry(slices: list[list[ImageHeader]], study_dir: Path) -> None:
    """Raise unless every phase of a slice shares its position and the slices lie, equally spaced, on one line.

    A NIfTI affine can only represent equally spaced slices along a straight line.
    """
    for slice_images in slices:
        for image in slice_images:
            if not np.allclose(image.position, slice_images[0].position, atol=1e-3):
                raise _error(
                    study_dir,
                    image.path,
                    f"phases of one slice differ in ImagePositionPatient ({image.position} vs "
                    f"{slice_images[0].position})",
                    "Check the series for mixed acquisitions.",
                )
    origin, step = fit_slice_line(slices)
    normal = slices[0][0].normal
    for k, slice_images in enumerate(slices):
        residual = slice_images[0].position - (origin + k * step)
        along_normal = abs(float(np.dot(residual, normal)))
        in_plane = float(np.linalg.norm(residual - np.dot(residual, normal) * normal))
        if along_normal > SPACING_REL_TOL * float(np.dot(step, normal)) or in_plane > MAX_IN_PLANE_RESIDUAL_MM:
            gaps = np.diff([float(np.dot(s[0].position, normal)) for s in slices])
            raise _error(
                study_dir,
                slice_images[0].path,
                f"slices are not equally spaced on a line (slice gaps {np.round(gaps, 2).tolist()} mm, this slice "
                f"{along_normal:.3f} mm off along the normal and {in_plane:.3f} mm in-plane)",
                "Remove missing, repeated or shifted slices from the study folder; resampling is not done here.",
            )


def _drop_short_slices(
    slices: list[list[ImageHeader]], spare: Sequence[DamagedImage], study_dir: Path
) -> tuple[list[list[ImageHeader]], list[dict[str, Any]], list[SliceGap]]:
    """Drop the slices lacking phases of a stack whose series may have lost images to damaged files that could not
    be placed (``spare``: those of its series or of no known series), when there are at least as many such files as
    missing images; return the slices kept, the ``dropped_slices`` entries and the gaps they leave. Otherwise the
    slices stay as they are (and :func:`_make_stack` stops on the phase counts): a missing image that no damaged file
    accounts for is an incomplete export, not a file to drop."""
    counts = [len(slice_images) for slice_images in slices]
    fullest = max(counts)
    missing = sum(fullest - count for count in counts)
    if not spare or missing == 0 or missing > len(spare):
        return slices, [], []
    short = [slice_images for slice_images in slices if len(slice_images) < fullest]
    names = ", ".join(str(image.path.relative_to(study_dir)) for image in spare)
    dropped = [
        _dropped_slice_entry(
            slice_images,
            f"lacks {fullest - len(slice_images)} of its series' {fullest} phases, taken to be in the damaged "
            f"file(s) that could not be placed ({names}); a slice missing a phase is no cine",
            study_dir,
        )
        for slice_images in short
    ]
    gaps = [
        SliceGap(images[0].series_uid, images[0].position, images[0].row_dir, images[0].col_dir) for images in short
    ]
    return [slice_images for slice_images in slices if len(slice_images) == fullest], dropped, gaps


def _split_at_gaps(
    slices: list[list[ImageHeader]], gaps: Sequence[SliceGap], study_dir: Path
) -> tuple[list[list[ImageHeader]], list[dict[str, Any]]]:
    """Keep the longest run of slices that no dropped slice position (``gaps`` parallel to the stack) interrupts;
    return it and the ``dropped_slices`` entries of the others.

    A NIfTI affine holds equally spaced slices only, so a stack cannot bridge a dropped slice. Of equally long runs
    the one nearest the base is kept, as basal slices hold most of the ventricular volume.
    """
    normal = slices[0][0].normal
    positions = [float(np.dot(slice_images[0].position, normal)) for slice_images in slices]
    inside = [
        float(np.dot(gap.position, normal))
        for gap in gaps
        if _parallel(slices[0][0], gap) and positions[0] < float(np.dot(gap.position, normal)) < positions[-1]
    ]
    if not inside:
        return slices, []
    runs: list[list[int]] = [[0]]
    for k in range(1, len(slices)):
        if any(positions[k - 1] < gap < positions[k] for gap in inside):
            runs.append([k])
        else:
            runs[-1].append(k)
    towards_apex = 1.0 if float(np.dot(normal, APEX_DIRECTION_LPS)) >= 0 else -1.0
    kept = max(runs, key=lambda run: (len(run), -towards_apex * positions[run[0]]))
    gap_text = ", ".join(f"{gap:.1f}" for gap in sorted(inside))
    dropped = [
        _dropped_slice_entry(
            slices[k],
            f"cut off from its stack by the dropped slice position(s) at {gap_text} mm: a NIfTI affine holds equally "
            f"spaced slices only, so the longest run of the stack ({len(kept)} slices) is kept",
            study_dir,
        )
        for run in runs
        if run is not kept
        for k in run
    ]
    return [slices[k] for k in kept], dropped


def _make_stack(
    images: Sequence[ImageHeader],
    study_dir: Path,
    gaps: Sequence[SliceGap] = (),
    spare: Sequence[DamagedImage] = (),
) -> CineStack:
    """Arrange a cine candidate's images, one per slice position and phase (:func:`resolve_repeated_images`), into
    slices[k][t]; raise on inconsistent phase counts or geometry.

    Slices lacking phases that damaged files which could not be placed (``spare``) account for are dropped
    (:func:`_drop_short_slices`), and a stack interrupted by a dropped slice position (``gaps``) keeps its longest
    run (:func:`_split_at_gaps`); both are listed in the stack's ``dropped``.
    """
    by_trigger_time = all(image.trigger_time_ms is not None for image in images)
    if not by_trigger_time and any(image.instance_number is None for image in images):
        raise _error(
            study_dir, images[0].path, "neither TriggerTime nor InstanceNumber on every image", "Cannot order phases."
        )
    slices = [_order_phases(group, by_trigger_time) for group in _group_by_position(images)]
    slices, short, short_gaps = _drop_short_slices(slices, spare, study_dir)
    counts = [len(s) for s in slices]
    if len(set(counts)) > 1:
        usual = max(set(counts), key=counts.count)
        odd = next(s for s in slices if len(s) != usual)
        raise _error(
            study_dir,
            odd[0].path,
            f"series {images[0].series_uid} has slices with different phase counts {counts}, {len(odd)} at the "
            f"slice of this file (policy: {FRAME_COUNT_MISMATCH_POLICY}, no temporal resampling)",
            "Remove the incomplete or repeated slices from the study folder.",
        )
    slices, cut = _split_at_gaps(slices, [*gaps, *short_gaps], study_dir)
    _check_stack_geometry(slices, study_dir)
    kept = [image for slice_images in slices for image in slice_images]
    return CineStack(
        series_uids=sorted({image.series_uid for image in kept}),
        series_numbers=sorted({image.series_number for image in kept}),
        description=images[0].description,
        slices=slices,
        phase_order="trigger_time" if by_trigger_time else "instance_number",
        dropped=short + cut,
    )


def _phase_of(image: ImageHeader) -> tuple[str, float | int | None]:
    """What tells an image's phase at its slice position: its TriggerTime, else its InstanceNumber."""
    if image.trigger_time_ms is not None:
        return "TriggerTime", image.trigger_time_ms
    return "InstanceNumber", image.instance_number


def resolve_repeated_images(
    images: Sequence[ImageHeader], study_dir: Path
) -> tuple[list[ImageHeader], list[dict[str, Any]]]:
    """Keep one image per slice position and phase of a cine series; return the images kept and ``ignored_files``
    entries for the others.

    A second image at the same position and phase (TriggerTime, else InstanceNumber) with another SOPInstanceUID is
    a repeated export or a repeated acquisition. The image with the later InstanceNumber is kept (of equal ones, the
    file whose path sorts first); the entry of the other says whether its pixels differ (``pixels_differ``), which
    :func:`convert_study`'s callers report as a problem.
    """
    kept: list[ImageHeader] = []
    ignored: list[dict[str, Any]] = []
    for slice_images in _slice_groups(images):
        by_phase: dict[tuple[str, Any], list[ImageHeader]] = defaultdict(list)
        for image in slice_images:
            by_phase[_phase_of(image)].append(image)
        for (what, value), same in by_phase.items():
            if value is None or len(same) == 1:
                # without either attribute the phase is unknown: _make_stack names the file
                kept.extend(same)
                continue
            keep, *others = sorted(
                same, key=lambda image: (image.instance_number is None, -(image.instance_number or 0), image.path)
            )
            kept.append(keep)
            keep_pixels = _read_pixels(keep, study_dir)
            for other in others:
                differ = not np.array_equal(keep_pixels, _read_pixels(other, study_dir))
                if not differ:
                    which = "identical pixels"
                elif keep.instance_number != other.instance_number:
                    which = f"its pixels differ; the later InstanceNumber ({keep.instance_number}) is kept"
                else:
                    which = "its pixels differ; of equal InstanceNumbers, the file whose path sorts first is kept"
                ignored.append(
                    {
                        "file": str(other.path.relative_to(study_dir)),
                        "reason": f"a second image of series {other.series_number} at the slice position and phase "
                        f"({what} {value}) of {keep.path.relative_to(study_dir)}, with another SOPInstanceUID: "
                        f"{which}",
                        "pixels_differ": differ,
                    }
                )
    return kept, ignored


# --- identification --------------------------------------------------------------------------------
def _normalise_description(description: str) -> str:
    """Lower-case a SeriesDescription with every non-alphanumeric character as a space."""
    return re.sub(r"[^a-z0-9]+", " ", description.lower()).strip()


def view_from_description(description: str) -> str | None:
    """The plane file stem (``sa``, ``la_2ch``, ...) a SeriesDescription names, or None if none or several."""
    text = _normalise_description(description)
    views = [view for view, pattern in _VIEW_PATTERNS.items() if re.search(pattern, text)]
    return views[0] if len(views) == 1 else None


def long_axis_direction(sa_stack: CineStack) -> np.ndarray:
    """Unit long axis (3,) in LPS, the SA normal signed to point from the base towards the apex."""
    normal = sa_stack.first.normal
    return normal if np.dot(normal, APEX_DIRECTION_LPS) >= 0 else -normal


def la_view_angle_deg(long_axis: np.ndarray, la_normal: np.ndarray) -> float:
    """Angle (deg, 0..180) of an LA plane's line in the SA plane, clockwise from anterior (see LA_VIEW_ANGLES_DEG).

    The SA plane is spanned by ``left`` (patient left projected into it) and ``up`` (perpendicular, towards
    anterior-superior), the usual display of an SA image viewed with anterior up.
    """
    left = np.array([1.0, 0.0, 0.0]) - long_axis[0] * long_axis
    left /= np.linalg.norm(left)
    up = np.cross(long_axis, left)
    if np.dot(up, [0.0, -1.0, 1.0]) < 0:  # anterior is -y and superior is +z in LPS
        up = -up
    line = np.cross(long_axis, la_normal)
    return float(np.degrees(np.arctan2(np.dot(line, left), np.dot(line, up))) % 180.0)


def _closest_view(angle_deg: float) -> tuple[str | None, float]:
    """The LA view whose typical angle is within tolerance of ``angle_deg`` (or None) and the angular distance."""
    distances = {view: abs((angle_deg - ref + 90.0) % 180.0 - 90.0) for view, ref in LA_VIEW_ANGLES_DEG.items()}
    view = min(distances, key=distances.__getitem__)
    return (view if distances[view] <= LA_VIEW_ANGLE_TOL_DEG else None), distances[view]


def _merge_single_slice_sa(
    stacks: list[CineStack], study_dir: Path, gaps: Sequence[SliceGap] = (), spare: Sequence[DamagedImage] = ()
) -> tuple[CineStack | None, list[CineStack]]:
    """Merge parallel single-slice cine series (one series per SA slice, common on Siemens) into one SA stack.

    Uses the largest set of >= 3 series that share grid and phase count at distinct positions. Series with fewer
    phases join it where damaged files of no known series (``spare``) can account for the missing images; their
    slices are then dropped (:func:`_drop_short_slices`). Where a dropped slice position (``gaps``, or such a slice)
    interrupts the stack, the longest run is kept and the others listed in the stack's ``dropped``.

    Returns:
        The merged stack (None if no such set) and the series merged into it.
    """
    best: list[CineStack] = []
    for seed in stacks:
        parallel = [s for s in stacks if _same_grid(seed.first, s.first) and s.num_phases <= seed.num_phases]
        missing = sum(seed.num_phases - s.num_phases for s in parallel)
        members = parallel if missing <= len(spare) else [s for s in parallel if s.num_phases == seed.num_phases]
        positions = {round(float(np.dot(s.first.position, seed.first.normal)) / POSITION_TOL_MM) for s in members}
        if len(members) >= 3 and len(positions) == len(members) and len(members) > len(best):
            best = members
    if not best:
        return None, []
    merged = _make_stack([image for s in best for image in s.slices[0]], study_dir, gaps, spare)
    merged.description = "; ".join(sorted({images[0].description for images in merged.slices}))
    named = all(view_from_description(images[0].description) == "sa" for images in merged.slices)
    merged.identified_by = (
        f"{'description' if named else 'geometry'}: {len(merged.slices)} parallel single-slice series merged"
    )
    return merged, best


def _skip_entry(stack_or_images: CineStack | Sequence[ImageHeader], reason: str) -> dict[str, Any]:
    """A ``skipped`` report entry for a series."""
    if isinstance(stack_or_images, CineStack):
        uids, numbers = stack_or_images.series_uids, stack_or_images.series_numbers
        description, count = stack_or_images.description, sum(len(s) for s in stack_or_images.slices)
    else:
        uids = sorted({image.series_uid for image in stack_or_images})
        numbers = sorted({image.series_number for image in stack_or_images})
        description, count = stack_or_images[0].description, len(stack_or_images)
    return {
        "series_instance_uid": uids,
        "series_number": numbers,
        "series_description": description,
        "num_images": count,
        "reason": reason,
    }


def _choose_sa(
    stacks: list[CineStack], study_dir: Path, gaps: Sequence[SliceGap] = (), spare: Sequence[DamagedImage] = ()
) -> tuple[CineStack | None, list[CineStack]]:
    """Pick the SA stack: a multi-slice stack named SA, else the unnamed multi-slice stack with most slices,
    else parallel single-slice series merged into a stack.

    Returns:
        The SA stack (or None) and the input stacks it consists of.
    """
    multi = [s for s in stacks if len(s.slices) > 1]
    named = [s for s in multi if view_from_description(s.description) == "sa"]
    candidates = named or [s for s in multi if view_from_description(s.description) is None]
    if candidates:
        chosen = max(candidates, key=lambda s: (len(s.slices), max(s.series_numbers)))
        chosen.identified_by = (
            "description" if named else f"geometry: multi-slice cine stack, {len(chosen.slices)} slices"
        )
        return chosen, [chosen]
    single = [s for s in stacks if len(s.slices) == 1 and view_from_description(s.description) in (None, "sa")]
    return _merge_single_slice_sa(single, study_dir, gaps, spare)


def _identify_la(stack: CineStack, sa: CineStack | None) -> tuple[str | None, str]:
    """The LA view of a cine stack that is not the SA (or None) and how it was (not) identified."""
    if len(stack.slices) > 1:
        return None, f"multi-slice stack ({len(stack.slices)} slices) that is not the chosen SA stack"
    named = view_from_description(stack.description)
    if named is not None and named != "sa" and sa is None:
        return named, "description"
    if sa is None:
        return None, "no SA stack to identify a long-axis view against, and no view named in SeriesDescription"
    long_axis = long_axis_direction(sa)
    cos_to_axis = abs(float(np.dot(stack.first.normal, long_axis)))
    if cos_to_axis >= SA_NORMAL_MIN_COS:
        # checked before the description: the plane of an SA slice has no line in the SA plane to tell a view by,
        # and a slice parallel to the stack shows no long-axis view whatever its series is called
        also = f" (its SeriesDescription names {named})" if named not in (None, "sa") else ""
        return None, f"single slice parallel to the SA stack, not part of it{also}"
    angle = la_view_angle_deg(long_axis, stack.first.normal)
    view, distance = _closest_view(angle)
    if named is not None and named != "sa":
        named_distance = abs((angle - LA_VIEW_ANGLES_DEG[named] + 90.0) % 180.0 - 90.0)
        # a description contradicted by the plane itself (a pilot named for the view it was meant to become, a
        # 3-chamber view saved as "4CH"): the geometry decides when it clearly shows another view
        if (
            view not in (None, named)
            and distance <= LA_VIEW_ANGLE_TOL_DEG / 2
            and named_distance > 2 * LA_VIEW_ANGLE_TOL_DEG
        ):
            return view, (
                f"geometry: line at {angle:.0f} deg in the SA plane, {distance:.0f} deg from typical {view} and "
                f"{named_distance:.0f} deg from the {named} its description names"
            )
        return named, "description"
    if cos_to_axis > LA_NORMAL_MAX_COS:
        return None, f"plane neither SA nor LA (normal at {np.degrees(np.arccos(cos_to_axis)):.0f} deg to long axis)"
    if view is None:
        return None, f"unidentified LA view: line at {angle:.0f} deg in the SA plane, no typical view within tolerance"
    return view, f"geometry: line at {angle:.0f} deg in the SA plane ({distance:.0f} deg from typical {view})"


def identify_stacks(
    stacks: list[CineStack], study_dir: Path, gaps: Sequence[SliceGap] = (), spare: Sequence[DamagedImage] = ()
) -> tuple[dict[str, CineStack], list[dict[str, Any]]]:
    """Assign cine stacks to plane file stems; return {stem: stack} and skipped-series report entries. ``gaps`` and
    ``spare``: dropped slice positions and damaged files of no known series, for an SA stack merged from single-slice
    series (:func:`_merge_single_slice_sa`)."""
    sa, sa_parts = _choose_sa(stacks, study_dir, gaps, spare)
    planes: dict[str, CineStack] = {"sa": sa} if sa is not None else {}
    remaining = [s for s in stacks if not any(s is part for part in sa_parts)]
    skipped: list[dict[str, Any]] = []
    candidates: dict[str, list[tuple[CineStack, str]]] = {}
    for stack in remaining:
        view, how = _identify_la(stack, sa)
        if view is None:
            skipped.append(_skip_entry(stack, how))
        else:
            candidates.setdefault(view, []).append((stack, how))
    for view, found in candidates.items():
        chosen, how = choose_la_stack(found, sa)
        chosen.identified_by = how
        planes[view] = chosen
        for stack, _ in found:
            if stack is not chosen:
                skipped.append(_skip_entry(stack, f"{view} taken by series {chosen.series_numbers}: {how}"))
    return planes, skipped


def la_tilt_deg(stack: CineStack, sa: CineStack) -> float:
    """Angle (deg) between an LA stack's plane and the SA stack's long axis (its normal): 0 when the plane contains
    the axis, as a long-axis view planned on the SA stack does."""
    return float(np.degrees(np.arcsin(min(1.0, abs(float(np.dot(stack.first.normal, sa.first.normal)))))))


def choose_la_stack(found: list[tuple[CineStack, str]], sa: CineStack | None) -> tuple[CineStack, str]:
    """The stack (and how it was identified, with why it was chosen) of one LA view among several series showing it.

    A view named in SeriesDescription beats one found by geometry. Among those, a study often holds both a pilot
    of the view (planned on localisers, off the LV axis) and the view planned on the SA stack: the plane nearest to
    containing the SA stack's long axis is taken (within :data:`LA_TILT_TIE_DEG`), then the latest acquisition.
    """
    named = [item for item in found if item[1] == "description"]
    pool = named or found
    if sa is None or len(pool) == 1:
        stack, how = max(pool, key=lambda item: max(item[0].series_numbers))
        return stack, how if len(found) == 1 else f"{how}; the latest of {len(found)} series of this view"
    tilts = [la_tilt_deg(stack, sa) for stack, _ in pool]
    near = [item for item, tilt in zip(pool, tilts) if tilt <= min(tilts) + LA_TILT_TIE_DEG]
    stack, how = max(near, key=lambda item: max(item[0].series_numbers))
    chosen_tilt = tilts[[item[0] for item in pool].index(stack)]
    return stack, (
        f"{how}; of {len(found)} series of this view, the latest whose plane lies within {LA_TILT_TIE_DEG:.0f} deg "
        f"of the nearest to the SA long axis ({chosen_tilt:.1f} deg; the others "
        f"{', '.join(f'{t:.1f}' for item, t in zip(pool, tilts) if item[0] is not stack)} deg)"
    )


# --- writing ---------------------------------------------------------------------------------------
def stack_affine_ras(stack: CineStack) -> np.ndarray:
    """4x4 affine mapping voxel (column, row, slice) to RAS world mm."""
    first = stack.first
    row_spacing, col_spacing = first.pixel_spacing
    origin, step = fit_slice_line(stack.slices)
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = first.row_dir * col_spacing
    affine_lps[:3, 1] = first.col_dir * row_spacing
    # A single slice has no step; any non-zero length along the normal keeps the affine invertible.
    affine_lps[:3, 2] = step if len(stack.slices) > 1 else first.normal
    affine_lps[:3, 3] = origin
    return LPS_TO_RAS @ affine_lps


def _read_pixels(image: ImageHeader, study_dir: Path) -> np.ndarray:
    """Pixel array (X, Y) = (column, row) in stored units with RescaleSlope/Intercept applied, float64."""
    try:
        dataset = pydicom.dcmread(image.path)
        pixels = dataset.pixel_array
    except Exception as exc:  # decoding errors come from several pixel handlers
        raise _error(
            study_dir, image.path, f"cannot decode pixel data ({exc})", "Re-export the series uncompressed."
        ) from exc
    if pixels.shape != (image.rows, image.cols):
        raise _error(study_dir, image.path, f"pixel array shape {pixels.shape} is not Rows x Columns", "Re-export.")
    try:
        slope = _numbers(dataset, "RescaleSlope", 1)
        intercept = _numbers(dataset, "RescaleIntercept", 1)
    except ValueError as exc:
        raise _error(study_dir, image.path, f"unusable attribute: {exc}", "Correct or remove the file.") from exc
    # a zero slope would blank the image: read as 1, like an absent one
    scale = 1.0 if slope is None or slope[0] == 0 else float(slope[0])
    offset = 0.0 if intercept is None else float(intercept[0])
    return (pixels.astype(np.float64) * scale + offset).T


def stack_volume(stack: CineStack, study_dir: Path) -> np.ndarray:
    """Voxel array (X, Y, S, T): int16 when the rescaled values are integers in int16 range, else float32."""
    volume = np.stack(
        [
            np.stack([_read_pixels(image, study_dir) for image in slice_images], axis=-1)
            for slice_images in stack.slices
        ],
        axis=2,
    )
    integral = np.all(volume == np.round(volume))
    in_range = volume.min() >= np.iinfo(np.int16).min and volume.max() <= np.iinfo(np.int16).max
    return volume.astype(np.int16 if integral and in_range else np.float32)


def frame_interval_ms(stack: CineStack) -> float:
    """Median TriggerTime step of the first slice (ms); 0 where phases are ordered by InstanceNumber."""
    if stack.phase_order != "trigger_time" or stack.num_phases < 2:
        return 0.0
    return float(np.median(np.diff([image.trigger_time_ms for image in stack.slices[0]])))


def study_identifiers(planes: dict[str, CineStack]) -> dict[str, Any]:
    """What links results back to the hospital's records: PatientID and StudyInstanceUID of the written planes'
    images (";"-joined where they differ) and the SeriesInstanceUIDs used per plane file."""
    images = [stack.first for stack in planes.values()]
    return {
        "patient_id": ";".join(sorted({image.patient_id for image in images if image.patient_id})),
        "study_instance_uid": ";".join(sorted({image.study_uid for image in images if image.study_uid})),
        "series_instance_uids": {stem: list(stack.series_uids) for stem, stack in planes.items()},
    }


def _written_entry(stack: CineStack, volume: np.ndarray, study_dir: Path) -> dict[str, Any]:
    """The report entry of a written plane, including each slice's source files and instances in written (phase)
    order: ``slices[k]["files"][t]`` is the image at voxels (:, :, k, t)."""
    positions = stack.slice_positions_mm()
    return {
        "series_instance_uid": stack.series_uids,
        "series_number": stack.series_numbers,
        "series_description": stack.description,
        "identified_by": stack.identified_by,
        "shape": list(volume.shape),
        "dtype": str(volume.dtype),
        "pixel_spacing_mm": list(stack.first.pixel_spacing),
        "slice_gap_mm": float(np.mean(np.diff(positions))) if len(positions) > 1 else None,
        "frame_interval_ms": frame_interval_ms(stack),
        "phase_order": stack.phase_order,
        "slices": [
            {
                "position_along_normal_mm": float(position),
                "instance_numbers": [image.instance_number for image in slice_images],
                "trigger_times_ms": [image.trigger_time_ms for image in slice_images],
                "files": [str(image.path.relative_to(study_dir)) for image in slice_images],
                # the instance at voxel (:, :, slice, frame), for objects that reference the source images
                "sop_instance_uids": [image.sop_instance_uid for image in slice_images],
                "sop_class_uids": [image.sop_class_uid for image in slice_images],
                "series_instance_uids": [image.series_uid for image in slice_images],
            }
            for position, slice_images in zip(positions, stack.slices)
        ],
    }


def _cine_stacks(
    scan: _StudyScan, study_dir: Path
) -> tuple[list[CineStack], list[dict[str, Any]], list[dict[str, Any]]]:
    """Group a scan's headers by series into cine stacks; return the stacks, skipped entries (non-cine series) and
    ignored entries (repeated images of a cine series, :func:`resolve_repeated_images`)."""
    by_series: dict[str, list[ImageHeader]] = defaultdict(list)
    for header in scan.headers:
        by_series[header.series_uid].append(header)
    stacks, skipped, ignored = [], [], []
    for uid, images in by_series.items():
        reason = _non_cine_reason(images)
        if reason is None:
            images, repeated = resolve_repeated_images(images, study_dir)
            ignored += repeated
            spare = [
                image
                for image in scan.unattributed
                if image.series_uid in ("", uid) or image.series_uid not in by_series
            ]
            gaps = [gap for gap in scan.gaps if gap.series_uid == uid]
            stacks.append(_make_stack(images, study_dir, gaps, spare))
        else:
            skipped.append(_skip_entry(images, reason))
    return stacks, skipped, ignored


def _dropped_note(scan: _StudyScan) -> str:
    """What damaged files were dropped, for the error of a study left without planes ("" if none)."""
    if not scan.dropped_files:
        return ""
    named = "; ".join(f"{entry['file']}: {entry['reason']}" for entry in scan.dropped_files[:3])
    return f"; {len(scan.dropped_files)} damaged file(s) dropped with their slices ({named})"


def _earlier_planes(out: Path, planes: dict[str, CineStack], study: Path) -> list[Path]:
    """The plane files in ``out`` that this conversion does not write: an earlier conversion's (with its
    ``conversion.json``), which would otherwise pass for planes of this study.

    Raises:
        DicomConversionError: ``out`` holds such files without an earlier conversion's report (someone's subject
            folder, whose files are not the converter's to delete).
    """
    stale = [
        path
        for stem in ALL_PLANE_FILES
        if stem not in planes
        for path in (out / f"{stem}.nii.gz", out / f"{stem}.nii")
        if path.is_file()
    ]
    if stale and not (out / REPORT_NAME).is_file():
        raise _error(
            study,
            None,
            f"the output folder {out} holds {', '.join(p.name for p in stale)}, which this study does not have, and "
            f"no {REPORT_NAME} of an earlier conversion",
            "Convert into an empty folder.",
        )
    return stale


def convert_study(study_dir: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Convert a DICOM cine study folder into a subject folder and return the conversion report.

    Writes ``sa.nii.gz`` (X, Y, S, T) and ``la_<view>.nii.gz`` (X, Y, 1, T) with RAS affines, and
    ``conversion.json`` (the returned report: written planes with their source files, skipped series with
    reasons, ignored, repaired and dropped files, dropped slices); removes an earlier conversion's planes this study
    does not have. A damaged image (pixel data missing, cut short or not Rows x Columns; a file cut short or
    unreadable) drops its slice position, every phase of it (:func:`drop_damaged_slices`); of two images at one
    slice position and phase, one is kept (:func:`resolve_repeated_images`).

    Raises:
        DicomConversionError: geometry-less images that cannot be placed, unusable attributes, inconsistent stacks,
            or no cine series left, naming the study and the file.
    """
    study = Path(study_dir).resolve()
    if not study.is_dir():
        raise _error(study, None, "not a directory", "Pass the folder holding the study's DICOM files.")
    scan = scan_study(study)
    stacks, skipped, repeated = _cine_stacks(scan, study)
    if not stacks:
        reasons = "".join(f"; series {entry['series_number']}: {entry['reason']}" for entry in skipped[:3])
        raise _error(
            study,
            None,
            f"no cine series found ({len(scan.headers)} images, {len(skipped)} non-cine series, "
            f"{len(scan.ignored)} non-image files){reasons}{_dropped_note(scan)}",
            "Check that the folder holds the cine acquisitions; re-export damaged files.",
        )
    # the slices of series dropped whole (an SA slice exported as its own series): a merged SA stack cannot bridge them
    remaining = {uid for stack in stacks for uid in stack.series_uids}
    series = {header.series_uid for header in scan.headers}
    unknown_series = [image for image in scan.unattributed if image.series_uid not in series]
    planes, identification_skips = identify_stacks(
        stacks, study, [gap for gap in scan.gaps if gap.series_uid not in remaining], unknown_series
    )
    if not planes:
        raise _error(
            study,
            None,
            f"no cine series could be identified as SA, 2ch, 3ch or 4ch{_dropped_note(scan)}",
            "See the skipped list; re-export damaged files.",
        )
    out = Path(out_dir)
    stale = _earlier_planes(out, planes, study)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for stem, stack in planes.items():
        volume = stack_volume(stack, study)
        save_nifti_atomic(volume, stack_affine_ras(stack), out / f"{stem}.nii.gz", frame_interval_ms(stack))
        written[stem] = {"file": f"{stem}.nii.gz", **_written_entry(stack, volume, study)}
    for path in stale:
        path.unlink()
    report = {
        "study_dir": str(study),
        "identifiers": study_identifiers(planes),
        "written": written,
        "skipped": skipped + identification_skips,
        "ignored_files": scan.ignored + repeated,
        "repaired_files": scan.repaired,
        # damaged files (pixel data missing, cut short or not Rows x Columns; unreadable) and the slice positions
        # dropped with them: of their own stack, or cut off from it by the gap they leave
        "dropped_files": scan.dropped_files,
        "dropped_slices": scan.dropped_slices
        + [entry for stack in stacks for entry in stack.dropped]
        + [entry for plane in planes.values() if not any(plane is s for s in stacks) for entry in plane.dropped],
        # planes an earlier conversion wrote into this folder that this study does not have
        "removed_earlier_planes": [path.name for path in stale],
        "frame_count_mismatch_policy": FRAME_COUNT_MISMATCH_POLICY,
    }
    write_json_atomic(report, out / REPORT_NAME)
    return report


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


def _study_uid(folder: Path) -> str | None:
    """StudyInstanceUID of the first readable DICOM file under ``folder`` (any nesting), None if none has one."""
    for path in sorted(folder.rglob("*")):
        if path.is_file() and is_dicom_file(path):
            try:
                uid = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"]).get(
                    "StudyInstanceUID"
                )
            except (InvalidDicomError, OSError, ValueError):
                continue
            if uid:
                return str(uid)
    return None


def dicom_studies(folder: Path) -> list[Path]:
    """The DICOM studies in ``folder``: the folder itself when it is one study in any nesting (e.g. one subfolder
    per series, as PACS exports write), else its subfolders, one study each.

    The subfolders are separate studies when their StudyInstanceUIDs differ; a folder with DICOM files of its own,
    or whose subfolders share one StudyInstanceUID, is one study.

    Raises:
        ValueError: some subfolders share a StudyInstanceUID and others do not (a study split over folders beside
            other studies), naming them.
    """
    subfolders = [p for p in sorted(folder.iterdir()) if p.is_dir() and is_dicom_study(p)]
    own_files = any(p.is_file() and is_dicom_file(p) for p in folder.iterdir())
    if own_files or len(subfolders) <= 1:
        return [folder]
    by_uid: dict[str | None, list[Path]] = defaultdict(list)
    for subfolder in subfolders:
        by_uid[_study_uid(subfolder)].append(subfolder)
    if len(by_uid) == 1:
        return [folder]
    shared = [group for uid, group in by_uid.items() if uid is not None and len(group) > 1]
    if shared:
        names = "; ".join(", ".join(p.name for p in group) for group in shared)
        raise ValueError(
            f"{folder}: the folders {names} hold one study between them beside other studies; put each study's "
            "series in one folder of their own"
        )
    return subfolders
