"""One image file per case (MONAI Label's way): the config's preprocessing, inferer and postprocessing give, for a
plane file, exactly the labels that ``run`` writes for a subject of that one plane, in the file's own grid; MONAI
Label's own ``BundleInferTask`` runs them on the bundle folder where monailabel is installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import BUNDLE, REPO
from monai.bundle import ConfigParser


@pytest.fixture(scope="module")
def user_bundle(tmp_path_factory) -> Path:
    """The bundle folder with its shipped weights, as a user unpacks it."""
    if not (BUNDLE / "models" / "model.pt").is_file():
        pytest.skip("no shipped weights")
    copy = tmp_path_factory.mktemp("user") / "bundle"
    shutil.copytree(BUNDLE, copy, ignore=shutil.ignore_patterns("__pycache__", "docs"))
    return copy


@pytest.fixture(scope="module")
def one_plane_runs(user_bundle, tiny_cohort, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Per plane (SA stack, 4-chamber view): (the plane file, the labels ``run`` writes for a subject of only it)."""
    runs = {}
    root = tmp_path_factory.mktemp("one_plane")
    for stem in ("sa", "la_4ch"):
        subject = root / "in" / f"case_{stem}"
        subject.mkdir(parents=True)
        shutil.copy(tiny_cohort / "subject_0000" / f"{stem}.nii.gz", subject / f"{stem}.nii.gz")
        out = root / "out" / stem
        command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.yaml",
                   "--dataset_dir", str(subject), "--output_dir", str(out), "--write_reports", "false"]  # fmt: skip
        result = subprocess.run(command, cwd=user_bundle, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-4000:]
        runs[stem] = (subject / f"{stem}.nii.gz", out / subject.name / f"seg_{stem}.nii.gz")
    return runs


def test_the_config_segments_one_plane_file_as_run_does_a_subject_of_that_plane(user_bundle, one_plane_runs):
    parser = ConfigParser()
    parser.read_config(user_bundle / "configs" / "inference.yaml")
    parser["bundle_root"] = str(user_bundle)
    preprocessing = parser.get_parsed_content("preprocessing")
    inferer = parser.get_parsed_content("inferer")
    postprocessing = parser.get_parsed_content("postprocessing")
    network = parser.get_parsed_content("network_def")
    # as MONAI Label loads a bundle's weights: the state dict into the config's network, not strictly
    state = torch.load(user_bundle / "models" / "model.pt", weights_only=True)
    network.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    network.eval()
    for stem, (plane_file, run_labels) in one_plane_runs.items():
        expected = np.asarray(nib.load(run_labels).dataobj)
        data = preprocessing({"image": str(plane_file)})
        data["pred"] = inferer(data["image"][None], network)[0]
        for frame in (0, 7):
            labels = postprocessing({**data, "frame": frame})["pred"]
            assert tuple(labels.shape) == (1,) + nib.load(plane_file).shape[:3], stem
            np.testing.assert_array_equal(labels[0].numpy(), expected[..., frame], err_msg=f"{stem} frame {frame}")
            np.testing.assert_allclose(data["image"].meta["original_affine"].numpy(), nib.load(plane_file).affine)
        assert (expected > 0).any(), f"the shipped weights find the heart in the {stem} file"
        with pytest.raises(RuntimeError) as error:
            postprocessing({**data, "frame": 20})
        assert "frame 20 is outside the 20 frames" in str(error.value.__cause__)


def test_a_single_slice_file_must_name_its_view(user_bundle, one_plane_runs, tmp_path):
    parser = ConfigParser()
    parser.read_config(user_bundle / "configs" / "inference.yaml")
    parser["bundle_root"] = str(user_bundle)
    preprocessing = parser.get_parsed_content("preprocessing")
    unnamed = tmp_path / "case.nii.gz"
    shutil.copy(one_plane_runs["la_4ch"][0], unnamed)
    with pytest.raises(RuntimeError) as error:
        preprocessing({"image": str(unnamed)})
    assert "case.nii.gz: a single-slice cine" in str(error.value.__cause__)
    assert "rename it with 2ch, 3ch or 4ch in the name or pass view" in str(error.value.__cause__)
    assert preprocessing({"image": str(unnamed), "view": "la_4ch"})["image"].shape[1] == 9


