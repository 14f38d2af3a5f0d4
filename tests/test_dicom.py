"""DICOM cine study -> subject folder, and the Sunnybrook import, exercised through the real CLIs."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from scripts.dicom import view_from_description  # bundle/ is put on sys.path by conftest.py

REPO = Path(__file__).resolve().parents[1]
SUNNYBROOK = REPO.parent / "shared" / "data" / "sunnybrook"
STUDY = SUNNYBROOK / "dicoms" / "SCD0000301"  # 10 slices x 20 phases, InstanceNumber = slice * 20 + phase + 1
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])

pytestmark = [
    pytest.mark.skipif(
        not STUDY.is_dir(), reason=f"Sunnybrook data not found at {SUNNYBROOK} (expected ../shared beside the repo)"
    ),
    # The Sunnybrook UIDs have leading-zero components; pydicom warns on every read.
    pytest.mark.filterwarnings("ignore:Invalid value for VR UI"),
]


def run_cli(script: str, *args: str | Path) -> subprocess.CompletedProcess:
    """Run a tool (``convert_dicom.py``: ``python -m tools.convert_dicom``) from the repository root; capture output."""
    command = [sys.executable, "-m", f"tools.{Path(script).stem}", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO)


def voxel_world_ras(dataset: pydicom.Dataset, row: int, col: int) -> np.ndarray:
    """RAS mm of pixel (row, col) from the file's own ImagePositionPatient/OrientationPatient/PixelSpacing."""
    orientation = np.asarray(dataset.ImageOrientationPatient, dtype=float)
    row_spacing, col_spacing = map(float, dataset.PixelSpacing)
    lps = (
        np.asarray(dataset.ImagePositionPatient, dtype=float)
        + col * col_spacing * orientation[:3]
        + row * row_spacing * orientation[3:]
    )
    return LPS_TO_RAS @ lps


def rescaled_pixels(dataset: pydicom.Dataset) -> np.ndarray:
    """Pixel array (rows, cols) with RescaleSlope/Intercept applied."""
    slope = float(dataset.get("RescaleSlope", 1) or 1)
    return dataset.pixel_array * slope + float(dataset.get("RescaleIntercept", 0) or 0)


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SCD0000301 converted by tools/convert_dicom.py."""
    out = tmp_path_factory.mktemp("scd301")
    result = run_cli("convert_dicom.py", STUDY, "--out", out)
    assert result.returncode == 0, result.stderr
    return out


def test_shape_dtype_and_report(converted: Path) -> None:
    image = nib.load(converted / "sa.nii.gz")
    assert image.shape == (256, 256, 10, 20)
    assert image.get_data_dtype() == np.int16
    report = json.loads((converted / "conversion.json").read_text())
    assert set(report["written"]) == {"sa"}
    assert not list(converted.glob("la_*.nii.gz"))
    assert image.header.get_zooms()[3] == pytest.approx(report["written"]["sa"]["frame_interval_ms"])


def test_affine_and_values_match_dicom_headers(converted: Path) -> None:
    image = nib.load(converted / "sa.nii.gz")
    data = np.asarray(image.dataobj)
    files = sorted(STUDY.glob("*.dcm"))
    rng = random.Random(0)
    checked_slices = set()
    for path in rng.sample(files, 12):
        dataset = pydicom.dcmread(path)
        pixels = rescaled_pixels(dataset)
        # The file's first pixel must map to a whole voxel index; its slice index says where to look.
        centre_ras = voxel_world_ras(dataset, 0, 0)
        voxel = np.linalg.solve(image.affine, np.append(centre_ras, 1.0))[:3]
        np.testing.assert_allclose(voxel, np.round(voxel), atol=1e-2)
        slice_index = int(round(voxel[2]))
        frame_matches = [t for t in range(data.shape[3]) if np.array_equal(data[:, :, slice_index, t], pixels.T)]
        assert frame_matches, f"{path.name}: pixels not found in slice {slice_index}"
        for row, col in [(0, 0), (17, 201), (128, 64), (255, 255)]:
            world = image.affine @ np.array([col, row, slice_index, 1.0])
            np.testing.assert_allclose(world[:3], voxel_world_ras(dataset, row, col), atol=1e-3)
            assert data[col, row, slice_index, frame_matches[0]] == pixels[row, col]
        checked_slices.add(slice_index)
    assert len(checked_slices) > 3


def test_slices_along_normal_and_phases_by_trigger_time(converted: Path) -> None:
    image = nib.load(converted / "sa.nii.gz")
    data = np.asarray(image.dataobj)
    # Slice k+1 lies one positive step along the third affine column, which is the slice normal.
    normal = image.affine[:3, 2] / np.linalg.norm(image.affine[:3, 2])
    row_dir, col_dir = image.affine[:3, 0], image.affine[:3, 1]
    assert abs(np.dot(normal, np.cross(row_dir, col_dir) / np.linalg.norm(np.cross(row_dir, col_dir)))) > 0.999
    # Phases of one position, ordered by the files' own TriggerTime, equal the written frames in order.
    slice_files = [pydicom.dcmread(STUDY / f"{n}.dcm") for n in range(41, 61)]
    slice_files.sort(key=lambda dataset: float(dataset.TriggerTime))
    first_voxel = np.linalg.solve(image.affine, np.append(voxel_world_ras(slice_files[0], 0, 0), 1.0))
    slice_index = int(round(first_voxel[2]))
    for frame, dataset in enumerate(slice_files):
        np.testing.assert_array_equal(data[:, :, slice_index, frame], rescaled_pixels(dataset).T)


def _long_axis_basis(sa_template: pydicom.Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(long axis base->apex, up, left) in LPS: the SA-plane display basis, anterior up, patient left right."""
    orientation = np.asarray(sa_template.ImageOrientationPatient, dtype=float)
    axis = np.cross(orientation[:3], orientation[3:])
    axis /= np.linalg.norm(axis)
    axis = axis if np.dot(axis, [1.0, -1.0, -1.0]) > 0 else -axis  # apex is left, anterior, inferior
    left = np.array([1.0, 0.0, 0.0]) - axis[0] * axis
    left /= np.linalg.norm(left)
    up = np.cross(axis, left)
    up = up if np.dot(up, [0.0, -1.0, 1.0]) > 0 else -up
    return axis, up, left


