"""The NIfTI and DICOM loaders and the label checks fed inputs hypothesis draws: broken headers, odd shapes and
dtypes, non-finite voxels and affines, missing or garbled DICOM attributes, duplicated and truncated files, label
values no convention defines. Every input must give a correct result, a result that names what was repaired or
dropped, or a clear error (:class:`SubjectError` / :class:`DicomConversionError`) naming the subject and the file:
never another exception type and never a silently different result. One damaged or repeated DICOM file never costs
more than its slice position."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from scripts.dicom import DicomConversionError, convert_study
from scripts.labels import LA_PLANES, LABEL_MAPS, NUM_CLASSES, UNLABELLED, map_labels, undefined_label_values
from scripts.subject import MIN_CINE_FRAMES, PIXEL_SIZE_RANGE_MM, SubjectError, load_datalist, load_subject

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- NIfTI plane files -----------------------------------------------------------------------------
#: what a drawn plane file may have wrong, one or two at a time on an otherwise valid file
PLANE_FAULTS = (
    ["ndim_2", "ndim_3", "ndim_5", "ndim_5_singleton", "la_two_slices", "complex", "constant"]
    + [f"frames_{count}" for count in (0, 1, 2, 3)]
    + [f"nonfinite_{count}" for count in (1, 3, "half")]
    + [f"affine_{kind}" for kind in ("identity", "nan", "zero_column", "tiny", "huge", "parallel")]
    + [f"zooms_{value}" for value in (0.0, -1.5, np.nan)]
)


def drawn_affine(draw, kind: str | None) -> np.ndarray:
    """A (4, 4) affine: rotated, with drawn pixel sizes and origin, then spoilt as ``kind`` says (identity, a NaN, a
    zero column, tiny or huge pixels, two nearly parallel axes) unless None."""
    rotation, _ = np.linalg.qr(np.random.default_rng(draw(st.integers(0, 2**16))).normal(size=(3, 3)))
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([draw(st.floats(0.5, 3.0)), draw(st.floats(0.5, 3.0)), 8.0])
    affine[:3, 3] = draw(st.lists(st.floats(-300, 300), min_size=3, max_size=3))
    column = draw(st.integers(0, 2))
    if kind == "identity":
        affine = np.eye(4)
    elif kind == "nan":
        affine[draw(st.integers(0, 2)), column] = np.nan
    elif kind == "zero_column":
        affine[:3, column] = 0.0
    elif kind == "tiny":
        affine[:3, :2] *= 1e-3
    elif kind == "huge":
        affine[:3, :2] *= 1e3
    elif kind == "parallel":
        affine[:3, 1] = affine[:3, 0] * 1.01 + 1e-3 * affine[:3, 2]
    return affine


@st.composite
def plane_files(draw) -> dict[str, Any]:
    """A plane file's content: the stem it is saved as, the stored array, the affine, the sform/qform codes and the
    zooms written; valid (4-D, enough frames, a real dtype, finite, a plausible affine) but for up to two of
    :data:`PLANE_FAULTS`."""
    # a valid file about half the time, so that loading is checked as often as refusing
    faults = set(draw(st.one_of(st.just([]), st.lists(st.sampled_from(PLANE_FAULTS), min_size=1, max_size=2))))
    stem = draw(st.sampled_from(["sa", "la_2ch"]))
    frames = next((int(f.split("_")[1]) for f in sorted(faults) if f.startswith("frames_")), MIN_CINE_FRAMES)
    slices = 2 if "la_two_slices" in faults else draw(st.integers(1, 3)) if stem == "sa" else 1
    shape = [draw(st.integers(8, 12)), draw(st.integers(8, 12)), slices, frames]
    if "ndim_2" in faults:
        shape = shape[:2]
    elif "ndim_3" in faults:
        shape = shape[:2] + [frames]
    elif "ndim_5" in faults or "ndim_5_singleton" in faults:
        shape += [2 if "ndim_5" in faults else 1]
    dtype = "complex64" if "complex" in faults else draw(st.sampled_from(["uint8", "int16", "int32", "float32"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    values = rng.uniform(0, 200, shape)
    if "constant" in faults:
        values[:] = 7.0
    nonfinite = next((f.split("_")[1] for f in faults if f.startswith("nonfinite_")), None)
    if nonfinite is not None and values.size:
        dtype = "float64"
        count = values.size // 2 if nonfinite == "half" else min(int(nonfinite), values.size)
        values.reshape(-1)[rng.choice(values.size, count, replace=False)] = rng.choice([np.nan, np.inf], count)
    zooms = next((float(f.split("_")[1]) for f in faults if f.startswith("zooms_")), None)
    kind = next((f.split("_", 1)[1] for f in faults if f.startswith("affine_")), None)
    return {
        "stem": stem,
        "values": values.astype(dtype),
        "affine": drawn_affine(draw, kind),
        # without sform and qform nibabel builds the affine from the zooms alone
        "sform_code": 0 if zooms is not None else draw(st.sampled_from([1, 2])),
        "qform_code": 0 if zooms is not None else draw(st.sampled_from([0, 1])),
        "zooms": zooms,
    }


def write_plane(folder: Path, plane: dict[str, Any]) -> Path:
    """Save a drawn plane file as ``<folder>/<stem>.nii.gz`` with its header fields; skips the example when nibabel
    itself refuses to write such a file (not a file a loader can meet)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{plane['stem']}.nii.gz"
    try:
        image = nib.Nifti1Image(plane["values"], None)
        image.set_sform(plane["affine"], code=plane["sform_code"])
        image.set_qform(plane["affine"] if plane["qform_code"] else None, code=plane["qform_code"])
        if plane["zooms"] is not None:
            image.header["pixdim"][1 : plane["values"].ndim + 1] = plane["zooms"]
        image.to_filename(path)
    except Exception:  # nibabel refuses e.g. a NaN qform or an empty array: nothing for the loader to read
        assume(False)
    return path