def test_monailabel_bundle_infer_task_writes_one_frame_in_the_files_grid(user_bundle, one_plane_runs, tmp_path):
    pytest.importorskip("monailabel", reason="MONAI Label is tested in its own environment (requirements-monailabel)")
    from monailabel.tasks.infer.bundle import BundleInferTask

    task = BundleInferTask(str(user_bundle), {})
    assert task.is_valid() and task.labels == {"lvbp": 1, "lvmyo": 2, "rvbp": 3, "labp": 4, "rabp": 5}
    for stem, (plane_file, run_labels) in one_plane_runs.items():
        written, _ = task({"image": str(plane_file), "frame": 5, "device": "cpu"})
        label = nib.load(written)
        assert label.shape == nib.load(plane_file).shape[:3], stem
        np.testing.assert_allclose(label.affine, nib.load(plane_file).affine, atol=1e-4)
        np.testing.assert_array_equal(np.asarray(label.dataobj), np.asarray(nib.load(run_labels).dataobj)[..., 5])
    exported = tmp_path / "canonical"
    subprocess.run(
        [sys.executable, "-m", "tools.export_canonical", str(one_plane_runs["sa"][0].parent), "--out", str(exported)],
        check=True,
        cwd=REPO,
    )
    stack = exported / "case_sa.nii.gz"
    written, _ = task({"image": str(stack), "device": "cpu"})
    labels = np.asarray(nib.load(written).dataobj)
    assert labels.shape == nib.load(stack).shape[:3] and set(np.unique(labels)) <= set(range(6))
    assert (labels[:, :, :6] > 0).any() and not (labels[:, :, 6:] > 0).any(), "SA planes segmented, absent LA empty"


def labelled_studies(tiny_cohort: Path, folder: Path) -> list[dict[str, str]]:
    """Two SA cine files with their labels of frame 0 (3-D, as MONAI Label's editors save them), in a MONAI Label
    studies layout (``labels/final``)."""
    (folder / "labels" / "final").mkdir(parents=True)
    pairs = []
    for subject in ("subject_0000", "subject_0001"):
        image = folder / f"{subject}_sa.nii.gz"
        shutil.copy(tiny_cohort / subject / "sa.nii.gz", image)
        seg = nib.load(tiny_cohort / subject / "seg_sa.nii.gz")
        label = folder / "labels" / "final" / image.name
        nib.save(nib.Nifti1Image(np.asarray(seg.dataobj)[..., 0], seg.affine), label)
        pairs.append({"image": str(image), "label": str(label)})
    return pairs


def changed_tensors(before: dict, after: dict) -> set[str]:
    """Names of the tensors of ``before`` that ``after`` holds with other values."""
    return {k for k in before if not torch.equal(before[k].float(), after[k].float())}


def test_train_json_fine_tunes_on_file_pairs_and_installs_the_network(user_bundle, tiny_cohort, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(user_bundle, bundle)
    pairs = labelled_studies(tiny_cohort, tmp_path / "studies")
    before = torch.load(bundle / "models" / "model.pt", weights_only=True)
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/train.json",
               "--train#dataset#data", repr(pairs[:1]), "--validate#dataset#data", repr(pairs[1:]),
               "--train#trainer#max_epochs", "1"]  # fmt: skip
    result = subprocess.run(command, cwd=bundle, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    after = torch.load(bundle / "models" / "model.pt", weights_only=True)
    assert after.keys() == before.keys() and all(after[k].dtype == before[k].dtype for k in before)
    changed = changed_tensors(before, after)
    assert any(k.startswith("segmenter.") for k in changed), "the segmentation was fine-tuned"
    assert not any(k.startswith(("phenotype_head.", "measure_head.")) for k in changed), "the heads stay"
    # the subject folders link the files and hold the 3-D label as frame 0, every other frame unlabelled
    (subject,) = (bundle / "file_training" / "dataset").glob("training_0000_*")
    seg = np.asarray(nib.load(subject / "seg_sa.nii.gz").dataobj)
    np.testing.assert_array_equal(seg[..., 0], np.asarray(nib.load(pairs[0]["label"]).dataobj))
    assert (seg[..., 1:] == 255).all() and (subject / "sa.nii.gz").is_symlink()


def test_monailabel_bundle_train_task_fine_tunes_from_its_datastore(user_bundle, tiny_cohort, tmp_path):
    pytest.importorskip("monailabel", reason="MONAI Label is tested in its own environment (requirements-monailabel)")
    from monailabel.datastore.local import LocalDatastore
    from monailabel.tasks.infer.bundle import BundleInferTask
    from monailabel.tasks.train.bundle import BundleTrainTask

    bundle = tmp_path / "bundle"
    shutil.copytree(user_bundle, bundle)
    pairs = labelled_studies(tiny_cohort, tmp_path / "studies")
    datastore = LocalDatastore(str(tmp_path / "studies"), extensions=("*.nii.gz",), auto_reload=False)
    assert len(datastore.datalist()) == 2
    before = torch.load(bundle / "models" / "model.pt", weights_only=True)
    task = BundleTrainTask(str(bundle), {})
    assert task.is_valid()
    task(
        {"model": "wholeheart_cine", "max_epochs": 1, "device": "cpu", "multi_gpu": False, "val_split": 0.5}, datastore
    )
    after = torch.load(bundle / "models" / "model.pt", weights_only=True)
    assert any(k.startswith("segmenter.") for k in changed_tensors(before, after)), "the segmentation was fine-tuned"
    written, _ = BundleInferTask(str(bundle), {})({"image": pairs[0]["image"], "device": "cpu"})
    assert nib.load(written).shape == nib.load(pairs[0]["image"]).shape[:3]
