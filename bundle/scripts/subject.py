"""Subject folders and datasets: find, load and validate the cine planes of one subject.

A subject folder holds ``sa.nii.gz`` (X, Y, S, T) and ``la_2ch/la_3ch/la_4ch.nii.gz`` (X, Y, 1, T), optional labels
``seg_<stem>.nii.gz`` and an optional ``subject.json`` sidecar (see ``docs/CONTRACTS.md``). Every file is validated;
an unusable plane is dropped and described in :attr:`Subject.problems`, so one bad file never stops a subject and
never becomes a silently wrong tensor. A subject with no usable plane raises :class:`SubjectError`.

Decision on frame counts: planes of one subject may have different frame counts (different acquisitions, heart
rates). All planes are kept; each is resampled in time on its own to the canonical frame count (frame 0 stays frame
0, the cycle is the acquired one), and a note is added to :attr:`Subject.notes`.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import nibabel as nib
import numpy as np

from scripts.labels import (
    ALL_PLANE_FILES,
    LA_PLANES,
    LABEL_MAPS,
    NUM_CLASSES,
    PHENOTYPE_NAMES,
    UNLABELLED,
    custom_label_map,
    map_labels,
    undefined_label_values,
)

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")
SIDECAR_NAME = "subject.json"
PHENOTYPES_CSV = "phenotypes.csv"
DATALIST_JSON = "datalist.json"
#: Split names of ``datalist.json`` and the short aliases accepted for them.
SPLIT_ALIASES = {"train": "training", "val": "validation", "valid": "validation", "testing": "test"}
#: |det| of the 3x3 affine below this (mm^3 per voxel) means a singular, unusable affine.
MIN_VOXEL_VOLUME_MM3 = 1e-6
#: Fewer frames than this are not a cine: ED and ES cannot be found (clinical cines have 20-50, rarely under 12).
MIN_CINE_FRAMES = 10
#: Up to this share of NaN/inf voxels in a plane file is repaired voxel by voxel (and reported); more drops the file.
MAX_NONFINITE_FRACTION = 0.01
#: In-plane pixel sizes (mm) outside this range mean an affine not in millimetres (pixdim in metres, a unit scale on
#: a resampled matrix, a corrupt header); cardiac MR pixels lie between 0.5 and 4 mm.
PIXEL_SIZE_RANGE_MM = (0.05, 50.0)
#: |det| of the affine's columns scaled to unit length below this: voxel axes within ~6 deg of one plane, a
#: degenerate affine whose volumes and plane positions would be wrong.
MIN_AXES_VOLUME = 0.1


class SubjectError(RuntimeError):
    """A subject (or dataset) cannot be used at all; the message says which subject, which files and what to do."""


@dataclass
class Plane:
    """One usable cine plane file.

    Attributes:
        name: file stem (``sa``, ``la_2ch``, ``la_3ch``, ``la_4ch``).
        path: the image file.
        image: float32 (X, Y, S, T) intensities as stored (no normalisation).
        affine: float64 (4, 4) voxel -> RAS world millimetres.
        label: uint8 (X, Y, S, T) project classes (255 = not annotated) or None when there is no usable label file.
        label_path: the label file, or None.
    """

    name: str
    path: Path
    image: np.ndarray
    affine: np.ndarray
    label: np.ndarray | None = None
    label_path: Path | None = None

    @property
    def num_frames(self) -> int:
        return int(self.image.shape[3])


@dataclass
class Subject:
    """The usable planes of one subject folder and what was found wrong with the others.

    Attributes:
        id: subject name (folder name).
        folder: the subject folder.
        planes: file stem -> :class:`Plane`, only usable planes.
        annotated_classes: project classes annotated in this subject (sidecar, else the classes present in the labels;
            empty without labels).
        problems: one line per unusable or repaired file (plane dropped, label dropped, voxels repaired) naming the
            file and the reason.
        notes: usable oddities (e.g. different frame counts between planes), for the logs.
        label_map: the label convention applied to the label files.
        centre: the heart centre (world mm, (3,)) and the method that found it, set by
            :func:`scripts.heart_centre.heart_centre` when first asked; None until then.
    """

    id: str
    folder: Path
    planes: dict[str, Plane]
    annotated_classes: tuple[int, ...] = ()
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    label_map: str | dict[int, int] = "project"
    centre: tuple[np.ndarray, str] | None = field(default=None, compare=False)


def find_plane_file(folder: Path, stem: str) -> Path | None:
    """``<folder>/<stem>.nii.gz`` or ``.nii`` if present, else None."""
    for suffix in NIFTI_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def is_subject_folder(folder: str | os.PathLike) -> bool:
    """True if the folder holds at least one plane image file."""
    folder = Path(folder)
    return folder.is_dir() and any(find_plane_file(folder, stem) is not None for stem in ALL_PLANE_FILES)


def subject_files(folder: str | os.PathLike) -> list[Path]:
    """Every input file of a subject folder that exists: plane images, label files and the sidecar, sorted."""
    folder = Path(folder)
    files = [find_plane_file(folder, stem) for stem in ALL_PLANE_FILES]
    files += [find_plane_file(folder, f"seg_{stem}") for stem in ALL_PLANE_FILES]
    sidecar = folder / SIDECAR_NAME
    files.append(sidecar if sidecar.is_file() else None)
    return sorted(f for f in files if f is not None)


def read_sidecar(folder: Path) -> dict[str, Any]:
    """The ``subject.json`` sidecar as a dict (empty if absent); a malformed sidecar raises :class:`SubjectError`."""
    sidecar = folder / SIDECAR_NAME
    if not sidecar.is_file():
        return {}
    try:
        content = json.loads(sidecar.read_text())
    except (OSError, ValueError) as err:
        raise SubjectError(
            f"subject {folder.name!r}: cannot read {sidecar} ({err}); fix the JSON or delete the sidecar"
        ) from err
    if not isinstance(content, dict):
        raise SubjectError(f"subject {folder.name!r}: {sidecar} must hold a JSON object, e.g. {{'label_map': 'ukbb'}}")
    return content


def _as_xyst(array: np.ndarray, stem: str, what: str) -> np.ndarray:
    """Bring a stored array to (X, Y, S, T); raise ValueError with the reason if that is impossible.

    Trailing singleton dimensions beyond 4 are dropped; a 3-D long-axis file is (X, Y, T) and gets S = 1; a 3-D
    short-axis file is ambiguous ((X, Y, S) static or one cine slice) and refused.
    """
    while array.ndim > 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 3 and stem in LA_PLANES:
        array = array[:, :, None, :]
    if array.ndim != 4:
        hint = " (a long-axis file may be 3-D (X, Y, T))" if stem in LA_PLANES else ""
        raise ValueError(f"{what} has shape {array.shape}, expected 4-D (X, Y, S, T){hint}")
    if min(array.shape) == 0:
        raise ValueError(f"{what} is empty, shape {array.shape}")
    return array


def _read_nifti(path: Path, what: str) -> nib.Nifti1Image:
    """The header of a NIfTI file (voxels read later), refused unless it stores real numbers (integers or floats):
    complex (raw or phase data) or RGB voxels would be cast to intensities silently, dropping the imaginary part or
    two channels.

    Raises:
        ValueError: the file cannot be read, or its voxels are not real numbers; ``what`` (image, label) names it.
    """
    try:
        nifti = nib.load(str(path))
        dtype = nifti.get_data_dtype()
    except Exception as err:  # nibabel, gzip, zlib and OS errors all mean "cannot be read"
        raise ValueError(f"cannot be read ({type(err).__name__}: {err}); the file is corrupt or truncated") from err
    if dtype.kind not in "uif":
        raise ValueError(
            f"{what} stores {dtype} voxels, not real numbers; save magnitude images (or class values) as integers "
            "or floats"
        )
    return nifti


def _load_image(path: Path, stem: str, notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read and validate one plane image file; returns float32 (X, Y, S, T) and its (4, 4) affine. A repair made
    to the image (a few NaN/inf voxels) is appended to ``notes``.

    Raises:
        ValueError: with the reason the file is unusable (unreadable, wrong dimensionality, empty, too few frames
            for a cine, more than :data:`MAX_NONFINITE_FRACTION` NaN/inf, an affine :func:`check_affine` refuses).
    """
    nifti = _read_nifti(path, "image")
    try:
        image = np.asarray(nifti.get_fdata(dtype=np.float32))
        affine = np.asarray(nifti.affine, dtype=np.float64)
    except Exception as err:  # nibabel, gzip, zlib and OS errors all mean "cannot be read"
        raise ValueError(f"cannot be read ({type(err).__name__}: {err}); the file is corrupt or truncated") from err
    image = _as_xyst(image, stem, "image")
    if stem in LA_PLANES and image.shape[2] != 1:
        raise ValueError(f"long-axis image has {image.shape[2]} slices, expected 1")
    if image.shape[3] < MIN_CINE_FRAMES:
        raise ValueError(
            f"has {image.shape[3]} frame(s); a cine needs at least {MIN_CINE_FRAMES} over the cycle to find "
            "end-diastole and end-systole (is this a cine series, with its frames in the 4th dimension?)"
        )
    nonfinite = ~np.isfinite(image)
    if nonfinite.any():
        count = int(nonfinite.sum())
        if count > MAX_NONFINITE_FRACTION * image.size:
            raise ValueError(f"image holds {count} NaN/inf voxels ({count / image.size:.1%})")
        if nonfinite.all():
            raise ValueError("image holds only NaN/inf voxels")
        # the lowest finite intensity reads as air: the network sees no structure where the scanner stored none
        image[nonfinite] = image[~nonfinite].min()
        notes.append(f"{count} NaN/inf voxels set to the image's lowest intensity")
    if image.min() == image.max():
        raise ValueError(f"image is constant (every voxel {float(image.min())})")
    check_affine(affine)
    return image, affine