@FUZZ
@given(plane_files())
def test_a_plane_file_loads_exactly_or_is_dropped_naming_the_file(plane):
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp) / "subject_fuzz"
        path = write_plane(folder, plane)
        try:
            subject = load_subject(folder)
        except SubjectError as err:
            message = str(err)
            assert "'subject_fuzz'" in message and f"{path.name}: plane dropped" in message, message
            event("dropped")
            return
        stored = nib.load(path)
        values = np.asarray(stored.dataobj)
    (loaded,) = subject.planes.values()
    image, affine = loaded.image, loaded.affine
    assert image.ndim == 4 and image.shape[3] >= MIN_CINE_FRAMES and np.isfinite(image).all()
    assert plane["stem"] not in LA_PLANES or image.shape[2] == 1
    np.testing.assert_array_equal(affine, stored.affine)
    lengths = np.linalg.norm(affine[:3, :2], axis=0)
    assert PIXEL_SIZE_RANGE_MM[0] <= lengths.min() and lengths.max() <= PIXEL_SIZE_RANGE_MM[1]
    assert values.dtype.kind in "uif", f"a {values.dtype} image must be refused, not cast"
    values = values.reshape(image.shape)
    finite = np.isfinite(values)
    np.testing.assert_array_equal(image[finite], values[finite].astype(np.float32))
    if not finite.all():
        assert any(p.startswith(f"{path.name}: {(~finite).sum()} NaN/inf voxels") for p in subject.problems)
        event("loaded, voxels repaired")
    else:
        assert subject.problems == []
        event("loaded")


# --- label files and label maps ------------------------------------------------------------------
LABEL_VALUES = [0, 1, 2, 3, 4, 5, 7, 200, UNLABELLED, -1, 2.5, np.nan, 1e10]


@st.composite
def label_files(draw) -> dict[str, Any]:
    """A label file's values (drawn from project classes, values no convention defines, non-integers, NaN) and
    dtype, and the label map it is read with: a named one, or a dict (from a subject.json sidecar) that may map
    values outside 0..254 or to no class, or not be a map of numbers at all."""
    values = draw(st.lists(st.sampled_from(LABEL_VALUES), min_size=1, max_size=4))
    dtype = draw(st.sampled_from(["uint8", "int16", "int32", "float32", "float64", "complex64"]))
    array = np.array(values, dtype=np.float64)
    if dtype.startswith(("uint", "int")):
        array = array[np.isfinite(array) & (array == np.round(array))]
        array = array[(array >= np.iinfo(dtype).min) & (array <= np.iinfo(dtype).max)]
        assume(array.size > 0)
    label_map = draw(
        st.one_of(
            st.sampled_from(sorted(LABEL_MAPS)),
            st.dictionaries(
                st.sampled_from(["1", "2", "3", "7", "200", "255", "300", "-1", "x"]),
                st.sampled_from([0, 1, 3, 5, 6, 255, 300, "LV"]),
                min_size=1,
                max_size=3,
            ),
            st.sampled_from([["1", "2"], "unknown_map"]),
        )
    )
    return {"values": array.astype(dtype), "label_map": label_map, "stem": draw(st.sampled_from(["sa", "la_4ch"]))}


