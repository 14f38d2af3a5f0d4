"""Command-line tools run as files: canonical 4-D NIfTI export and the planes picture."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from conftest import REPO

from scripts.canonical import LoadCineSubjectd, read_canonical_nifti


def test_export_canonical_writes_one_4d_nifti_per_subject(tiny_cohort, tmp_path):
    subject = tiny_cohort / "subject_0000"
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "sa.nii.gz").write_bytes(b"truncated")
    out = tmp_path / "canonical"
    command = [sys.executable, str(REPO / "scripts" / "export_canonical.py"), str(subject), "--out", str(out)]
    command += ["--num-frames", "10", "--crop-size", "32", "--spacing-mm", "7.2"]
    subprocess.run(command, check=True, capture_output=True, text=True)
    image, plane_mask = read_canonical_nifti(out / "subject_0000.nii.gz")
    label, _ = read_canonical_nifti(out / "subject_0000_label.nii.gz")
    sample = LoadCineSubjectd(num_frames=10, crop_size=32, spacing_mm=7.2)({"subject": str(subject)})
    np.testing.assert_allclose(image, sample["image"].numpy(), atol=1e-6)
    np.testing.assert_array_equal(label, sample["label"].numpy())
    np.testing.assert_array_equal(plane_mask, sample["plane_mask"].numpy())
    # a bad subject is named, skipped, and turns the exit code to 1
    result = subprocess.run(command[:2] + [str(tmp_path / "bad")] + command[3:], capture_output=True, text=True)
    assert result.returncode == 1 and "bad" in result.stderr and "skipped" in result.stderr


def test_plot_planes_writes_a_picture(tiny_cohort, tmp_path):
    out = tmp_path / "planes.png"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "plot_planes.py"),
            str(tiny_cohort / "subject_0000"),
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