def check_affine(affine: np.ndarray) -> None:
    """Raise ValueError, showing the affine and saying what is wrong, unless it maps voxels to millimetres along
    three independent axes with plausible in-plane pixel sizes (:data:`PIXEL_SIZE_RANGE_MM`)."""
    shown = np.array2string(affine, precision=3)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < MIN_VOXEL_VOLUME_MM3:
        raise ValueError(f"affine is singular or not finite:\n{shown}")
    lengths = np.linalg.norm(affine[:3, :3], axis=0)
    if abs(np.linalg.det(affine[:3, :3] / lengths)) < MIN_AXES_VOLUME:
        raise ValueError(f"affine's voxel axes nearly lie in one plane (a degenerate affine):\n{shown}")
    low, high = PIXEL_SIZE_RANGE_MM
    if not (low <= lengths[:2].min() and lengths[:2].max() <= high):
        raise ValueError(
            f"in-plane pixel size {np.round(lengths[:2], 4).tolist()} mm lies outside {low}-{high} mm: the affine "
            f"is not in millimetres (check pixdim and the sform/qform):\n{shown}"
        )


def _load_label(path: Path, stem: str, shape: tuple[int, ...], label_map: str | Mapping[int, int]) -> np.ndarray:
    """Read and validate one label file; returns uint8 (X, Y, S, T) project classes.

    Raises:
        ValueError: with the reason the label is unusable.
    """
    nifti = _read_nifti(path, "label")
    try:
        values = np.asanyarray(nifti.dataobj)
    except Exception as err:  # nibabel, gzip, zlib and OS errors all mean "cannot be read"
        raise ValueError(f"cannot be read ({type(err).__name__}: {err}); the file is corrupt or truncated") from err
    values = _as_xyst(values, stem, "label")
    if values.shape != shape:
        raise ValueError(f"label shape {values.shape} differs from the image shape {shape}")
    if values.dtype.kind == "f":
        if not np.isfinite(values).all() or not np.array_equal(values, np.rint(values)):
            raise ValueError("label holds NaN/inf or non-integer values")
    undefined = undefined_label_values(values, label_map, stem)
    if undefined:
        name = f"label map {label_map!r}" if isinstance(label_map, str) else "the label map given"
        raise ValueError(
            f"label holds values {undefined[:10]} that {name} does not define for {stem}; give the map of its "
            f'convention (--label_map, or "label_map" in subject.json: {sorted(LABEL_MAPS)} or a dict)'
        )
    if values.dtype == np.uint8:  # map the 256 possible values once, then index (4x faster than per voxel)
        return map_labels(np.arange(256), label_map, plane=stem)[values]
    return map_labels(values, label_map, plane=stem)


