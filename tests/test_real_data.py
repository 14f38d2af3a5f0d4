"""Real CC0 data: three Sunnybrook short-axis cine studies (DICOM + manual LV contours, no long-axis views).

The studies are imported once with the real CLI (``python -m tools.import_sunnybrook``) into a temporary folder; the
manual contours are used only to check the data layer, never to build the canonical stack.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import BUNDLE, REPO, load_tool

from scripts.canonical import LoadCineSubjectd
from scripts.geometry import voxel_to_world
from scripts.heart_centre import lv_offset_px
from scripts.labels import LA_PLANES, UNLABELLED
from scripts.presets import build_network
from scripts.sample_geometry import parse_geometry

SUNNYBROOK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sunnybrook"
BIVME = SUNNYBROOK.parent / "bivme_patient1"
STUDIES = ("SCD0000101", "SCD0000201", "SCD0000301")
LV = (1, 2)  # LVBP, LVMYO
ACQUIRED_FRAMES = 20
CROP, SPACING_MM, FRAMES, SA_SLICES = 128, 1.8, 50, 6

pytestmark = pytest.mark.skipif(
    not (SUNNYBROOK / "link.csv").is_file(),
    reason=f"Sunnybrook studies not found at {SUNNYBROOK} (see ../shared/data/sunnybrook/SOURCE.md)",
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sunnybrook") / "dataset"
    result = subprocess.run(
        [sys.executable, "-m", "tools.import_sunnybrook", "--src", str(SUNNYBROOK), "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def samples(dataset) -> dict[str, dict]:
    """Canonical samples at the training grid (6 SA slices + 3 LA views, 50 frames, 128 px at 1.8 mm)."""
    load = LoadCineSubjectd(keys="subject", num_sa_slices=SA_SLICES, num_frames=FRAMES, crop_size=CROP)
    return {study: load({"subject": str(dataset / study)}) for study in STUDIES}


def source_label(dataset: Path, study: str) -> tuple[np.ndarray, np.ndarray]:
    seg = nib.load(dataset / study / "seg_sa.nii.gz")
    return np.asarray(seg.dataobj), seg.affine


def nearest_acquired_frame(k: int) -> int:
    """The acquired frame that canonical frame ``k`` shows (cyclic nearest frame; k * 20 / 50 never ends in .5)."""
    return round(k * ACQUIRED_FRAMES / FRAMES) % ACQUIRED_FRAMES


def canonical_pixel(world: np.ndarray, record: dict) -> np.ndarray:
    """(N, 3) world mm -> (N, 2) canonical pixel coordinates (i along u, j along v) of a plane record."""
    offset = world - np.array(record["centre_mm"])
    centre_index = (CROP - 1) / 2
    return np.stack([offset @ record["u"], offset @ record["v"]], axis=-1) / SPACING_MM + centre_index


@pytest.mark.parametrize("study", STUDIES)
def test_import_writes_sa_volume_and_lv_labels(dataset, study):
    image = nib.load(dataset / study / "sa.nii.gz")
    label, affine = source_label(dataset, study)
    assert image.ndim == 4 and image.shape[3] == ACQUIRED_FRAMES and image.shape[2] >= 10
    assert label.shape == image.shape and np.allclose(affine, image.affine)
    assert set(np.unique(label).tolist()) == {0, 1, 2, UNLABELLED}
    assert json.loads((dataset / study / "subject.json").read_text())["annotated_classes"] == [1, 2]
    assert not any((dataset / study / f"{stem}.nii.gz").exists() for stem in LA_PLANES)


@pytest.mark.parametrize("study", STUDIES)
def test_endocardium_only_slices_are_background_beyond_the_wall_margin_and_unknown_within(dataset, study):
    """Where only the endocardium was drawn (end-systole), the label says LV inside, unknown within the wall margin
    (the epicardium lies somewhere there) and background beyond it, so an LV spilling into the RV is seen."""
    from scipy.ndimage import distance_transform_edt

    from tools.import_sunnybrook import WALL_MARGIN_MM

    label, affine = source_label(dataset, study)
    spacing = tuple(np.linalg.norm(affine[:3, :2], axis=0))
    endocardium_only = [
        (z, t)
        for z in range(label.shape[2])
        for t in range(label.shape[3])
        if (label[:, :, z, t] == 1).any() and not (label[:, :, z, t] == 2).any()
    ]
    assert endocardium_only, "Sunnybrook contours the epicardium at end-diastole only"
    for z, t in endocardium_only:
        frame = label[:, :, z, t]
        distance_mm = distance_transform_edt(frame != 1, sampling=spacing)
        assert (frame[distance_mm > WALL_MARGIN_MM + 1] == 0).all()
        assert (frame[(distance_mm > 0) & (distance_mm < WALL_MARGIN_MM - 1)] == UNLABELLED).all()


@pytest.mark.parametrize("study", STUDIES)
def test_selected_slices_keep_every_lv_voxel_inside_the_crop(dataset, samples, study):
    """The crop centred without labels still holds every manually contoured LV voxel of the chosen SA slices."""
    label, affine = source_label(dataset, study)
    geometry = parse_geometry(samples[study]["geometry"])
    canonical = samples[study]["label"].numpy()[0]
    pixel_area_mm2 = float(np.prod(np.linalg.norm(affine[:3, :2], axis=0)))
    checked = 0
    for index, record in enumerate(geometry["planes"][:SA_SLICES]):
        assert record["source"] == "sa"
        z = record["slice"]
        voxels = np.argwhere(np.isin(label[:, :, z, :], LV).any(axis=2))
        if not len(voxels):
            continue
        world = voxel_to_world(affine, np.concatenate([voxels, np.full((len(voxels), 1), z)], axis=1).astype(float))
        pixel = canonical_pixel(world, record)
        # nearest-neighbour pixels: a voxel centre within half a pixel of the border still lands inside
        assert pixel.min() >= -0.5 and pixel.max() <= CROP - 0.5, f"{study} slice {z}: LV outside the crop"
        for frame in np.flatnonzero(np.isin(label[:, :, z, :], LV).any(axis=(0, 1))):
            source_mm2 = np.isin(label[:, :, z, frame], LV).sum() * pixel_area_mm2
            canonical_frames = [k for k in range(FRAMES) if nearest_acquired_frame(k) == frame]
            for k in canonical_frames:
                canonical_mm2 = np.isin(canonical[index, k], LV).sum() * SPACING_MM**2
                # nearest-neighbour resampling from ~1.3 mm to 1.8 mm pixels misplaces boundary pixels along the
                # contour (perimeter ~ 2 sqrt(pi A)); the errors mostly cancel: allow a quarter-pixel band plus 2 %
                # (measured when the whole LV is inside: <= 3.2 %, all within this; a crop cutting 7 % fails it)
                tolerance = 0.02 * source_mm2 + 0.25 * SPACING_MM * 2 * np.sqrt(np.pi * source_mm2)
                assert abs(canonical_mm2 - source_mm2) <= tolerance, (study, z, frame, k, canonical_mm2, source_mm2)
                checked += 1
    assert checked >= 8, "at least 4 labelled slices x 2 phases were compared"


@pytest.mark.parametrize("study", STUDIES)
def test_heart_centre_without_labels_is_near_the_contoured_lv(dataset, samples, study):
    label, affine = source_label(dataset, study)
    geometry = parse_geometry(samples[study]["geometry"])
    assert geometry["centre_method"] == "image_centre"  # no long-axis views to intersect
    voxels = np.argwhere(np.isin(label, LV))[:, :3].astype(float)
    lv_centroid = voxel_to_world(affine, voxels).mean(axis=0)
    # in-plane distance (the SA slice normal carries the slice choice, not the crop): the LV of these hearts is
    # ~50-60 mm across, so 25 mm keeps the LV centroid within its own radius of the crop centre
    normal = affine[:3, 2] / np.linalg.norm(affine[:3, 2])
    offset = np.array(geometry["centre_mm"]) - lv_centroid
    assert np.linalg.norm(offset - (offset @ normal) * normal) < 25.0


def in_plane_distance_mm(point: np.ndarray, target: np.ndarray, affine: np.ndarray) -> float:
    """Distance (mm) between two world points across the SA slices of ``affine`` (along the slice normal ignored)."""
    normal = affine[:3, 2] / np.linalg.norm(affine[:3, 2])
    offset = point - target
    return float(np.linalg.norm(offset - (offset @ normal) * normal))


def test_sa_only_study_is_recentred_on_the_lv_the_shipped_weights_segment(dataset, samples, tmp_path):
    """Inference with the shipped weights moves the crops of an SA-only study from the image centre onto the LV that
    its first pass segments there: nearer the contoured LV of the canonical SA slices than the image centre is."""
    study = "SCD0000301"
    out = tmp_path / "predictions"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.yaml",
               "--dataset_dir", str(dataset / study), "--output_dir", str(out), "--write_reports", "false",
               "--write_dicom_seg", "false"]  # fmt: skip
    result = subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    report = json.loads((out / study / "report.json").read_text())
    assert report["heart_centre_method"] == "lv_segmentation"

    label, affine = source_label(dataset, study)
    geometry = parse_geometry(samples[study]["geometry"])
    canonical_slices = sorted({record["slice"] for record in geometry["planes"] if record["source"] == "sa"})
    voxels = np.argwhere(label[:, :, canonical_slices] == 1).astype(float)
    voxels[:, 2] = np.asarray(canonical_slices)[voxels[:, 2].astype(int)]
    lv_centroid = voxel_to_world(affine, voxels[:, :3]).mean(axis=0)
    image_centre = np.array(geometry["centre_mm"])
    recentred = np.array(report["heart_centre_mm"])
    # measured: 7.3 mm from the image centre, 4.4 mm recentred; at least one canonical pixel nearer
    from_image_centre = in_plane_distance_mm(image_centre, lv_centroid, affine)
    assert in_plane_distance_mm(recentred, lv_centroid, affine) < from_image_centre - SPACING_MM


@pytest.mark.parametrize("study", STUDIES)
def test_training_loader_centres_an_sa_only_study_on_its_labelled_lv(dataset, samples, study):
    """``centre_on_labelled_lv`` (real-scan training): the crops of an SA-only study move from the image centre onto
    the mean LV blood-pool label of its SA planes, the labels moving with the image."""
    load = LoadCineSubjectd(
        keys="subject", num_sa_slices=SA_SLICES, num_frames=FRAMES, crop_size=CROP, centre_on_labelled_lv=True
    )
    centred = load({"subject": str(dataset / study)})
    geometry = parse_geometry(centred["geometry"])
    assert geometry["centre_method"] == "lv_labels"
    before = lv_offset_px(parse_geometry(samples[study]["geometry"]), samples[study]["label"][0].numpy())
    after = lv_offset_px(geometry, centred["label"][0].numpy())
    assert np.abs(before).max() > 2.0, "the image centre misses these LVs by more than 2 px"
    np.testing.assert_allclose(after, 0.0, atol=0.5)  # cut again at the label's mean: nearest-pixel labels move it
    assert int(centred["label"][0].eq(1).sum()) == pytest.approx(int(samples[study]["label"][0].eq(1).sum()), rel=0.02)


@pytest.mark.parametrize("study", STUDIES)
def test_twenty_frames_become_fifty_and_only_labelled_phases_keep_labels(dataset, samples, study):
    label, _ = source_label(dataset, study)
    sample = samples[study]
    assert tuple(sample["image"].shape) == (1, SA_SLICES + 3, FRAMES, CROP, CROP)
    canonical = sample["label"].numpy()[0]
    geometry = parse_geometry(sample["geometry"])
    # the contours were drawn on two phases (ED and ES) of each slice; every other phase is 255
    labelled_phases = {int(f) for f in np.flatnonzero((label != UNLABELLED).any(axis=(0, 1, 2)))}
    assert len(labelled_phases) == 2
    # cyclic nearest-frame resampling: canonical frame k shows acquired frame round(k * 20 / 50) (no ties occur)
    expected = {k for k in range(FRAMES) if nearest_acquired_frame(k) in labelled_phases}
    for index, record in enumerate(geometry["planes"][:SA_SLICES]):
        slice_phases = {int(f) for f in np.flatnonzero((label[:, :, record["slice"]] != UNLABELLED).any((0, 1)))}
        has_label = {k for k in range(FRAMES) if (canonical[index, k] != UNLABELLED).any()}
        if slice_phases:
            assert has_label == expected, (study, record["slice"], sorted(has_label))
            # the labelled frames hold both background and LV
            assert {0, 1} <= set(np.unique(canonical[index, sorted(expected)]).tolist())
        else:
            assert not has_label
    # frame 0 stays frame 0: the cycle is not shifted (both sides rounded to the same acquired frame)
    assert (0 in expected) == (0 in labelled_phases)


@pytest.mark.parametrize("study", STUDIES)
def test_missing_long_axis_views_are_masked_zero_and_recorded(samples, study):
    sample = samples[study]
    geometry = parse_geometry(sample["geometry"])
    assert sample["plane_mask"].tolist() == [True] * SA_SLICES + [False] * 3
    assert float(sample["image"][0, SA_SLICES:].abs().max()) == 0.0
    assert bool((sample["label"][0, SA_SLICES:] == UNLABELLED).all())
    assert float(sample["image"][0, :SA_SLICES].amax(dim=(1, 2, 3)).min()) > 0.5  # SA planes are real images
    assert sample["class_mask"].tolist() == [True, True, True, False, False, False]
    assert [p["name"] for p in geometry["planes"][SA_SLICES:]] == list(LA_PLANES)
    assert all(p["source"] is None for p in geometry["planes"][SA_SLICES:])
    assert set(geometry["sources"]) == {"sa"}
    # the LA files are absent, not broken: nothing to report as a problem, and the LA views did not place the heart
    assert sample["problems"] == ""
    assert geometry["centre_method"] != "la_intersection"


def tree_listing(folder: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*") if p.is_file())


def test_inference_workflow_accepts_a_dicom_study_folder(dataset, tmp_path):
    study = "SCD0000301"  # the smallest study (10 slices)
    dicom_dir = SUNNYBROOK / "dicoms" / study
    listing_before = tree_listing(dicom_dir)
    checkpoint = tmp_path / "tiny.pt"
    torch.manual_seed(0)
    torch.save(build_network("heart", "tiny", SA_SLICES + 3, 10, 32).state_dict(), checkpoint)
    out = tmp_path / "predictions"
    command = [
        sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.yaml", "--preset", "tiny",
        "--dataset_dir", str(dicom_dir), "--output_dir", str(out), "--ckpt", str(checkpoint),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert tree_listing(dicom_dir) == listing_before, "the shared DICOM folder must not be written to"

    summary = json.loads((out / "summary.json").read_text())
    assert summary["done"] == [study] and summary["failed"] == []
    predicted = out / study
    converted = nib.load(predicted / "converted" / "sa.nii.gz")
    # the workflow's own conversion matches the importer's (same DICOM -> NIfTI code path and geometry)
    imported = nib.load(dataset / study / "sa.nii.gz")
    assert converted.shape == imported.shape
    np.testing.assert_allclose(converted.affine, imported.affine, atol=1e-4)

    segmentation = nib.load(predicted / "seg_sa.nii.gz")
    assert segmentation.shape == converted.shape
    np.testing.assert_allclose(segmentation.affine, converted.affine, atol=1e-4)
    assert set(np.unique(np.asarray(segmentation.dataobj)).tolist()) <= set(range(6))
    assert not any((predicted / f"seg_{stem}.nii.gz").exists() for stem in LA_PLANES)

    report = json.loads((predicted / "report.json").read_text())
    assert report["segmented_planes"] == ["sa"]
    # the identifiers a hospital system links results back with, in the report and in every cohort table
    import pydicom

    header = pydicom.dcmread(dicom_dir / "1.dcm", stop_before_pixels=True)
    identifiers = report["dicom_identifiers"]
    assert identifiers["study_instance_uid"] == header.StudyInstanceUID
    assert identifiers["patient_id"] == str(header.PatientID)
    assert identifiers["series_instance_uids"] == f"sa={header.SeriesInstanceUID}"
    for table in ("phenotypes.csv", "phenotypes_from_embedding.csv", "phenotypes_from_segmentation.csv"):
        (row,) = list(csv.DictReader((out / table).open()))
        assert {key: row[key] for key in identifiers} == identifiers, table
    assert report["canonical_planes_missing"] == list(LA_PLANES), "10 SA slices fill all 6 SA planes"
    assert report["heart_centre_method"] in ("image_centre", "lv_segmentation"), "no long-axis views to intersect"


def test_inference_takes_a_folder_per_series_as_one_study_and_keeps_going_past_a_bad_study(tmp_path):
    """PACS exports: the multi-view study with one folder per series is one subject (one of its images without
    ImagePositionPatient, placed by its slice and named in report.json; an image of its 3-chamber view with its pixel
    data cut short, that view dropped and named in report.json); in a folder of studies, a bad study fails alone,
    named, and the batch exits 1 after the good ones."""
    import shutil

    import pydicom
    from pydicom.uid import generate_uid

    checkpoint = tmp_path / "tiny.pt"
    torch.manual_seed(0)
    torch.save(build_network("heart", "tiny", SA_SLICES + 3, 10, 32).state_dict(), checkpoint)

    def infer(dataset_dir: Path, out: Path) -> subprocess.CompletedProcess:
        command = [
            sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.yaml", "--preset", "tiny",
            "--dataset_dir", str(dataset_dir), "--output_dir", str(out), "--ckpt", str(checkpoint),
            "--centre_shifts_px", "[]",
        ]  # fmt: skip
        return subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True)

    series_folders = tmp_path / "dicoms"  # Se1 ... Se11, one series each
    shutil.copytree(BIVME / "dicoms", series_folders)
    positionless = sorted((series_folders / "Se2").iterdir())[3]
    dataset = pydicom.dcmread(positionless)
    del dataset.ImagePositionPatient
    dataset.save_as(positionless)
    cut = sorted((series_folders / "Se7").iterdir())[5]  # the 3-chamber view
    damaged = pydicom.dcmread(cut)
    damaged.PixelData = damaged.PixelData[:1000]
    damaged.save_as(cut)
    result = infer(series_folders, tmp_path / "bivme")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    summary = json.loads((tmp_path / "bivme" / "summary.json").read_text())
    assert summary["done"] == ["dicoms"] and summary["failed"] == []
    report = json.loads((tmp_path / "bivme" / "dicoms" / "report.json").read_text())
    assert set(report["segmented_planes"]) == {"sa", "la_2ch", "la_4ch"}
    repair, dropped_file, dropped_slice = [problem for problem in report["problems"] if problem.startswith("DICOM ")]
    assert f"DICOM Se2/{positionless.name}: no ImagePositionPatient: its geometry is taken from" in repair
    assert dropped_file.startswith(f"DICOM Se7/{cut.name}: dropped, pixel data of 1000 bytes, not the 106496")
    assert dropped_slice.startswith("DICOM series [16001]: slice at ") and "(24 images)" in dropped_slice
    # its DICOM SEG frame lies where the other phases of its slice lie
    slice_position = pydicom.dcmread(sorted((series_folders / "Se2").iterdir())[0]).ImagePositionPatient
    frames = [
        frame
        for path in (tmp_path / "bivme" / "dicoms" / "dicom_seg").glob("seg_sa_series9001_*.dcm")
        for frame in pydicom.dcmread(path).PerFrameFunctionalGroupsSequence
        if frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID == dataset.SOPInstanceUID
    ]
    assert frames, "the SEG references the image placed by its slice"
    for frame in frames:
        np.testing.assert_allclose(frame.PlanePositionSequence[0].ImagePositionPatient, slice_position, atol=1e-3)

    studies = tmp_path / "studies"
    shutil.copytree(SUNNYBROOK / "dicoms" / "SCD0000301", studies / "good_study")
    lone = pydicom.dcmread(SUNNYBROOK / "dicoms" / "SCD0000101" / "1.dcm")
    lone.StudyInstanceUID, lone.SeriesInstanceUID, lone.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    (studies / "bad_study").mkdir()
    lone.save_as(studies / "bad_study" / "only_image.dcm")
    result = infer(studies, tmp_path / "batch")
    assert result.returncode == 1 and "1 subject(s) failed (bad_study)" in result.stderr
    summary = json.loads((tmp_path / "batch" / "summary.json").read_text())
    assert summary["done"] == ["good_study"] and [f["subject"] for f in summary["failed"]] == ["bad_study"]
    assert "no cine series" in summary["failed"][0]["error"]
    (error_row,) = list(csv.DictReader((tmp_path / "batch" / "errors.csv").open()))
    assert error_row["subject"] == "bad_study" and "no cine series" in error_row["error"]
    assert not (tmp_path / "bivme" / "errors.csv").exists()
    assert (tmp_path / "batch" / "good_study" / "seg_sa.nii.gz").is_file()


def test_a_dataset_of_subject_folders_dicom_studies_and_unusable_folders_segments_all_and_names_the_rest(
    tiny_cohort, tmp_path
):
    """A hospital's export folder: NIfTI subjects and DICOM studies side by side are all segmented; an empty folder
    and one whose NIfTI files are not named as planes fail by name (exit 1); a folder of other files is no subject."""
    import shutil

    checkpoint = tmp_path / "tiny.pt"
    torch.manual_seed(0)
    torch.save(build_network("heart", "tiny", SA_SLICES + 3, 10, 32).state_dict(), checkpoint)
    dataset = tmp_path / "dataset"
    shutil.copytree(tiny_cohort / "subject_0000", dataset / "nifti_subject")
    shutil.copytree(SUNNYBROOK / "dicoms" / "SCD0000301", dataset / "dicom_study")
    (dataset / "empty_export").mkdir()
    (dataset / "misnamed").mkdir()
    shutil.copy(tiny_cohort / "subject_0000" / "sa.nii.gz", dataset / "misnamed" / "short_axis.nii.gz")
    (dataset / "folds").mkdir()
    (dataset / "folds" / "fold0.json").write_text("{}")
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.yaml", "--preset", "tiny",
        "--dataset_dir", str(dataset), "--output_dir", str(out), "--ckpt", str(checkpoint), "--centre_shifts_px", "[]",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-6000:]
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["done"]) == ["dicom_study", "nifti_subject"]
    failed = {f["subject"]: f["error"] for f in summary["failed"]}
    assert set(failed) == {"empty_export", "misnamed"}
    assert "is empty" in failed["empty_export"]
    assert "short_axis.nii.gz" in failed["misnamed"] and "name them sa.nii.gz" in failed["misnamed"]
    assert (out / "dicom_study" / "seg_sa.nii.gz").is_file() and (out / "nifti_subject" / "seg_sa.nii.gz").is_file()
    # progress: each subject's place in the batch, and the time left after each one done
    log = result.stdout + result.stderr
    assert "[1/4] nifti_subject: done;" in log and "min left" in log
    assert "/4] empty_export: skipped:" in log and "/4] misnamed: skipped:" in log


def test_adaptation_recipe_fine_tunes_on_two_real_studies_and_scores_the_third(dataset, tmp_path):
    """The documented adaptation to real scans (docs/README.md), at the tiny preset: split files by make_folds.py,
    the whole segmentation network fine-tuned from a heart checkpoint on two studies' partial labels (LV classes,
    contoured slices and phases only), evaluate on the held-out study."""
    folds = tmp_path / "folds"
    make_folds = [sys.executable, "-m", "tools.make_folds", str(dataset), "--validation", "0"]
    subprocess.run(make_folds + ["--out", str(folds)], check=True, capture_output=True)
    start = tmp_path / "start.pt"
    torch.manual_seed(0)
    torch.save(
        build_network(
            "heart", "tiny", SA_SLICES + 3, 10, 32, **load_tool("benchmark").inference_refiner()
        ).state_dict(),
        start,
    )
    fold = folds / "fold0.json"
    (held_out,) = [entry["subject"] for entry in json.loads(fold.read_text())["test"]]
    common = ["--preset", "tiny", "--dataset_dir", str(dataset), "--datalist", str(fold)]
    train = [sys.executable, "-m", "monai.bundle", "run", "--config_file",
             "['configs/inference.yaml','configs/train.yaml','configs/finetune_segmentation.yaml']", *common,
             "--output_dir", str(tmp_path / "adapted"), "--pretrained_ckpt", str(start), "--max_epochs", "2",
             "--val_interval", "2", "--cache_dir", str(tmp_path / "cache")]  # fmt: skip
    result = subprocess.run(train, cwd=BUNDLE, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    log = result.stdout + result.stderr
    (loaded,) = re.findall(r"loaded (\d+) of (\d+) tensors from", log)
    assert loaded[0] == loaded[1], "every tensor of the network starts from the heart checkpoint"
    losses = [
        float(line.rsplit("train_loss: ", 1)[1].split()[0]) for line in log.splitlines() if "train_loss: " in line
    ]
    assert len(losses) == 4 and np.isfinite(losses).all(), "two studies, two epochs; partial labels give a finite loss"
    models = tmp_path / "adapted" / "finetune_segmentation" / "models"
    assert torch.load(models / "checkpoint_epoch=2.pt", weights_only=True)["trainer"]["epoch_length"] == 2

    evaluate = [sys.executable, "-m", "monai.bundle", "run", "--config_file",
                "['configs/inference.yaml','configs/evaluate.yaml']", *common, "--output_dir", str(tmp_path / "eval"),
                "--ckpt", str(models / "model.pt"), "--scratch_ckpt", str(start)]  # fmt: skip
    result = subprocess.run(evaluate, cwd=BUNDLE, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["subjects"] == [held_out]
    for model in ("pretrained", "scratch"):
        dice = metrics["models"][model]["dice_input_planes"]["sa"]
        assert 0.0 <= dice["LVBP"] <= 1.0 and 0.0 <= dice["LVMYO"] <= 1.0
        assert dice["RVBP"] is None and dice["LABP"] is None, "classes the contours do not annotate get no Dice"


def test_mixed_training_joins_repeated_real_studies_to_a_wide_synthetic_cohort(dataset, tmp_path):
    """Real-scan fine-tuning (configs/real_scans.yaml) through the runner at the tiny preset: a wide-variety synthetic
    cohort (made by the real CLI), the real studies of a leave-one-out fold repeated in every epoch, random appearance
    and cycle rolls on; every step's loss is finite and the epoch has the synthetic plus the repeated real subjects."""
    wide = tmp_path / "wide"
    synthesize = [sys.executable, "-m", "tools.synthesize", "--out", str(wide), "--subjects", "3", "--seed", "5",
                  "--tiny", "--variety", "wide", "--split", "0.67,0.33,0"]  # fmt: skip
    subprocess.run(synthesize, check=True, capture_output=True, cwd=REPO)
    make_folds = [sys.executable, "-m", "tools.make_folds", str(dataset), "--validation", "0"]
    subprocess.run(make_folds + ["--out", str(tmp_path / "folds")], check=True, capture_output=True)
    fold = tmp_path / "folds" / "fold0.json"
    start = tmp_path / "start.pt"
    torch.manual_seed(0)
    torch.save(build_network("heart", "tiny", SA_SLICES + 3, 10, 32).state_dict(), start)
    train = [sys.executable, "-m", "monai.bundle", "run", "--config_file",
             "['configs/inference.yaml','configs/train.yaml','configs/finetune_segmentation.yaml',"
             "'configs/real_scans.yaml']",
             "--preset", "tiny", "--dataset_dir", str(wide), "--real_dataset_dir", str(dataset),
             "--real_datalist", str(fold), "--real_repeats", "2", "--appearance_prob", "1.0",
             "--sa_only_probability", "0.5", "--cycle_roll_prob", "1.0",
             "--output_dir", str(tmp_path / "out"), "--pretrained_ckpt", str(start), "--max_epochs", "1",
             "--val_interval", "2", "--cache_dir", str(tmp_path / "cache")]  # fmt: skip
    result = subprocess.run(train, cwd=BUNDLE, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    log = result.stdout + result.stderr
    losses = [
        float(line.rsplit("train_loss: ", 1)[1].split()[0]) for line in log.splitlines() if "train_loss: " in line
    ]
    assert len(losses) == 2 + 2 * 2 and np.isfinite(losses).all(), "2 synthetic + 2 real studies x 2 repeats"
    (held_out,) = json.loads(fold.read_text())["test"]
    cached = {path.name for path in (tmp_path / "cache").iterdir()}
    assert cached and not any(held_out["subject"] in name for name in cached), "the held-out study is never read"

    # the refiner trained on that model (configs/refine_segmentation.yaml): only its weights move, and the refined
    # network segments differently from the decoder alone
    segmentation = tmp_path / "out" / "finetune_segmentation" / "models" / "checkpoint_epoch=1.pt"
    refine = train[:-4] + ["--cache_dir", str(tmp_path / "cache"), "--pretrained_ckpt", str(segmentation)]
    refine[5] = refine[5][:-1] + ",'configs/refine_segmentation.yaml']"
    refine += ["--refine_steps", "6", "--refine_batch_size", "4", "--refine_fully_labelled_subjects", "1"]
    # a bad setting stops the workflow before the decoder segments the training subjects (minutes on a real cohort)
    bad = subprocess.run(
        refine + ["--refine_partly_labelled_fraction", "1.0"], cwd=BUNDLE, capture_output=True, text=True
    )
    assert bad.returncode != 0 and "partly_labelled_fraction must lie in (0, 1), got 1.0" in bad.stderr, bad.stderr[
        -3000:
    ]
    assert "the decoder's probabilities of the training subjects" not in bad.stdout + bad.stderr
    result = subprocess.run(refine, cwd=BUNDLE, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    log = result.stdout + result.stderr
    (collected,) = [line for line in log.splitlines() if "labelled plane-frames" in line]
    total, partly = (int(word) for word in re.findall(r"(\d+) labelled plane-frames, (\d+) of them", collected)[0])
    assert 0 < partly < total, "the real studies' labelled plane-frames beside one synthetic subject's"
    before = torch.load(segmentation, weights_only=True)["network"]
    after = torch.load(tmp_path / "out" / "refine_segmentation" / "models" / "model.pt", weights_only=True)
    changed = {key.split(".")[0] for key in after if key not in before or not torch.equal(before[key], after[key])}
    assert changed == {"refiner"}, changed
    network = build_network("heart", "tiny", SA_SLICES + 3, 10, 32, **load_tool("benchmark").inference_refiner())
    network.load_state_dict(after)
    image = torch.rand(1, 1, SA_SLICES + 3, 10, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(network(image), network(image, refine=False))