def expected_classes(values: np.ndarray, label_map: str | dict, stem: str) -> np.ndarray | None:
    """The project classes ``values`` stand for under ``label_map``, worked out independently of the loader; None
    when the label file must be refused (complex voxels, a value the map does not define, a non-integer or
    non-finite value)."""
    if values.dtype.kind == "c":
        return None
    if isinstance(label_map, str):
        per_plane = LABEL_MAPS[label_map]
        mapping = per_plane.get(stem, per_plane.get("*", {}))
    else:
        mapping = {int(k): v for k, v in label_map.items()}
    mapping = {**mapping, 0: 0, UNLABELLED: UNLABELLED}
    classes = []
    for value in values.tolist():
        if not np.isfinite(value) or value != int(value) or int(value) not in mapping:
            return None
        classes.append(mapping[int(value)])
    return np.array(classes, dtype=np.uint8)


def valid_custom_map(label_map: Any) -> bool:
    """True for a dict of whole-number source values 0..254 to project classes or 255."""
    if isinstance(label_map, str):
        return label_map in LABEL_MAPS
    if not isinstance(label_map, dict):
        return False
    try:
        pairs = [(int(k), int(v)) for k, v in label_map.items()]
    except ValueError:
        return False
    return all(0 <= k < UNLABELLED and (0 <= v < NUM_CLASSES or v == UNLABELLED) for k, v in pairs)


@FUZZ
@given(label_files())
def test_a_label_file_maps_exactly_or_is_refused_naming_the_values_or_the_map(label):
    """Read by ``load_subject`` (so also by ``evaluate``), with its label map in the subject's sidecar."""
    count = label["values"].size
    frames = MIN_CINE_FRAMES
    image = np.random.default_rng(0).uniform(0, 100, (count, 2, 1, frames)).astype(np.float32)
    labels = np.repeat(label["values"].reshape(count, 1, 1, 1), 2, axis=1).repeat(frames, axis=3)
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp) / "subject_labels"
        folder.mkdir()
        affine = np.diag([1.5, 1.5, 8.0, 1.0])
        nib.Nifti1Image(image, affine).to_filename(folder / f"{label['stem']}.nii.gz")
        nib.Nifti1Image(labels, affine).to_filename(folder / f"seg_{label['stem']}.nii.gz")
        (folder / "subject.json").write_text(json.dumps({"label_map": label["label_map"]}))
        try:
            subject = load_subject(folder)
        except SubjectError as err:
            assert not valid_custom_map(label["label_map"]), str(err)
            assert "'subject_labels'" in str(err) and "subject.json" in str(err) and "label_map" in str(err)
            event("label map refused")
            return
    assert valid_custom_map(label["label_map"])
    plane = subject.planes[label["stem"]]
    expected = expected_classes(label["values"], label["label_map"], label["stem"])
    if expected is None:
        assert plane.label is None
        (problem,) = subject.problems
        assert problem.startswith(f"seg_{label['stem']}.nii.gz: label dropped (plane kept unlabelled)"), problem
        event("label dropped")
    else:
        event("label mapped")
        assert subject.problems == []
        np.testing.assert_array_equal(plane.label[:, 0, 0, 0], expected)
        assert plane.label.dtype == np.uint8


@FUZZ
@given(
    st.lists(st.integers(-5, 300), min_size=1, max_size=20),
    st.sampled_from(sorted(LABEL_MAPS)),
    st.sampled_from(["sa"] + list(LA_PLANES)),
)
def test_label_values_a_map_does_not_define_are_named_never_made_background(values, label_map, stem):
    """The label-value check ``evaluate`` relies on: every value other than 0, 255 and the map's own is reported;
    the mapping refuses values outside a byte instead of wrapping them."""
    array = np.array(values)
    per_plane = LABEL_MAPS[label_map]
    defined = {0, UNLABELLED} | set(per_plane.get(stem, per_plane.get("*", {})))
    assert undefined_label_values(array, label_map, stem) == sorted(set(values) - defined)
    if array.min() < 0 or array.max() > 255:
        with pytest.raises(ValueError, match="label values must lie in 0..255"):
            map_labels(array, label_map, stem)
    else:
        mapped = map_labels(array, label_map, stem)
        assert mapped.dtype == np.uint8 and set(mapped.tolist()) <= set(range(NUM_CLASSES)) | {UNLABELLED}