def _load_plane(folder: Path, stem: str, label_map: str | Mapping[int, int], problems: list[str]) -> Plane | None:
    """The plane file ``stem`` of ``folder`` with its label file if any; None if absent or unusable (then the reason
    is appended to ``problems``; an unusable label keeps the plane, unlabelled)."""
    path = find_plane_file(folder, stem)
    if path is None:
        return None
    notes: list[str] = []
    try:
        image, affine = _load_image(path, stem, notes)
    except ValueError as err:
        problems.append(f"{path.name}: plane dropped, {err}")
        return None
    problems.extend(f"{path.name}: {note}" for note in notes)
    plane = Plane(name=stem, path=path, image=image, affine=affine)
    label_path = find_plane_file(folder, f"seg_{stem}")
    if label_path is not None:
        try:
            plane.label = _load_label(label_path, stem, image.shape, label_map)
            plane.label_path = label_path
        except ValueError as err:
            problems.append(f"{label_path.name}: label dropped (plane kept unlabelled), {err}")
    return plane


def _annotated_classes(planes: Mapping[str, Plane], sidecar: Mapping[str, Any]) -> tuple[int, ...]:
    """Classes the labels annotate: the sidecar's ``annotated_classes`` (plus background), else the classes present
    in any label file; () without labels."""
    if "annotated_classes" in sidecar:
        annotated = tuple(sorted({int(c) for c in sidecar["annotated_classes"]} | {0}))
    else:
        present: set[int] = set()
        for plane in planes.values():
            if plane.label is not None:
                counts = np.bincount(plane.label.ravel(order="K"), minlength=UNLABELLED + 1)
                present |= {int(c) for c in np.flatnonzero(counts[:UNLABELLED])}
        annotated = tuple(sorted(present | {0})) if present else ()
    return tuple(c for c in annotated if 0 <= c < NUM_CLASSES)


