"""Quality control on real files: ground-truth segmentations of tiny synthetic subjects pass, corrupted ones are
flagged with the check that explains them, and inference writes the flags."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import BUNDLE, load_tool

from scripts.files import save_nifti_atomic
from scripts.quality_control import PLAUSIBLE_RANGES, quality_control

qc_benchmark = load_tool("qc_benchmark")


def subject_folders(cohort: Path) -> list[Path]:
    return sorted(p for p in cohort.iterdir() if (p / "sa.nii.gz").is_file())


def checks(flags: list[dict[str, str]]) -> set[tuple[str, str]]:
    return {(f["view"], f["check"]) for f in flags}


def test_clean_ground_truth_subjects_get_no_flag(tiny_cohort):
    for folder in subject_folders(tiny_cohort):
        flags = quality_control(qc_benchmark.read_segmentations(folder))
        assert flags == [], f"{folder.name}: {flags}"


def test_every_corruption_kind_is_flagged_by_its_check(tiny_cohort, tmp_path, capsys):
    report = tmp_path / "qc.json"
    qc_benchmark.main(["--data", str(tiny_cohort), "--seed", "7", "--json", str(report)])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    written = json.loads(report.read_text())
    assert printed["rates"] == written["rates"]
    rates = written["rates"]
    assert rates["clean"]["flagged"] == 0
    expected = {
        "shift": "sa_la_agreement",
        "slices_deleted": "sa_la_agreement",
        "stack_truncated": "sa_coverage",
        "labels_swapped": "lv_ring",
        "view_replaced": "sa_la_agreement",
        "views_swapped": "view_identity",
    }
    assert set(expected) == set(qc_benchmark.CORRUPTIONS)
    for kind, check in expected.items():
        assert rates[kind]["rate"] == 1.0, (kind, rates[kind])
        for subject, flags in written["flags"][kind].items():
            assert check in {f["check"] for f in flags}, (kind, subject, flags)
            assert all(f["reason"] for f in flags)


def test_a_shifted_long_axis_file_is_flagged_in_its_own_view(tiny_cohort, tmp_path):
    subject = tmp_path / "subject"
    shutil.copytree(subject_folders(tiny_cohort)[0], subject)
    image = nib.load(subject / "seg_la_2ch.nii.gz")
    shifted = image.affine.copy()
    shifted[:3, 3] += 10.0 * shifted[:3, 0] / np.linalg.norm(shifted[:3, 0])  # 10 mm along the view's rows
    save_nifti_atomic(np.asarray(image.dataobj), shifted, subject / "seg_la_2ch.nii.gz")
    flags = quality_control(qc_benchmark.read_segmentations(subject))
    assert ("la_2ch", "sa_la_agreement") in checks(flags)
    assert not {view for view, check in checks(flags) if check == "sa_la_agreement"} & {"la_3ch", "la_4ch"}
    reason = next(f["reason"] for f in flags if f["view"] == "la_2ch")
    assert "Dice 0." in reason and "below 0.75" in reason


def test_a_missing_plane_is_flagged_with_what_it_leaves_out(tiny_cohort, tmp_path):
    subject = tmp_path / "subject"
    shutil.copytree(subject_folders(tiny_cohort)[0], subject)
    (subject / "seg_la_4ch.nii.gz").unlink()
    flags = quality_control(qc_benchmark.read_segmentations(subject))
    assert checks(flags) == {("la_4ch", "missing_plane")}
    assert "RA volumes" in flags[0]["reason"]


def test_a_second_systole_and_myocardium_lost_on_some_frames_are_flagged(tiny_cohort, tmp_path):
    subject = tmp_path / "subject"
    shutil.copytree(subject_folders(tiny_cohort)[0], subject)
    image = nib.load(subject / "seg_sa.nii.gz")
    labels = np.asarray(image.dataobj).copy()
    ed, num_frames = int(np.argmax((labels == 1).sum(axis=(0, 1, 2)))), labels.shape[3]
    # half way round the cycle the frames from ED on play again: a second systole
    half = num_frames // 2
    labels[..., [(ed + half + k) % num_frames for k in range(half - 3)]] = labels[
        ..., [(ed + k) % num_frames for k in range(half - 3)]
    ]
    # and just before it the myocardium vanishes from every slice but one for two frames
    lost = [(ed + half + k) % num_frames for k in (-2, -1)]
    wall = labels[..., lost]
    wall[:, :, 1:][wall[:, :, 1:] == 2] = 0
    labels[..., lost] = wall
    save_nifti_atomic(labels, image.affine, subject / "seg_sa.nii.gz")
    flags = quality_control(qc_benchmark.read_segmentations(subject))
    assert {("sa", "ejections"), ("sa", "myocardial_drift")} <= checks(flags)
    ejection = next(f["reason"] for f in flags if f["check"] == "ejections")
    assert "2 separate minima" in ejection


def test_a_volume_no_adult_heart_has_is_flagged_with_its_value_and_bounds(tiny_cohort, tmp_path):
    subject = tmp_path / "subject"
    shutil.copytree(subject_folders(tiny_cohort)[0], subject)
    image = nib.load(subject / "seg_sa.nii.gz")
    thin = image.affine.copy()
    thin[:3, 2] *= 0.1  # slices 10 times closer: every SA volume a tenth, LVEDV below any adult's
    save_nifti_atomic(np.asarray(image.dataobj), thin, subject / "seg_sa.nii.gz")
    flags = [f for f in quality_control(qc_benchmark.read_segmentations(subject)) if f["check"] == "plausibility"]
    lvedv = next(f for f in flags if f["reason"].startswith("LVEDV"))
    low, high = PLAUSIBLE_RANGES["LVEDV"]
    assert lvedv["view"] == "sa" and f"{low:g}-{high:g} mL" in lvedv["reason"]


def run_inference(subject: Path, out: Path, *extra: str) -> None:
    # an untrained tiny network (no checkpoint): what it segments does not matter, the flags must be written
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.yaml", "--preset",
               "tiny", "--dataset_dir", str(subject), "--output_dir", str(out), "--ckpt", "''",
               "--centre_shifts_px", "[]", *extra]  # fmt: skip
    result = subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.mark.parametrize("switched_off", [False, True])
def test_inference_writes_the_flags_in_report_json_and_counts_them_in_the_cohort_table(
    tiny_cohort, tmp_path, switched_off
):
    subject = tmp_path / "subject"
    shutil.copytree(subject_folders(tiny_cohort)[0], subject)
    (subject / "la_3ch.nii.gz").unlink()
    out = tmp_path / "predictions"
    run_inference(subject, out, *(["--quality_control", "false"] if switched_off else []))
    report = json.loads((out / subject.name / "report.json").read_text())
    rows = {
        table: next(csv.DictReader(open(out / f"{table}.csv")))
        for table in ("phenotypes", "phenotypes_from_segmentation")
    }
    if switched_off:
        assert "quality_control" not in report
        assert all("qc_flags" not in row for row in rows.values())
        return
    flags = report["quality_control"]
    assert ("la_3ch", "missing_plane") in checks(flags), "a plane missing from the input is flagged"
    assert all(set(f) == {"view", "check", "reason"} and f["reason"] for f in flags)
    # the flags are those of the written segmentations with the blood-pool signal of the SA image under them, as the
    # QC benchmark checks a model's predictions
    assert checks(flags) == checks(qc_benchmark.model_flags(subject, out / subject.name))
    for row in rows.values():
        assert int(row["qc_flags"]) == len(flags)
        assert row["qc_summary"].split("; ") == [f"{f['view']}:{f['check']}" for f in flags]


def test_files_without_scanner_geometry_are_flagged(tiny_cohort, tmp_path):
    """Identity affines on every plane (a NIfTI export that dropped the DICOM geometry): each plane is flagged, and
    the planes sharing one affine once; the clean subject has neither."""
    subject = tmp_path / "subject"
    shutil.copytree(subject_folders(tiny_cohort)[0], subject)
    for path in subject.glob("seg_*.nii.gz"):
        save_nifti_atomic(np.asarray(nib.load(path).dataobj), np.eye(4), path)
    flags = quality_control(qc_benchmark.read_segmentations(subject))
    geometry = [f for f in flags if f["check"] == "geometry"]
    assert {f["view"] for f in geometry} == {"sa", "la_2ch", "la_3ch", "la_4ch", "subject"}
    assert "identity affine" in geometry[0]["reason"] and "tools.convert_dicom" in geometry[0]["reason"]
    clean = quality_control(qc_benchmark.read_segmentations(subject_folders(tiny_cohort)[0]))
    assert not [f for f in clean if f["check"] == "geometry"]


def test_an_sa_slice_saved_as_a_long_axis_view_is_flagged(tiny_cohort):
    """The 4-chamber file replaced by one SA slice (its labels and its place): flagged as lying parallel to the SA
    slices, which no long-axis view does; the real long-axis views are not."""
    planes = qc_benchmark.read_segmentations(subject_folders(tiny_cohort)[0])
    sa_labels, sa_affine = planes["sa"]
    middle = sa_labels.shape[2] // 2
    slice_affine = sa_affine.copy()
    slice_affine[:3, 3] = (sa_affine @ np.array([0.0, 0.0, middle, 1.0]))[:3]
    flags = quality_control({**planes, "la_4ch": (sa_labels[:, :, middle : middle + 1], slice_affine)})
    parallel = [f for f in flags if f["check"] == "view_identity" and "parallel to the SA slices" in f["reason"]]
    assert [f["view"] for f in parallel] == ["la_4ch"], flags
    assert "0 deg from parallel" in parallel[0]["reason"]