# --- DICOM studies -------------------------------------------------------------------------------
SA_SLICES, SA_PHASES, MATRIX = 4, 5, 8
#: values written over a numeric attribute's placeholder: text, NaN, infinity, a wrong count, degenerate geometry
GARBLED = {
    "ImagePositionPatient": ["abc\\1\\2", "nan\\0\\0", "1\\2", "1e999\\0\\0"],
    "ImageOrientationPatient": ["0\\0\\0\\0\\0\\0", "1\\0\\0\\1\\0\\0", "1\\0\\0", "a\\b\\c\\d\\e\\f"],
    "PixelSpacing": ["0\\0", "-1\\1", "abc", "1"],
    "TriggerTime": ["nan", "abc", "1\\2"],
    "InstanceNumber": ["x1", "1.5"],
    "SliceLocation": ["abc"],
    "RescaleSlope": ["abc", "inf"],
    "SeriesNumber": ["S1"],
}
DELETABLE = [
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "TriggerTime",
    "InstanceNumber",
    "SliceLocation",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "Rows",
    "PixelData",
]


def write_sa_study(folder: Path) -> list[Path]:
    """A small SA cine study built with pydicom: :data:`SA_SLICES` slices x :data:`SA_PHASES` phases of
    :data:`MATRIX` pixels, one file per image; returns the files in (slice, phase) order."""
    folder.mkdir(parents=True)
    series_uid, study_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    rng = np.random.default_rng(0)
    files = []
    for k in range(SA_SLICES):
        for t in range(SA_PHASES):
            dataset = pydicom.Dataset()
            dataset.file_meta = FileMetaDataset()
            dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            dataset.file_meta.MediaStorageSOPClassUID = MRImageStorage
            dataset.SOPClassUID = MRImageStorage
            dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.FrameOfReferenceUID = (
                study_uid,
                series_uid,
                frame_uid,
            )
            dataset.Modality, dataset.PatientID, dataset.SeriesDescription = "MR", "FUZZ", "cine sax"
            dataset.SeriesNumber, dataset.InstanceNumber = 5, k * SA_PHASES + t + 1
            dataset.TriggerTime = f"{40.0 * t:.1f}"
            dataset.SliceLocation = f"{8.0 * k:.1f}"
            dataset.ImagePositionPatient = [f"{-20.0 + 1.0 * k:.1f}", "-30.0", f"{10.0 + 8.0 * k:.1f}"]
            dataset.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
            dataset.PixelSpacing = ["1.5", "1.5"]
            dataset.RescaleSlope, dataset.RescaleIntercept = "1", "0"
            dataset.Rows = dataset.Columns = MATRIX
            dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
            dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 16, 15, 0
            dataset.PixelData = rng.integers(0, 1000, (MATRIX, MATRIX)).astype(np.uint16).tobytes()
            path = folder / f"image_{k}_{t}.dcm"
            dataset.save_as(path, enforce_file_format=True)
            files.append(path)
    return files


def garble(path: Path, keyword: str, stored: str) -> None:
    """Store ``stored`` as the value of ``keyword`` in a DICOM file, bytes as written: pydicom refuses to write most
    such values, but writes a raw element as it is."""
    dataset = pydicom.dcmread(path)
    tag = Tag(tag_for_keyword(keyword))
    value = (stored if len(stored) % 2 == 0 else stored + " ").encode()
    dataset[tag] = RawDataElement(tag, dictionary_VR(tag), len(value), value, 0, False, True)
    dataset.save_as(path)