def load_subject(folder: str | os.PathLike, label_map: str | Mapping[int, int] = "project") -> Subject:
    """Load and validate every plane file of one subject folder.

    Args:
        folder: the subject folder.
        label_map: label convention of the ``seg_*`` files (a name of ``labels.LABEL_MAPS`` or a dict); the
            ``label_map`` of a ``subject.json`` sidecar takes precedence.

    Returns:
        :class:`Subject` with the usable planes; unusable files are listed in ``problems``.

    Raises:
        SubjectError: the folder does not exist, the sidecar or the label map is malformed, or no plane is usable.
    """
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise SubjectError(f"subject folder {folder} does not exist; check the dataset path or the datalist")
    sidecar = read_sidecar(folder)
    given_by = f"the label_map of {folder / SIDECAR_NAME}" if "label_map" in sidecar else "the label map given"
    label_map = sidecar.get("label_map", label_map)
    if isinstance(label_map, str) and label_map not in LABEL_MAPS:
        raise SubjectError(
            f"subject {folder.name!r}: {given_by}, {label_map!r}, is none of {sorted(LABEL_MAPS)}; name one or give "
            "a dict of source value: project class"
        )
    if not isinstance(label_map, str):
        try:
            label_map = custom_label_map(label_map)
        except ValueError as err:
            raise SubjectError(f"subject {folder.name!r}: {given_by} is unusable: {err}") from err

    problems: list[str] = []
    loaded = {stem: _load_plane(folder, stem, label_map, problems) for stem in ALL_PLANE_FILES}
    planes = {stem: plane for stem, plane in loaded.items() if plane is not None}
    for problem in problems:
        logger.warning("subject %s: %s", folder.name, problem)
    if not planes:
        found = [p.name for p in subject_files(folder)]
        reasons = "; ".join(problems) if problems else "no plane file found"
        raise SubjectError(
            f"subject {folder.name!r} ({folder}) has no usable plane: {reasons}. Files present: {found or 'none'}. "
            f"Expected {', '.join(s + '.nii.gz' for s in ALL_PLANE_FILES)}; re-export or replace the listed files, "
            f"or remove the subject from the datalist."
        )

    notes = []
    frame_counts = {stem: plane.num_frames for stem, plane in planes.items()}
    if len(set(frame_counts.values())) > 1:
        notes.append(f"planes have different frame counts {frame_counts}; each is resampled in time on its own")
        logger.info("subject %s: %s", folder.name, notes[-1])
    return Subject(
        id=folder.name,
        folder=folder,
        planes=planes,
        annotated_classes=_annotated_classes(planes, sidecar),
        problems=problems,
        notes=notes,
        label_map=label_map,
    )