def write_synthetic_la_series(templates: list[Path], angle_deg: float, folder: Path) -> None:
    """Write a single-slice cine series containing the SA long axis, its line at ``angle_deg`` in the SA plane.

    Pixels are copied from SA images (only the geometry matters); SeriesDescription is removed, so only
    geometry can identify the view.
    """
    folder.mkdir(parents=True)
    axis, up, left = _long_axis_basis(pydicom.dcmread(templates[0], stop_before_pixels=True))
    line = np.cos(np.radians(angle_deg)) * up + np.sin(np.radians(angle_deg)) * left
    series_uid = generate_uid()
    for path in templates:
        dataset = pydicom.dcmread(path)
        spacing = float(dataset.PixelSpacing[0])
        centre = np.asarray(dataset.ImagePositionPatient, dtype=float)  # any point near the heart will do
        # Rows run along `line`, columns along the long axis: the plane contains the long axis.
        dataset.ImageOrientationPatient = [round(float(v), 6) for v in (*line, *axis)]
        dataset.ImagePositionPatient = [round(float(v), 4) for v in centre - 128 * spacing * (line + axis)]
        dataset.SeriesInstanceUID = series_uid
        dataset.SeriesNumber = 100 + int(angle_deg)
        dataset.SOPInstanceUID = generate_uid()
        del dataset.SeriesDescription
        dataset.save_as(folder / f"{dataset.SOPInstanceUID}.dcm")


def make_mixed_study(root: Path) -> Path:
    """A messy study: 4 SA slices with shuffled names in nested folders, junk files, a single-phase series, a
    localiser image without position, and synthetic LA series at the typical 2ch/4ch/3ch angles plus one at an
    untypical angle."""
    study = root / "study"
    rng = random.Random(1)
    for number in rng.sample(range(1, 81), 80):  # 4 slices x 20 phases
        target = study / f"level{number % 3}" / f"sub{number % 2}" / f"img_{rng.getrandbits(32):08x}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(STUDY / f"{number}.dcm", target)
    (study / "notes.txt").write_text("not an image\n")
    (study / "level0" / "DATA.bin").write_bytes(bytes(range(256)) * 4)
    single = pydicom.dcmread(STUDY / "1.dcm")
    single.SeriesInstanceUID, single.SeriesNumber, single.SOPInstanceUID = generate_uid(), 99, generate_uid()
    single.save_as(study / "level1" / "single_phase")
    localiser = pydicom.dcmread(STUDY / "2.dcm")
    localiser.SeriesInstanceUID, localiser.SeriesNumber, localiser.SOPInstanceUID = generate_uid(), 98, generate_uid()
    localiser.SeriesDescription = "localizer"
    del localiser.ImagePositionPatient
    localiser.save_as(study / "level2" / "localiser_without_position")
    la_templates = [STUDY / f"{n}.dcm" for n in range(41, 49)]  # 8 phases are enough for a cine series
    for angle in (15.0, 75.0, 140.0, 45.0):
        write_synthetic_la_series(la_templates, angle, study / "la" / f"angle{int(angle)}")
    return study