@st.composite
def study_faults(draw) -> list[tuple[str, int, Any]]:
    """One or two faults, each (kind, index of the file it hits, detail): an attribute deleted or garbled, Rows
    changed, the pixel data cut, the file truncated, or the file duplicated (as the same instance, as another
    instance of the same phase, or as another instance of a phase the slice lacks)."""
    fault = st.one_of(
        st.tuples(st.just("delete"), st.integers(0, SA_SLICES * SA_PHASES - 1), st.sampled_from(DELETABLE)),
        st.tuples(
            st.just("garble"),
            st.integers(0, SA_SLICES * SA_PHASES - 1),
            st.sampled_from([(k, v) for k, values in GARBLED.items() for v in values]),
        ),
        st.tuples(st.just("rows"), st.integers(0, SA_SLICES * SA_PHASES - 1), st.sampled_from([0, 4, 9])),
        st.tuples(st.just("cut_pixels"), st.integers(0, SA_SLICES * SA_PHASES - 1), st.integers(1, 100)),
        st.tuples(st.just("truncate"), st.integers(0, SA_SLICES * SA_PHASES - 1), st.integers(10, 600)),
        st.tuples(
            st.just("duplicate"),
            st.integers(0, SA_SLICES * SA_PHASES - 1),
            st.sampled_from(["same_instance", "same_phase", "new_phase"]),
        ),
    )
    return draw(st.lists(fault, min_size=1, max_size=2))


#: a file shorter than this has no DICM prefix (byte 128 on): no sign that it was ever a DICOM file
DICOM_PREFIX_END = 132


