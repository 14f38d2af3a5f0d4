"""With ``in_plane_axes: patient`` the canonical planes do not depend on how a file stores its voxels: a plane stored
transposed, mirrored or rotated (as scanners, vendors and converters do) gives the same canonical sample and the same
segmentation in the world."""

from __future__ import annotations

import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import REPO
from test_bundle import bundle_run, untrained_tiny_model

from scripts.canonical import LoadCineSubjectd
from scripts.geometry import BASE_DIRECTION_RAS, patient_axes, plane_axes
from tools.restore_subject import restore_subject, restored

GRID = {"num_sa_slices": 6, "num_frames": 10, "crop_size": 48, "spacing_mm": 3.0}


@pytest.mark.parametrize("storage", ["transpose", "flip", "rot90"])
def test_patient_axes_ignore_the_storage_and_follow_the_anatomy(storage):
    # an SA stack whose normal points to the base, as many scanners store it
    normal = BASE_DIRECTION_RAS
    u0 = np.cross(normal, [0.0, 0.0, 1.0])
    u0 /= np.linalg.norm(u0)
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = 1.4 * u0, 1.4 * np.cross(normal, u0), 8.0 * normal
    _, other = restored(np.zeros((8, 10, 3)), affine, storage)
    assert not np.allclose(plane_axes(other)[0], plane_axes(affine)[0]), "the stored axes differ"
    u, v, n = patient_axes(affine, short_axis=True)
    for axes in (patient_axes(other, short_axis=True), (u, v, n)):
        np.testing.assert_allclose(axes[0], u, atol=1e-12)
        np.testing.assert_allclose(axes[1], v, atol=1e-12)
    assert n @ BASE_DIRECTION_RAS < -0.99, "u x v points to the apex"
    assert u @ np.array([-1.0, -1.0, 0.0]) > 0, "u towards the patient's left-posterior"
    # a long-axis view: v towards the apex along the given long axis, u to the posterior side
    la = np.eye(4)
    la[:3, 0], la[:3, 1], la[:3, 2] = -BASE_DIRECTION_RAS, u0, np.cross(-BASE_DIRECTION_RAS, u0)
    _, la_other = restored(np.zeros((8, 10, 1)), la, storage)
    for la_axes in (patient_axes(la, False, -normal), patient_axes(la_other, False, -normal)):
        np.testing.assert_allclose(la_axes[1], -BASE_DIRECTION_RAS, atol=1e-12)
        assert la_axes[0] @ np.array([0.0, -1.0, 0.0]) > 0


def test_a_subject_stored_another_way_gives_the_same_sample_and_segmentation(tiny_cohort, tmp_path):
    original = sorted(tiny_cohort.glob("subject_*"))[0]
    dataset = tmp_path / "dataset"
    shutil.copytree(original, dataset / "as_synthesised")
    storages = {"sa": "rot90", "la_2ch": "transpose", "la_3ch": "flip", "la_4ch": "rot90"}
    restore_subject(original, dataset / "stored_otherwise", storages)
    command = [sys.executable, "-m", "tools.restore_subject", str(original), str(dataset / "transposed")]
    result = subprocess.run(command + ["--storage", "transpose"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr

    load = LoadCineSubjectd(keys="subject", in_plane_axes="patient", **GRID)
    first, second = (load({"subject": str(dataset / name)}) for name in ("as_synthesised", "stored_otherwise"))
    torch.testing.assert_close(first["image"], second["image"], atol=1.5 / 255, rtol=0)
    assert float((first["label"] == second["label"]).float().mean()) > 0.999
    stored = LoadCineSubjectd(keys="subject", **GRID)  # the default: the files' voxel axes
    assert not torch.allclose(stored({"subject": str(dataset / "stored_otherwise")})["image"], first["image"])

    model = untrained_tiny_model(tmp_path / "model.pt")
    out = tmp_path / "predictions"
    common = {"dataset_dir": dataset, "output_dir": out, "ckpt": model, "centre_shifts_px": "[]"}
    bundle_run(["configs/inference.yaml"], in_plane_axes="patient", **common)
    for stem, storage in storages.items():
        reference = nib.load(out / "as_synthesised" / f"seg_{stem}.nii.gz")
        expected, expected_affine = restored(np.asarray(reference.dataobj), reference.affine, storage)
        written = nib.load(out / "stored_otherwise" / f"seg_{stem}.nii.gz")
        np.testing.assert_allclose(written.affine, expected_affine, atol=1e-4)
        assert float((np.asarray(written.dataobj) == expected).mean()) > 0.995, stem
        assert len(np.unique(expected)) > 1, "the untrained network labels something"
    reference = nib.load(out / "as_synthesised" / "seg_sa.nii.gz")
    expected, _ = restored(np.asarray(reference.dataobj), reference.affine, "transpose")
    assert float((np.asarray(nib.load(out / "transposed" / "seg_sa.nii.gz").dataobj) == expected).mean()) > 0.995