def test_mixed_study(tmp_path: Path) -> None:
    study = make_mixed_study(tmp_path)
    out = tmp_path / "subject"
    result = run_cli("convert_dicom.py", study, "--out", out)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "conversion.json").read_text())
    assert nib.load(out / "sa.nii.gz").shape == (256, 256, 4, 20)
    expected_views = {"la_2ch": 115, "la_4ch": 175, "la_3ch": 240}  # series numbers = 100 + angle
    for view, series_number in expected_views.items():
        assert nib.load(out / f"{view}.nii.gz").shape == (256, 256, 1, 8)
        assert report["written"][view]["series_number"] == [series_number]
        assert report["written"][view]["identified_by"].startswith("geometry")
    skipped = {entry["series_number"][0]: entry["reason"] for entry in report["skipped"]}
    assert "not cine" in skipped[99]
    assert "unidentified" in skipped[145]
    ignored = {entry["file"]: entry["reason"] for entry in report["ignored_files"]}
    assert {"notes.txt", "level0/DATA.bin"} <= set(ignored)
    reason = ignored["level2/localiser_without_position"]
    assert reason == "no ImagePositionPatient, in a non-cine series (SeriesDescription 'localizer')"


@pytest.mark.skipif(not (SUNNYBROOK.parent / "bivme_patient1").is_dir(), reason="bivme_patient1 not in ../shared")
def test_long_axis_views_are_chosen_and_named_by_their_planes_among_repeated_series(tmp_path: Path) -> None:
    """The real multi-view study holds two 2CH series: a later one 16 deg off the SA stack's long axis (a pilot) and
    one 2 deg off; the second is taken, so that the long-axis planes meet at the LV, and the other is reported. Its
    two "4CH" series are a 4-chamber and a 3-chamber view by their planes."""
    out = tmp_path / "subject"
    result = run_cli("convert_dicom.py", SUNNYBROOK.parent / "bivme_patient1" / "dicoms", "--out", out)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "conversion.json").read_text())
    assert report["written"]["la_2ch"]["series_number"] == [17001]
    skipped = {entry["series_number"][0]: entry["reason"] for entry in report["skipped"]}
    assert "la_2ch taken by series [17001]" in skipped[19001] and "16.1 deg" in skipped[19001]
    # a series described "4CH" whose plane lies where 3-chamber views lie (141 deg in the SA plane) is the 3-chamber
    # view; the other "4CH" series (82 deg) is the 4-chamber view
    assert report["written"]["la_4ch"]["series_number"] == [14001]
    assert report["written"]["la_3ch"]["series_number"] == [16001]
    assert "61 deg from the la_4ch its description names" in report["written"]["la_3ch"]["identified_by"]


def test_a_second_copy_of_an_instance_is_ignored_and_reported(tmp_path: Path) -> None:
    """A repeated export leaves the same instance in two files: the copy is ignored, named, and the study converts."""
    study = tmp_path / "study"
    shutil.copytree(STUDY, study)
    shutil.copy(study / "5.dcm", study / "5_copy.dcm")
    out = tmp_path / "subject"
    result = run_cli("convert_dicom.py", study, "--out", out)
    assert result.returncode == 0, result.stderr
    assert nib.load(out / "sa.nii.gz").shape == (256, 256, 10, 20)
    report = json.loads((out / "conversion.json").read_text())
    assert {"file": "5_copy.dcm", "reason": "a second copy of the instance in 5.dcm"} in report["ignored_files"]


def sa_and_la_study(study: Path) -> Path:
    """A study folder of two Sunnybrook SA slices x 20 phases (``sa/``) and a synthetic 4-chamber series (``la/``)."""
    (study / "sa").mkdir(parents=True)
    for number in range(1, 41):
        shutil.copyfile(STUDY / f"{number}.dcm", study / "sa" / f"{number}.dcm")
    write_synthetic_la_series([STUDY / f"{n}.dcm" for n in range(1, 7)], 75.0, study / "la")
    return study