def dropped_slices_at_most(faults: list[tuple[str, int, Any]], sizes: list[int]) -> set[int] | None:
    """The SA slice indices the faults may cost under the conversion's policy (a damaged image drops its slice
    position; a repeated one is ignored), or None when a fault is outside that policy (a garbled or deleted header
    attribute, a new phase, a file cut to no DICOM prefix): then the study may also stop, naming the file.
    ``sizes``: the intact files' lengths (bytes)."""
    slices = set()
    for kind, index, detail in faults:
        damaged = (
            kind == "rows"
            or (kind == "delete" and detail in ("Rows", "PixelData"))
            or (kind == "cut_pixels" and 2 * detail < MATRIX * MATRIX * 2)
            or (kind == "truncate" and DICOM_PREFIX_END <= detail < sizes[index])
        )
        harmless = (
            (kind == "cut_pixels" and not damaged)
            or (kind == "truncate" and detail >= sizes[index])
            or (kind == "duplicate" and detail != "new_phase")
        )
        if damaged:
            slices.add(index // SA_PHASES)
        elif not harmless:
            return None
    return slices


def longest_run(kept: list[int]) -> int:
    """The length of the longest run of consecutive indices in ``kept`` (sorted)."""
    best = run = 0
    for k, index in enumerate(kept):
        run = run + 1 if k and index == kept[k - 1] + 1 else 1
        best = max(best, run)
    return best


def apply_fault(files: list[Path], kind: str, index: int, detail: Any) -> Path:
    """Apply one fault to the study's files; returns the file it hit (or wrote)."""
    path = files[index]
    if kind == "delete":
        dataset = pydicom.dcmread(path)
        if detail in dataset:
            delattr(dataset, detail)
        dataset.save_as(path)
    elif kind == "garble":
        garble(path, *detail)
    elif kind == "rows":
        dataset = pydicom.dcmread(path)
        dataset.Rows = detail
        dataset.save_as(path)
    elif kind == "cut_pixels":
        dataset = pydicom.dcmread(path)
        dataset.PixelData = dataset.PixelData[: 2 * detail]
        dataset.save_as(path)
    elif kind == "truncate":
        path.write_bytes(path.read_bytes()[:detail])
    else:
        copy = path.with_name(f"copy_{path.name}")
        shutil.copyfile(path, copy)
        if detail != "same_instance":
            dataset = pydicom.dcmread(copy)
            dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            if detail == "new_phase":
                dataset.TriggerTime = f"{40.0 * SA_PHASES + 7:.1f}"
            dataset.save_as(copy)
        return copy
    return path


@FUZZ
@given(study_faults())
def test_a_faulty_dicom_study_converts_as_the_intact_one_naming_the_repair_or_drop_or_stops_naming_the_study(faults):
    """Damaged images (pixel data cut, missing or not Rows x Columns, files cut short) and repeated images must not
    stop the study while an SA stack of two slices is left: the result is the intact study less the damaged slices,
    each named. Other faults may stop it, naming the study."""
    with tempfile.TemporaryDirectory() as temp:
        study = Path(temp) / "study_fuzz"
        files = write_sa_study(study)
        intact = Path(temp) / "intact"
        convert_study(study, intact)
        may_drop = dropped_slices_at_most(faults, [path.stat().st_size for path in files])
        # a truncated file cannot be edited: truncations come last
        hit = {apply_fault(files, *fault).name for fault in sorted(faults, key=lambda fault: fault[0] == "truncate")}
        hit |= {files[index].name for _, index, _ in faults}  # a duplicated file's original may be the one ignored
        out = Path(temp) / "converted"
        try:
            report = convert_study(study, out)
        except DicomConversionError as err:
            event("refused")
            assert str(study) in str(err) and "Traceback" not in str(err)
            assert not (out / "sa.nii.gz").exists(), "no plane written for a study that failed"
            kept = [k for k in range(SA_SLICES) if may_drop is None or k not in may_drop]
            assert may_drop is None or longest_run(kept) < 2, f"{faults} must cost at most slices {may_drop}: {err}"
            return
        written, expected = nib.load(out / "sa.nii.gz"), nib.load(intact / "sa.nii.gz")
        intact_slices = json.loads((intact / "conversion.json").read_text())["written"]["sa"]["slices"]
        intact_positions = [round(entry["position_along_normal_mm"], 3) for entry in intact_slices]
        positions = [round(entry["position_along_normal_mm"], 3) for entry in report["written"]["sa"]["slices"]]
        dropped = {round(entry["position_along_normal_mm"], 3) for entry in report["dropped_slices"]}
        assert set(intact_positions) - set(positions) <= dropped, "every slice position lost is named"
        if may_drop is not None:
            # a slice is dropped for a damaged image, or cut off from the stack by such a slice
            damaged = {
                intact_positions.index(round(entry["position_along_normal_mm"], 3))
                for entry in report["dropped_slices"]
                if not entry["reason"].startswith("cut off")
            }
            assert damaged <= may_drop
            indices = [intact_positions.index(position) for position in positions]
            assert indices == list(range(indices[0], indices[0] + len(indices))), "the slices kept are consecutive"
            assert len(indices) == longest_run([k for k in range(SA_SLICES) if k not in damaged])
            np.testing.assert_array_equal(written.dataobj, np.asarray(expected.dataobj)[:, :, indices])
            np.testing.assert_allclose(written.affine[:3, :3], expected.affine[:3, :3], atol=1e-6)
            np.testing.assert_allclose(written.affine[:3, 3], (expected.affine @ [0, 0, indices[0], 1])[:3], atol=1e-6)
        same = written.shape == expected.shape and np.array_equal(written.dataobj, expected.dataobj)
        if not (same and np.array_equal(written.affine, expected.affine)):
            entries = report["ignored_files"] + report["repaired_files"] + report["dropped_files"]
            assert hit & {
                Path(entry["file"]).name for entry in entries
            }, f"a result unlike the intact study's without naming {hit}: {report}"
        for entry in report["repaired_files"] + report["dropped_files"]:
            assert Path(entry["file"]).name in hit, "only a file with a fault is repaired or dropped"
        event(
            "converted, slices dropped"
            if report["dropped_slices"]
            else "converted, repaired" if report["repaired_files"] else "converted"
        )


# --- datalists -------------------------------------------------------------------------------------
SUBJECT_NAMES = ["subject_a", "./subject_a", "subject_a/", "../outside", "subject_a/../../outside", "/etc", "", "nope"]


@FUZZ
@given(
    st.lists(
        st.one_of(
            st.sampled_from(SUBJECT_NAMES),
            st.builds(lambda name: {"subject": name}, st.sampled_from(SUBJECT_NAMES)),
            st.sampled_from([{"image": "subject_a"}, {"subject": None}, {"subject": 3}, None, 7]),
        ),
        max_size=3,
    ),
    st.booleans(),
)
def test_a_datalist_names_folders_inside_the_dataset_or_is_refused_naming_the_entry(entries, as_list):
    """Whatever a split lists (names climbing out of the dataset, absolute paths, entries without a subject, a split
    that is no list), the items are folders inside the dataset folder or a SubjectError names the datalist."""
    with tempfile.TemporaryDirectory() as temp:
        dataset = Path(temp) / "dataset"
        (dataset / "subject_a").mkdir(parents=True)
        (Path(temp) / "outside").mkdir()
        split = entries if as_list else (entries[0] if entries else {})
        (dataset / "datalist.json").write_text(json.dumps({"test": split}))
        try:
            items = load_datalist(dataset, "test")
        except SubjectError as err:
            assert str(dataset / "datalist.json") in str(err)
            event("refused")
            return
        assert all(Path(item["subject"]) == (dataset / "subject_a").resolve() for item in items)
        event("listed")