# --- datasets -------------------------------------------------------------------------------------


def read_phenotypes(csv_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``phenotypes.csv`` -> subject name -> float32 (17,) in ``labels.PHENOTYPE_NAMES`` order, NaN where unknown.

    Columns other than ``subject`` and the phenotype names are ignored; empty or non-numeric cells are NaN.
    """
    table: dict[str, np.ndarray] = {}
    with open(csv_path, newline="") as handle:
        for row in csv.DictReader(handle):
            name = (row.get("subject") or "").strip()
            if not name:
                continue
            values = np.full(len(PHENOTYPE_NAMES), np.nan, dtype=np.float32)
            for index, phenotype in enumerate(PHENOTYPE_NAMES):
                try:
                    values[index] = float(row.get(phenotype) or "nan")
                except ValueError:
                    pass
            table[name] = values
    return table


def _items(folders: list[Path], phenotypes: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """Datalist items ``{"subject", "id", "phenotypes"}`` for subject folders."""
    unknown = np.full(len(PHENOTYPE_NAMES), np.nan, dtype=np.float32)
    return [
        {"subject": str(folder), "id": folder.name, "phenotypes": phenotypes.get(folder.name, unknown).copy()}
        for folder in folders
    ]


def _subject_folders(dataset_dir: Path) -> list[Path]:
    return sorted(child.resolve() for child in dataset_dir.iterdir() if is_subject_folder(child))


def load_datalist(
    dataset_dir: str | os.PathLike,
    split: str,
    datalist: str | os.PathLike | None = None,
    max_subjects: int | None = None,
) -> list[dict[str, Any]]:
    """Items of one split of a dataset folder.

    Args:
        dataset_dir: folder of subject folders, optionally with ``phenotypes.csv`` and ``datalist.json``.
        split: ``training``, ``validation`` or ``test`` (aliases ``train``, ``val``).
        datalist: the datalist file, relative to ``dataset_dir`` unless absolute (e.g. one per cross-validation
            fold); it must exist. None: ``dataset_dir/datalist.json`` if there is one, else EVERY subject folder is
            in EVERY split (useful for pretraining and inference; make a datalist for honest validation).
        max_subjects: keep only the first this many subjects of the split (e.g. a label-efficiency study: pretrain
            on all, fine-tune on a few); None keeps all.

    Returns:
        ``[{"subject": absolute folder path, "id": folder name, "phenotypes": float32 (17,) NaN where unknown}]``.

    Raises:
        SubjectError: the dataset folder, a named datalist or a listed subject folder does not exist, a listed folder
            lies outside the dataset folder, or the split is not in the file.
    """
    dataset_dir = Path(dataset_dir).resolve()
    if not dataset_dir.is_dir():
        raise SubjectError(f"dataset folder {dataset_dir} does not exist; set dataset_dir to a folder of subjects")
    csv_path = dataset_dir / PHENOTYPES_CSV
    phenotypes = read_phenotypes(csv_path) if csv_path.is_file() else {}
    datalist_path = dataset_dir / (datalist or DATALIST_JSON)
    if max_subjects is not None and max_subjects < 1:
        raise SubjectError(f"max_subjects must be at least 1 (or None for all), got {max_subjects}")
    if not datalist_path.is_file():
        if datalist:  # a named split file that is not there must not silently put every subject in every split
            raise SubjectError(f"datalist {datalist_path} does not exist: check --datalist (relative to {dataset_dir})")
        return _items(_subject_folders(dataset_dir)[:max_subjects], phenotypes)

    split = SPLIT_ALIASES.get(split, split)
    try:
        listing = json.loads(datalist_path.read_text())
        entries = listing[split]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SubjectError(
            f"{datalist_path}: cannot read split {split!r} ({type(err).__name__}: {err}); expected "
            f'{{"training": [{{"subject": "<folder>"}}], "validation": [...], "test": [...]}}'
        ) from err
    if not isinstance(entries, list):
        raise SubjectError(
            f"{datalist_path}: split {split!r} holds {type(entries).__name__} {entries!r}, not a list; expected "
            f'{{"{split}": [{{"subject": "<folder>"}}, ...]}}'
        )
    folders = []
    for entry in entries:
        name = entry.get("subject") if isinstance(entry, dict) else entry
        if not isinstance(name, str) or not name:
            raise SubjectError(
                f"{datalist_path}: entry {entry!r} of split {split!r} names no subject folder; expected "
                '{"subject": "<folder>"} or "<folder>"'
            )
        # by name, not by resolved path, so that a dataset of symlinked subject folders stays valid
        if not Path(os.path.normpath(dataset_dir / name)).is_relative_to(dataset_dir):
            raise SubjectError(
                f"{datalist_path}: subject {name!r} of split {split!r} lies outside the dataset folder {dataset_dir}; "
                "a datalist names subject folders inside it"
            )
        folder = (dataset_dir / name).resolve()
        if not folder.is_dir():
            raise SubjectError(f"{datalist_path}: subject {name!r} of split {split!r} has no folder {folder}")
        folders.append(folder)
    return _items(folders[:max_subjects], phenotypes)


def mixed_datalist(
    dataset_dir: str | os.PathLike,
    split: str,
    datalist: str | os.PathLike | None = None,
    max_subjects: int | None = None,
    real_dataset_dir: str | os.PathLike | None = None,
    real_datalist: str | os.PathLike | None = None,
    real_repeats: int = 1,
) -> list[dict[str, Any]]:
    """Items of one split of a dataset, followed by the same split of a second (real) dataset repeated.

    A few labelled real studies beside hundreds of synthetic subjects would be one step in a hundred; repeating them
    ``real_repeats`` times per epoch sets their share of the steps, while the synthetic subjects keep supervising the
    classes and frames the real contours leave out.

    Args:
        dataset_dir, split, datalist, max_subjects: as :func:`load_datalist` (the synthetic cohort).
        real_dataset_dir: folder of real subjects; None gives :func:`load_datalist`'s items alone.
        real_datalist: split file of the real folder (e.g. a leave-one-out fold), as ``datalist``.
        real_repeats: how many times each real item appears (>= 1).

    Returns:
        The synthetic items, then every real item ``real_repeats`` times (phenotypes NaN where the real folder has
        no ``phenotypes.csv``).

    Raises:
        SubjectError: ``real_repeats`` < 1, or the real folder has no subject in ``split``.
    """
    items = load_datalist(dataset_dir, split, datalist, max_subjects)
    if real_dataset_dir is None:
        return items
    if real_repeats < 1:
        raise SubjectError(f"real_repeats must be at least 1, got {real_repeats}")
    real = load_datalist(real_dataset_dir, split, real_datalist)
    if not real:
        # a real folder whose split file lists its studies under "test" only (as tools.import_sunnybrook writes it)
        # would otherwise train on the synthetic cohort alone without a word
        raise SubjectError(
            f"the real dataset {real_dataset_dir} has no subject in its {split!r} split "
            f"({real_datalist or DATALIST_JSON}): pass --real_datalist with a split file that lists them there"
        )
    return items + [dict(item, phenotypes=item["phenotypes"].copy()) for item in real for _ in range(real_repeats)]


def discover_subjects(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Items (as :func:`load_datalist`) for a subject folder (one item) or a dataset folder (all its subjects).

    Phenotypes are read from ``phenotypes.csv`` in the dataset folder (for a subject folder: its parent).

    Raises:
        SubjectError: the path is neither a subject folder nor a folder containing subject folders.
    """
    path = Path(path).resolve()
    if is_subject_folder(path):
        folders, dataset_dir = [path], path.parent
    elif path.is_dir():
        folders, dataset_dir = _subject_folders(path), path
    else:
        folders, dataset_dir = [], path
    if not folders:
        raise SubjectError(
            f"{path} is neither a subject folder (holding {', '.join(s + '.nii.gz' for s in ALL_PLANE_FILES)}) "
            f"nor a folder of subject folders"
        )
    csv_path = dataset_dir / PHENOTYPES_CSV
    return _items(folders, read_phenotypes(csv_path) if csv_path.is_file() else {})