def test_la_written_with_correct_affine(tmp_path: Path) -> None:
    study = sa_and_la_study(tmp_path / "study")
    out = tmp_path / "subject"
    assert run_cli("convert_dicom.py", study, "--out", out).returncode == 0
    image = nib.load(out / "la_4ch.nii.gz")
    dataset = pydicom.dcmread(next((study / "la").iterdir()))
    for row, col in [(0, 0), (10, 250), (200, 30)]:
        world = image.affine @ np.array([col, row, 0, 1.0])
        np.testing.assert_allclose(world[:3], voxel_world_ras(dataset, row, col), atol=1e-3)


def test_a_reconversion_removes_the_earlier_conversions_planes_the_study_no_longer_has(tmp_path: Path) -> None:
    """Converted again into the same folder without its long-axis series, a study leaves no la_4ch.nii.gz of the
    earlier conversion to pass for one of its planes; a folder that no conversion wrote is never emptied."""
    study = sa_and_la_study(tmp_path / "study")
    out = tmp_path / "subject"
    assert run_cli("convert_dicom.py", study, "--out", out).returncode == 0
    assert (out / "la_4ch.nii.gz").is_file()
    shutil.rmtree(study / "la")
    assert run_cli("convert_dicom.py", study, "--out", out).returncode == 0
    assert sorted(p.name for p in out.iterdir()) == ["conversion.json", "sa.nii.gz"]
    assert json.loads((out / "conversion.json").read_text())["removed_earlier_planes"] == ["la_4ch.nii.gz"]

    someone_elses = tmp_path / "subject_folder"
    someone_elses.mkdir()
    (someone_elses / "la_2ch.nii.gz").write_bytes(b"a plane of someone else's")
    result = run_cli("convert_dicom.py", study, "--out", someone_elses)
    assert result.returncode == 1 and "la_2ch.nii.gz, which this study does not have" in result.stderr
    assert (someone_elses / "la_2ch.nii.gz").is_file() and not (someone_elses / "sa.nii.gz").exists()


def test_one_series_per_sa_slice_is_merged(tmp_path: Path) -> None:
    """Siemens-style SA: each slice position is its own series; they form one stack."""
    study = tmp_path / "study"
    study.mkdir()
    for slice_index in range(4):
        series_uid = generate_uid()
        for phase in range(20):
            dataset = pydicom.dcmread(STUDY / f"{slice_index * 20 + phase + 1}.dcm")
            dataset.SeriesInstanceUID, dataset.SeriesNumber = series_uid, 10 + slice_index
            dataset.SeriesDescription = f"cine_sax_{slice_index}"
            dataset.save_as(study / f"{generate_uid()}.dcm")
    out = tmp_path / "subject"
    assert run_cli("convert_dicom.py", study, "--out", out).returncode == 0
    report = json.loads((out / "conversion.json").read_text())
    assert report["written"]["sa"]["shape"] == [256, 256, 4, 20]
    assert report["written"]["sa"]["series_number"] == [10, 11, 12, 13]
    assert report["written"]["sa"]["identified_by"].startswith("description")


def test_an_sa_slice_described_as_a_long_axis_view_is_not_taken_for_one(tmp_path: Path) -> None:
    """The last SA slice exported as its own series described "cine 4ch": its plane is parallel to the SA stack, so it
    is skipped with the reason (its plane has no line in the SA plane to tell a view by), never written as la_*."""
    study = tmp_path / "study"
    study.mkdir()
    series_uid = generate_uid()
    for number in range(1, 201):
        dataset = pydicom.dcmread(STUDY / f"{number}.dcm")
        if number > 180:
            dataset.SeriesInstanceUID, dataset.SeriesDescription, dataset.SeriesNumber = series_uid, "cine 4ch", 99
        dataset.save_as(study / f"{number}.dcm")
    out = tmp_path / "subject"
    assert run_cli("convert_dicom.py", study, "--out", out).returncode == 0
    report = json.loads((out / "conversion.json").read_text())
    assert set(report["written"]) == {"sa"} and not list(out.glob("la_*.nii.gz"))
    (skipped,) = report["skipped"]
    assert skipped["series_number"] == [99]
    assert (
        skipped["reason"]
        == "single slice parallel to the SA stack, not part of it (its SeriesDescription names la_4ch)"
    )


@pytest.mark.parametrize(
    "description, view",
    [("CINE_SAX", "sa"), ("short axis stack", "sa"), ("cine 2-chamber", "la_2ch"), ("VLA", "la_2ch"),
     ("LVOT cine", "la_3ch"), ("3CH", "la_3ch"), ("4ch_cine", "la_4ch"), ("HLA", "la_4ch"), ("", None),
     ("sagittal", None), ("4ch and 2ch", None)],
)  # fmt: skip
def test_view_from_description(description: str, view: str | None) -> None:
    assert view_from_description(description) == view


def without_attribute(path: Path, keyword: str) -> None:
    """Delete one attribute from a DICOM file in place."""
    dataset = pydicom.dcmread(path)
    delattr(dataset, keyword)
    dataset.save_as(path)


def test_an_image_without_position_is_placed_where_its_slice_lacks_its_phase_or_named(tmp_path: Path) -> None:
    """An image without ImagePositionPatient takes its slice's geometry when exactly one slice of its series lacks its
    phase (reported, the volume as from the intact files); where no slice or several could hold it, the study stops
    naming the file."""
    study = tmp_path / "study"
    study.mkdir()
    for number in range(1, 41):  # 2 slices x 20 phases
        shutil.copyfile(STUDY / f"{number}.dcm", study / f"{number}.dcm")
    intact = tmp_path / "intact"
    assert run_cli("convert_dicom.py", study, "--out", intact).returncode == 0
    without_attribute(study / "27.dcm", "ImagePositionPatient")
    result = run_cli("convert_dicom.py", study, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    written, expected = nib.load(tmp_path / "out" / "sa.nii.gz"), nib.load(intact / "sa.nii.gz")
    np.testing.assert_array_equal(written.dataobj, expected.dataobj)
    np.testing.assert_array_equal(written.affine, expected.affine)
    assert "repaired 27.dcm: no ImagePositionPatient" in result.stdout
    (repaired,) = json.loads((tmp_path / "out" / "conversion.json").read_text())["repaired_files"]
    assert repaired["file"] == "27.dcm" and "no ImagePositionPatient" in repaired["repair"]
    assert "the only slice position lacking an image of its phase" in repaired["repair"]

    # the same phase (TriggerTime) of both slices without position or SliceLocation: either could go in either slice
    for name in ("7.dcm", "27.dcm"):
        without_attribute(study / name, "SliceLocation")
    without_attribute(study / "7.dcm", "ImagePositionPatient")
    result = run_cli("convert_dicom.py", study, "--out", tmp_path / "out2")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "7.dcm" in result.stderr and "no ImagePositionPatient" in result.stderr and str(study) in result.stderr
    assert "several slice position(s)" in result.stderr
    assert not (tmp_path / "out2" / "sa.nii.gz").exists()


@pytest.mark.skipif(not (SUNNYBROOK.parent / "bivme_patient1").is_dir(), reason="bivme_patient1 not in ../shared")
def test_real_study_with_an_sa_and_a_long_axis_image_without_position_converts_as_the_intact_one(
    tmp_path: Path,
) -> None:
    """One file per series folder: a file of a single-slice SA series and one of the 2-chamber series lose
    ImagePositionPatient; each takes its series' slice geometry, both are reported, and every plane is written as
    from the intact study."""
    study = tmp_path / "dicoms"
    shutil.copytree(SUNNYBROOK.parent / "bivme_patient1" / "dicoms", study)
    intact = tmp_path / "intact"
    assert run_cli("convert_dicom.py", study, "--out", intact).returncode == 0
    broken = [sorted((study / series).iterdir())[index] for series, index in (("Se3", 4), ("Se8", 0))]
    for path in broken:
        without_attribute(path, "ImagePositionPatient")
    out = tmp_path / "subject"
    result = run_cli("convert_dicom.py", study, "--out", out)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "conversion.json").read_text())
    assert set(report["written"]) == set(json.loads((intact / "conversion.json").read_text())["written"])
    for plane in intact.glob("*.nii.gz"):
        written = nib.load(out / plane.name)
        np.testing.assert_array_equal(written.dataobj, nib.load(plane).dataobj)
        np.testing.assert_array_equal(written.affine, nib.load(plane).affine)
    repaired = {entry["file"]: entry["repair"] for entry in report["repaired_files"]}
    assert sorted(repaired) == sorted(str(path.relative_to(study)) for path in broken)
    assert all(
        "no ImagePositionPatient: its geometry is taken from the 24 other phases" in r for r in repaired.values()
    )


def test_corrupt_file_and_no_cine_are_clear_errors(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "cut.dcm").write_bytes((STUDY / "1.dcm").read_bytes()[:600])
    result = run_cli("convert_dicom.py", corrupt, "--out", tmp_path / "out1")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "no cine series found" in result.stderr and "1 damaged file(s) dropped with their slices (cut.dcm: " in (
        result.stderr
    )

    no_cine = tmp_path / "no_cine"
    no_cine.mkdir()
    shutil.copyfile(STUDY / "1.dcm", no_cine / "one.dcm")
    result = run_cli("convert_dicom.py", no_cine, "--out", tmp_path / "out2")
    assert result.returncode == 1 and "no cine series" in result.stderr and "Traceback" not in result.stderr


def cut_pixel_data(path: Path, length: int = 1000) -> None:
    """Cut a DICOM file's pixel data short in place, its header kept (an interrupted transfer of the pixels)."""
    dataset = pydicom.dcmread(path)
    dataset.PixelData = dataset.PixelData[:length]
    dataset.save_as(path)


def assert_same_plane(written: Path, expected: Path) -> None:
    """Two plane files hold the same voxels on the same grid."""
    np.testing.assert_array_equal(nib.load(written).dataobj, nib.load(expected).dataobj)
    np.testing.assert_array_equal(nib.load(written).affine, nib.load(expected).affine)


@pytest.mark.skipif(not (SUNNYBROOK.parent / "bivme_patient1").is_dir(), reason="bivme_patient1 not in ../shared")
def test_a_damaged_sa_or_long_axis_file_drops_its_slice_or_view_and_the_rest_converts_as_the_intact_study(
    tmp_path: Path,
) -> None:
    """The real multi-view study: an image of the basal-end SA series with its pixel data cut short drops that slice
    position, every phase of it (the SA stack is the intact one less that slice, the long-axis views are unchanged);
    a file of the 4-chamber view cut short in its header drops that view alone. Both are named in conversion.json,
    in the CLI's summary and in what inference puts in report.json's problems."""
    from scripts.inference import conversion_problems

    study = tmp_path / "dicoms"
    shutil.copytree(SUNNYBROOK.parent / "bivme_patient1" / "dicoms", study)
    intact = tmp_path / "intact"
    assert run_cli("convert_dicom.py", study, "--out", intact).returncode == 0
    intact_report = json.loads((intact / "conversion.json").read_text())
    last_slice = intact_report["written"]["sa"]["slices"][-1]
    damaged_sa = study / last_slice["files"][7]
    cut_pixel_data(damaged_sa)
    out = tmp_path / "sa_damaged"
    result = run_cli("convert_dicom.py", study, "--out", out)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "conversion.json").read_text())
    sa, intact_sa = nib.load(out / "sa.nii.gz"), nib.load(intact / "sa.nii.gz")
    np.testing.assert_array_equal(sa.dataobj, np.asarray(intact_sa.dataobj)[:, :, :-1])
    # the slice line is fitted to one slice fewer: the same grid to well under a micrometre
    np.testing.assert_allclose(sa.affine, intact_sa.affine, atol=1e-3)
    assert report["written"]["sa"]["slices"] == intact_report["written"]["sa"]["slices"][:-1]
    for view in ("la_2ch", "la_3ch", "la_4ch"):
        assert_same_plane(out / f"{view}.nii.gz", intact / f"{view}.nii.gz")
    (dropped_file,) = report["dropped_files"]
    assert dropped_file["file"] == last_slice["files"][7] and dropped_file["placed"]
    assert dropped_file["reason"] == "pixel data of 1000 bytes, not the 106496 of Rows x Columns 208 x 256 (16-bit)"
    (dropped_slice,) = report["dropped_slices"]
    assert dropped_slice["files"] == [f for f in last_slice["files"] if f != dropped_file["file"]]
    assert dropped_slice["position_along_normal_mm"] == pytest.approx(last_slice["position_along_normal_mm"])
    assert dropped_slice["reason"].startswith(f"{dropped_file['file']} at this slice position: pixel data of 1000")
    assert f"dropped {dropped_file['file']}: pixel data of 1000 bytes" in result.stdout
    problems = conversion_problems(out)
    assert f"DICOM {dropped_file['file']}: dropped, pixel data of 1000 bytes" in problems[0]
    assert problems[1].startswith(f"DICOM series {dropped_slice['series_number']}: slice at ")

    shutil.copyfile(SUNNYBROOK.parent / "bivme_patient1" / "dicoms" / last_slice["files"][7], damaged_sa)
    la_file = study / intact_report["written"]["la_4ch"]["slices"][0]["files"][3]
    la_file.write_bytes(la_file.read_bytes()[:5000])  # past its position, before Rows
    out = tmp_path / "la_damaged"
    result = run_cli("convert_dicom.py", study, "--out", out)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "conversion.json").read_text())
    assert set(report["written"]) == {"sa", "la_2ch", "la_3ch"}
    for plane in ("sa", "la_2ch", "la_3ch"):
        assert_same_plane(out / f"{plane}.nii.gz", intact / f"{plane}.nii.gz")
    (dropped_file,) = report["dropped_files"]
    assert dropped_file["file"] == str(la_file.relative_to(study))
    assert dropped_file["reason"] == "MR Image Storage file without Rows (cut short?)"
    (dropped_slice,) = report["dropped_slices"]
    assert dropped_slice["series_number"] == intact_report["written"]["la_4ch"]["series_number"]
    assert len(dropped_slice["files"]) == 24
    assert any(problem.startswith(f"DICOM {dropped_file['file']}: dropped") for problem in conversion_problems(out))


def test_an_unreadable_file_drops_the_slice_it_leaves_short_and_the_stack_keeps_its_longest_run(
    tmp_path: Path,
) -> None:
    """A file cut short inside its header cannot be placed: it is dropped, named, and the slice it leaves one phase
    short is dropped (a slice missing a phase is no cine). A NIfTI affine holds equally spaced slices only, so the
    10-slice stack keeps its longest run of slices on one side of the gap; the others are named as cut off."""
    study = tmp_path / "study"
    shutil.copytree(STUDY, study)
    intact = tmp_path / "intact"
    assert run_cli("convert_dicom.py", study, "--out", intact).returncode == 0
    intact_report = json.loads((intact / "conversion.json").read_text())
    slices = intact_report["written"]["sa"]["slices"]
    unreadable = study / slices[3]["files"][5]
    unreadable.write_bytes(unreadable.read_bytes()[:1000])
    out = tmp_path / "subject"
    result = run_cli("convert_dicom.py", study, "--out", out)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "conversion.json").read_text())
    sa, intact_sa = nib.load(out / "sa.nii.gz"), nib.load(intact / "sa.nii.gz")
    np.testing.assert_array_equal(sa.dataobj, np.asarray(intact_sa.dataobj)[:, :, 4:])
    np.testing.assert_allclose(sa.affine[:, :3], intact_sa.affine[:, :3], atol=1e-3)
    np.testing.assert_allclose(sa.affine[:3, 3], (intact_sa.affine @ [0, 0, 4, 1])[:3], atol=1e-3)
    (dropped_file,) = report["dropped_files"]
    assert dropped_file["file"] == unreadable.name and not dropped_file["placed"]
    assert dropped_file["reason"] == "MR Image Storage file without Rows (cut short?)"  # before its series UID
    short, *cut = report["dropped_slices"]
    assert short["files"] == [f for f in slices[3]["files"] if f != unreadable.name]
    assert short["reason"].startswith("lacks 1 of its series' 20 phases, taken to be in the damaged file(s)")
    assert [entry["files"] for entry in cut] == [s["files"] for s in slices[:3]]
    assert all("cut off from its stack by the dropped slice position(s)" in entry["reason"] for entry in cut)


def test_a_second_image_at_one_position_and_phase_is_ignored_the_later_instance_number_kept(tmp_path: Path) -> None:
    """A second image of an SA position and phase with its own SOPInstanceUID: with the same pixels, the study converts
    as the intact one and the file is named; with other pixels and a later InstanceNumber, it is the one kept, and the
    other is named saying the pixels differ (a problem report.json lists)."""
    from scripts.inference import conversion_problems

    study = tmp_path / "study"
    shutil.copytree(STUDY, study)
    intact = tmp_path / "intact"
    assert run_cli("convert_dicom.py", study, "--out", intact).returncode == 0
    copy = pydicom.dcmread(study / "45.dcm")
    copy.SOPInstanceUID = copy.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    copy.save_as(study / "45_again.dcm")
    out = tmp_path / "same_pixels"
    result = run_cli("convert_dicom.py", study, "--out", out)
    assert result.returncode == 0, result.stderr
    assert_same_plane(out / "sa.nii.gz", intact / "sa.nii.gz")
    ignored = {entry["file"]: entry for entry in json.loads((out / "conversion.json").read_text())["ignored_files"]}
    assert ignored["45_again.dcm"]["reason"].startswith("a second image of series 5 at the slice position and phase")
    assert "of 45.dcm, with another SOPInstanceUID: identical pixels" in ignored["45_again.dcm"]["reason"]
    assert not ignored["45_again.dcm"]["pixels_differ"] and conversion_problems(out) == []

    copy.PixelData = (copy.pixel_array + 7).astype(copy.pixel_array.dtype).tobytes()
    copy.InstanceNumber = 1000
    copy.save_as(study / "45_again.dcm")
    out = tmp_path / "other_pixels"
    result = run_cli("convert_dicom.py", study, "--out", out)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "conversion.json").read_text())
    (entry,) = [entry for entry in report["ignored_files"] if entry["file"] == "45.dcm"]
    assert entry["pixels_differ"] and entry["reason"].endswith(
        "of 45_again.dcm, with another SOPInstanceUID: its pixels differ; the later InstanceNumber (1000) is kept"
    )
    (slice_entry,) = [s for s in report["written"]["sa"]["slices"] if "45_again.dcm" in s["files"]]
    frame = slice_entry["files"].index("45_again.dcm")
    slice_index = report["written"]["sa"]["slices"].index(slice_entry)
    written = np.asarray(nib.load(out / "sa.nii.gz").dataobj)
    np.testing.assert_array_equal(written[:, :, slice_index, frame], rescaled_pixels(copy).T)
    assert conversion_problems(out) == [f"DICOM 45.dcm: ignored, {entry['reason']}"]
    assert f"ignored 45.dcm: {entry['reason']}" in result.stdout


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All Sunnybrook studies imported by tools/import_sunnybrook.py."""
    out = tmp_path_factory.mktemp("sunnybrook")
    result = run_cli("import_sunnybrook.py", "--src", SUNNYBROOK, "--out", out)
    assert result.returncode == 0, result.stderr
    return out


def test_import_sunnybrook_outputs(imported: Path) -> None:
    datalist = json.loads((imported / "datalist.json").read_text())
    assert [item["subject"] for item in datalist["test"]] == ["SCD0000101", "SCD0000201", "SCD0000301"]
    assert datalist["training"] == [] and datalist["validation"] == []
    assert "CC0" in (imported / "SOURCE.md").read_text()
    for item in datalist["test"]:
        subject = imported / item["subject"]
        sidecar = json.loads((subject / "subject.json").read_text())
        assert sidecar["annotated_classes"] == [1, 2] and "CC0" in sidecar["source"]
        image, seg = nib.load(subject / "sa.nii.gz"), nib.load(subject / "seg_sa.nii.gz")
        assert seg.shape == image.shape and np.allclose(seg.affine, image.affine)
        assert seg.get_data_dtype() == np.uint8


@pytest.mark.parametrize("subject", ["SCD0000101", "SCD0000201", "SCD0000301"])
def test_sunnybrook_labels(imported: Path, subject: str) -> None:
    image = np.asarray(nib.load(imported / subject / "sa.nii.gz").dataobj, dtype=float)
    seg = np.asarray(nib.load(imported / subject / "seg_sa.nii.gz").dataobj)
    assert set(np.unique(seg)) == {0, 1, 2, 255}
    annotated = np.any(seg != 255, axis=(0, 1))  # (S, T)
    assert 0 < annotated.sum() < annotated.size  # most slice-frames are not annotated
    ed = np.any(seg == 2, axis=(0, 1))  # slice-frames with an epicardial contour: end-diastole
    blood_pool, myocardium = image[..., ed][seg[..., ed] == 1], image[..., ed][seg[..., ed] == 2]
    assert blood_pool.mean() > 1.3 * myocardium.mean()
    # Slice-frames with only an endocardial contour (ES): LV inside, never myocardium; unlabelled next to the contour
    # (where the unknown epicardium lies), background far from it
    es_only = annotated & ~ed
    assert es_only.any() and set(np.unique(seg[..., es_only])) == {0, 1, 255}


def test_a_folder_of_studies_becomes_a_subject_folder_per_study_with_progress_past_a_bad_study(tmp_path: Path) -> None:
    studies = tmp_path / "studies"
    for name in ("SCD0000101", "SCD0000301"):
        shutil.copytree(SUNNYBROOK / "dicoms" / name, studies / name)
    lone = pydicom.dcmread(STUDY / "1.dcm")
    lone.StudyInstanceUID, lone.SeriesInstanceUID, lone.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    (studies / "bad_study").mkdir()
    lone.save_as(studies / "bad_study" / "only_image.dcm")
    out = tmp_path / "subjects"
    result = run_cli("convert_dicom.py", studies, "--out", out)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "1 of 3 studies failed (bad_study)" in result.stderr and "no cine series" in result.stderr
    assert all((out / name / "sa.nii.gz").is_file() for name in ("SCD0000101", "SCD0000301"))
    assert re.search(r"conversion \[3/3\] 100% \d\d:\d\d elapsed, 00:00 left \( *[\d.]+s/study\)", result.stderr)
