"""Every workflow through the real ``python -m monai.bundle`` runner with the real configs, at the ``tiny`` preset."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import BUNDLE, REPO, SHARED, load_tool
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from scripts.atrial_slices import relabel_atrial_sa_slices
from scripts.beyond_apex import clear_slices_beyond_apex, slices_beyond_apex
from scripts.inference import (
    ERROR_COLUMNS,
    SOURCE_COLUMN,
    CohortTable,
    csv_text,
    phenotype_columns,
    phenotypes_from_measures,
)
from scripts.labels import PHENOTYPE_NAMES
from scripts.lv_cavity import fill_lv_cavity, grow_lv_blood_pool
from scripts.measures import volume_curves_from_segmentations
from scripts.presets import build_network, preset_grid
from scripts.tracking import CLASS_COLOURS
from scripts.weights import load_network_weights

TRAIN = ["configs/inference.yaml", "configs/train.yaml"]


def bundle_run(
    configs: list[str], cwd: Path = BUNDLE, section: str = "run", **overrides
) -> subprocess.CompletedProcess:
    """Run a bundle workflow section; from the repo root the config paths are prefixed with ``bundle/``."""
    prefix = "" if cwd == BUNDLE else "bundle/"
    config_files = repr([prefix + c for c in configs])
    command = [sys.executable, "-m", "monai.bundle", "run", section, "--config_file", config_files]
    for key, value in {"preset": "tiny", **overrides}.items():
        command += [f"--{key}", str(value)]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result


def untrained_tiny_model(path: Path) -> Path:
    """A randomly initialised (seed 0) ``tiny`` segmentation network of 9 planes saved at ``path``: inference runs
    through the real workflow without training first."""
    grid = preset_grid("tiny")
    torch.manual_seed(0)
    torch.save(build_network("heart", "tiny", 9, grid.num_frames, grid.crop_size).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def trained(tiny_cohort, tmp_path_factory) -> Path:
    """Pretrain, then fine-tune segmentation and phenotypes, for one epoch each; returns the output folder."""
    out = tmp_path_factory.mktemp("outputs")
    common = {"dataset_dir": tiny_cohort, "output_dir": out, "max_epochs": 1}
    bundle_run(TRAIN + ["configs/pretrain.yaml"], **common)
    # the segmentation fine-tuning runs from the repository root: the bundle's scripts package is found from there too;
    # the full-resolution stage on 5 of the 10 frames per step, as the shipped recipe's 10 of 50
    bundle_run(TRAIN + ["configs/finetune_segmentation.yaml"], cwd=REPO, decoded_frames=5, **common)
    # ``run training`` is the Model Zoo name of the training section; the measure head on 3 of the 4 subjects
    result = bundle_run(
        TRAIN + ["configs/finetune_phenotypes.yaml"], section="training", measure_head_subjects=3, **common
    )
    (out / "finetune_phenotypes.log").write_text(result.stdout + result.stderr)
    return out


def test_pretrain_writes_latest_and_best_checkpoints_and_resumes(trained, tiny_cohort):
    models = trained / "pretrain" / "models"
    assert (models / "model.pt").is_file()
    assert (models / "checkpoint_epoch=1.pt").is_file()
    state = torch.load(models / "model.pt", weights_only=True)
    assert any(k.startswith("encoder.") for k in state)
    bundle_run(
        TRAIN + ["configs/pretrain.yaml"], dataset_dir=tiny_cohort, output_dir=trained, max_epochs=2, resume="true"
    )
    assert (models / "checkpoint_epoch=2.pt").is_file(), "resume must continue at epoch 2"
    assert not (models / "checkpoint_epoch=1.pt").exists(), "only the latest epoch checkpoint is kept"
    checkpoint = torch.load(models / "checkpoint_epoch=2.pt", weights_only=True)
    assert checkpoint["trainer"]["iteration"] == 2 * checkpoint["trainer"]["epoch_length"]
    assert (trained / "pretrain" / "logs").is_dir() and any((trained / "pretrain" / "logs").iterdir())


def test_resume_false_on_the_command_line_starts_over(trained, tiny_cohort, tmp_path):
    """``--resume false`` reaches the config as the string 'false' (python-fire): it must start at epoch 1, not resume
    from the checkpoint that is there."""
    shutil.copytree(trained / "pretrain", tmp_path / "pretrain")
    models = tmp_path / "pretrain" / "models"
    assert list(models.glob("checkpoint_epoch=*.pt")), "a checkpoint to (wrongly) resume from"
    started = time.time()
    result = bundle_run(
        TRAIN + ["configs/pretrain.yaml"], dataset_dir=tiny_cohort, output_dir=tmp_path, max_epochs=1, resume="false"
    )
    assert "resumed from" not in result.stdout + result.stderr
    written = models / "checkpoint_epoch=1.pt"
    assert written.is_file() and written.stat().st_mtime >= started, "epoch 1 trained and saved again"
    checkpoint = torch.load(written, weights_only=True)
    assert checkpoint["trainer"]["iteration"] == checkpoint["trainer"]["epoch_length"]


def validation_metric_of(checkpoint: Path, configs: list[str], metric: str, **overrides) -> float:
    """``metric`` of the network weights in ``checkpoint`` on the validation split, by the config's own evaluator
    (with no handlers, so nothing is written)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(BUNDLE / c) for c in configs])
    parser.update({"preset": "tiny", **{k: str(v) for k, v in overrides.items()}, "validate#handlers": []})
    network = parser.get_parsed_content("train#network")
    network.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    evaluator = parser.get_parsed_content("validate#evaluator")
    evaluator.run()
    return float(evaluator.state.metrics[metric])


def test_an_error_metric_keeps_the_lowest_epoch_as_model_pt_also_when_resumed(trained, tiny_cohort):
    configs = TRAIN + ["configs/finetune_phenotypes.yaml"]
    common = {"dataset_dir": tiny_cohort, "output_dir": trained, "task": "phenotypes_best_model", "max_epochs": 3}
    result = bundle_run(configs, **common)
    logged = [float(line.rsplit(":", 1)[1]) for line in (result.stdout + result.stderr).splitlines()
              if "Metrics -- val_phenotype_mae:" in line]  # fmt: skip
    assert len(logged) == 4, "validation before epoch 1 and after each of the 3 epochs"
    assert max(logged) - min(logged) > 1e-3, "the epochs' errors must differ for this test to tell them apart"
    model = trained / "phenotypes_best_model" / "models" / "model.pt"
    kept = validation_metric_of(model, configs, "val_phenotype_mae", **common)
    assert kept == pytest.approx(min(logged), abs=2e-4), f"model.pt has MAE {kept}, the epochs had {logged}"
    before = torch.load(model, weights_only=True)
    # resuming the finished run validates again at start: that must not count as a new best
    bundle_run(configs, resume="true", **common)
    after = torch.load(model, weights_only=True)
    assert all(torch.equal(before[k], after[k]) for k in before), "resuming rewrote the best model"


def tensorboard_events(log_dir: Path) -> tuple[dict[str, dict[int, float]], dict[str, dict[int, np.ndarray]]]:
    """The scalars ({tag: {step: value}}) and images ({tag: {step: (H, W, 3) uint8 RGB}}) of every event file in
    ``log_dir`` (a resumed run adds one), read with TensorBoard's own reader."""
    scalars: dict[str, dict[int, float]] = {}
    images: dict[str, dict[int, np.ndarray]] = {}
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        events = EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 0})
        events.Reload()
        for tag in events.Tags()["scalars"]:
            scalars.setdefault(tag, {}).update({e.step: e.value for e in events.Scalars(tag)})
        for tag in events.Tags()["images"]:
            decoded = {e.step: np.asarray(Image.open(io.BytesIO(e.encoded_image_string)).convert("RGB")) for e in
                       events.Images(tag)}  # fmt: skip
            images.setdefault(tag, {}).update(decoded)
    return scalars, images


def test_tensorboard_has_the_learning_rate_and_the_validation_images(trained, tiny_cohort):
    """The one-epoch pretraining and segmentation runs of ``trained``: the learning rate each step used, and the
    images of one validation subject (4 frames of a plane, the tiny preset's crop) at the epoch's validation."""
    crop = preset_grid("tiny").crop_size
    iterations = len(json.loads((tiny_cohort / "datalist.json").read_text())["training"])
    scalars, images = tensorboard_events(trained / "pretrain" / "logs")
    assert {"train_loss", "val_mae_loss"} <= set(scalars)
    # a warm-up of one epoch from 0 to the pretraining's 1.5e-4, the rate before each step
    first_epoch = [scalars["learning_rate"][step] for step in range(1, iterations + 1)]
    assert first_epoch == pytest.approx([1.5e-4 * k / iterations for k in range(iterations)], rel=1e-5, abs=1e-12)
    grid = images["images/reconstruction"][1]
    assert grid.shape == (3 * crop, 4 * crop, 3)
    shown, masked, reconstruction = (grid[row * crop : (row + 1) * crop, :, 0].astype(int) for row in range(3))
    visible = masked > 0
    assert np.array_equal(masked[visible], shown[visible]) and np.array_equal(reconstruction[visible], shown[visible])
    hidden_share = ((masked == 0) & (shown > 0)).sum() / (shown > 0).sum()
    assert hidden_share > 0.3, f"the MAE hides 70 % of the patches, {hidden_share:.0%} of the bright pixels hidden"

    scalars, images = tensorboard_events(trained / "finetune_segmentation" / "logs")
    assert {"train_loss", "val_mean_dice"} <= set(scalars)
    # two groups: the encoder's rate (3e-4) and the heads' (1e-3), warming up together
    encoder, heads = (scalars[f"learning_rate/group_{i}"][iterations] for i in (0, 1))
    assert heads / encoder == pytest.approx(1e-3 / 3e-4, rel=1e-4)
    grid = images["images/segmentation"][1]
    assert grid.shape == (2 * crop, 4 * crop, 3)
    # the row of true contours: grey but for contour pixels, each in its class's colour (8-bit: within 1), and the
    # mid-ventricular SA slice of a synthetic heart shows the LV blood pool, the myocardium and the RV
    truth = grid[:crop].reshape(-1, 3).astype(int)
    coloured = truth[truth.max(1) != truth.min(1)]
    distance = np.abs(coloured[:, None] - CLASS_COLOURS.numpy()[None] * 255).max(-1)
    assert bool((distance.min(1) <= 1).all())
    assert set(distance.argmin(1).tolist()) >= {0, 1, 2}


def test_measure_head_is_fit_on_as_many_subjects_as_asked(trained, tiny_cohort):
    training = json.loads((tiny_cohort / "datalist.json").read_text())["training"]
    log = (trained / "finetune_phenotypes.log").read_text()
    assert len(training) == 4 and "measure head: ridge fit on the segmentations of 3 subjects" in log


def test_finetuning_starts_from_the_pretrained_encoder(trained):
    pretrained = torch.load(trained / "pretrain" / "models" / "model.pt", weights_only=True)
    segmentation = torch.load(trained / "finetune_segmentation" / "models" / "model.pt", weights_only=True)
    assert any(k.startswith("seg") or "decoder" in k for k in segmentation)
    shared = [k for k in pretrained if k.startswith("encoder.") and k in segmentation]
    assert shared, "the segmentation model has the encoder of the MAE"
    phenotypes = torch.load(trained / "finetune_phenotypes" / "models" / "model.pt", weights_only=True)
    # frozen encoder: the phenotype stage leaves the segmentation model's encoder untouched
    for key in shared:
        assert torch.equal(segmentation[key], phenotypes[key]), key
    std = phenotypes["phenotype_head.target_std"]
    assert not torch.allclose(std, torch.ones_like(std)), "phenotype normalisation comes from the training set"


def written_planes_with_switch(
    trained, tiny_cohort, out: Path, option: str, values: tuple[str, ...] = ("false", "true")
) -> dict[str, dict[str, tuple]]:
    """Inference through the bundle runner on the tiny cohort's first test subject with ``--<option> VALUE`` for each
    of ``values``: value -> plane stem -> (written labels (X, Y, S, T), affine)."""
    source = tiny_cohort / json.loads((tiny_cohort / "datalist.json").read_text())["test"][0]["subject"]
    model = trained / "finetune_phenotypes" / "models" / "model.pt"
    outputs = {}
    for switch in values:
        run_dir = out / f"{option}_{switch}"
        bundle_run(["configs/inference.yaml"], dataset_dir=source, output_dir=run_dir, ckpt=model,
                   write_reports="false", write_dicom_seg="false", **{option: switch})  # fmt: skip
        images = {
            stem: nib.load(run_dir / source.name / f"seg_{stem}.nii.gz")
            for stem in ("sa", "la_2ch", "la_3ch", "la_4ch")
        }
        outputs[switch] = {stem: (np.asarray(image.dataobj), image.affine) for stem, image in images.items()}
    return outputs


def test_sa_atria_from_long_axis_only_turns_sa_lv_into_la(trained, tiny_cohort, tmp_path):
    """``--sa_atria_from_long_axis true`` through the bundle runner: the SA stack differs from the default run only
    where LV blood pool became LA blood pool, and the long-axis views are untouched."""
    outputs = written_planes_with_switch(trained, tiny_cohort, tmp_path, "sa_atria_from_long_axis")
    default, relabelled = outputs["false"], outputs["true"]
    assert np.array_equal(relabelled["sa"][0], relabel_atrial_sa_slices(default)), "the module's relabelling, written"
    changed = default["sa"][0] != relabelled["sa"][0]
    assert np.all(default["sa"][0][changed] == 1) and np.all(relabelled["sa"][0][changed] == 4), "only LV -> LA"
    for stem in ("la_2ch", "la_3ch", "la_4ch"):
        assert np.array_equal(default[stem][0], relabelled[stem][0])


def test_sa_fill_lv_cavity_only_turns_myocardium_inside_the_lv_into_lv(trained, tiny_cohort, tmp_path):
    """``--sa_fill_lv_cavity false`` through the bundle runner against the default: the default SA stack is the
    module's fill of the unfilled one (only myocardium became LV blood pool), and the long-axis views are the same."""
    outputs = written_planes_with_switch(trained, tiny_cohort, tmp_path, "sa_fill_lv_cavity")
    unfilled, filled = outputs["false"]["sa"][0], outputs["true"]["sa"][0]
    assert np.array_equal(filled, fill_lv_cavity(unfilled)), "the module's fill, written"
    changed = unfilled != filled
    assert np.all(unfilled[changed] == 2) and np.all(filled[changed] == 1), "only myocardium -> LV"
    for stem in ("la_2ch", "la_3ch", "la_4ch"):
        assert np.array_equal(outputs["false"][stem][0], outputs["true"][stem][0])


def test_sa_clear_beyond_apex_writes_the_modules_clearing(trained, tiny_cohort, tmp_path):
    """``--sa_clear_beyond_apex false`` through the bundle runner against the default: the default SA stack is the
    module's clearing of the other (slices beyond the apex set to background, no other change), the long-axis views
    are the same."""
    outputs = written_planes_with_switch(trained, tiny_cohort, tmp_path, "sa_clear_beyond_apex")
    (kept, affine), cleared = outputs["false"]["sa"], outputs["true"]["sa"][0]
    assert np.array_equal(cleared, clear_slices_beyond_apex(kept, affine)), "the module's clearing, written"
    subject = json.loads((tiny_cohort / "datalist.json").read_text())["test"][0]["subject"]
    for switch, reported in (("false", []), ("true", slices_beyond_apex(kept, affine))):
        report = json.loads(
            (tmp_path / f"sa_clear_beyond_apex_{switch}" / Path(subject).name / "report.json").read_text()
        )
        assert report["sa_slices_beyond_apex"] == reported, "report.json names the cleared slices"
    changed = kept != cleared
    assert np.all(cleared[changed] == 0), "only labels -> background"
    for stem in ("la_2ch", "la_3ch", "la_4ch"):
        assert np.array_equal(outputs["false"][stem][0], outputs["true"][stem][0])


def test_sa_lv_blood_pool_margin_only_turns_myocardium_near_the_lv_into_lv(trained, tiny_cohort, tmp_path):
    """``--sa_lv_blood_pool_margin_mm 4`` through the bundle runner against 0 (the default): the SA stack is the
    module's growth of the default one at the file's pixel spacing, and the long-axis views are the same."""
    outputs = written_planes_with_switch(trained, tiny_cohort, tmp_path, "sa_lv_blood_pool_margin_mm", ("0", "4"))
    (default, affine), grown = outputs["0"]["sa"], outputs["4"]["sa"][0]
    spacing_mm = tuple(np.linalg.norm(affine[:3, :2], axis=0))
    assert np.array_equal(grown, grow_lv_blood_pool(default, spacing_mm, 4.0)), "the module's growth, written"
    changed = default != grown
    assert changed.any() and np.all(default[changed] == 2) and np.all(grown[changed] == 1), "only myocardium -> LV"
    for stem in ("la_2ch", "la_3ch", "la_4ch"):
        assert np.array_equal(outputs["0"][stem][0], outputs["4"][stem][0])


def test_inference_writes_every_plane_in_its_own_geometry(trained, tiny_cohort, tmp_path):
    subject = tmp_path / "subject_with_missing_plane"
    source = tiny_cohort / json.loads((tiny_cohort / "datalist.json").read_text())["test"][0]["subject"]
    shutil.copytree(source, subject)
    (subject / "la_3ch.nii.gz").unlink()
    (subject / "seg_la_3ch.nii.gz").unlink()
    out = tmp_path / "predictions"
    model = trained / "finetune_phenotypes" / "models" / "model.pt"
    bundle_run(["configs/inference.yaml"], dataset_dir=subject, output_dir=out, ckpt=model)
    predicted = out / subject.name
    for stem in ("sa", "la_2ch", "la_4ch"):
        written = nib.load(predicted / f"seg_{stem}.nii.gz")
        original = nib.load(subject / f"{stem}.nii.gz")
        assert written.shape == original.shape
        np.testing.assert_allclose(written.affine, original.affine, atol=1e-4)
        assert written.header.get_zooms()[3] == pytest.approx(original.header.get_zooms()[3]), "frame interval (ms)"
        values = np.unique(np.asarray(written.dataobj))
        assert set(values.tolist()) <= set(range(6))
    assert not (predicted / "seg_la_3ch.nii.gz").exists(), "a missing plane is reported, not invented"
    report = json.loads((predicted / "report.json").read_text())
    assert "la_3ch" in report["canonical_planes_missing"]
    assert nib.load(subject / "sa.nii.gz").shape[2] > 6, "the stack has more slices than the canonical 6"
    assert report["sa_slices_unsegmented"] == [], "extra passes segment every SA slice"
    assert np.load(predicted / "embedding.npy").ndim == 1
    reported = json.loads((predicted / "phenotypes.json").read_text())
    assert set(reported["phenotypes"]) >= {"LVEDV", "LVEF", "LVM", "RVEDV", "RVEF"}
    measured = reported["phenotypes_from_segmentation"]
    assert set(measured) == set(reported["phenotypes"]) == set(reported["phenotypes_from_embedding"])
    # finetune_phenotypes (encoder frozen) fit the measure head: the phenotypes are that head on what is measured
    # on the segmentations written here, or the embedding head's where no LV was found to measure
    network = build_network("heart", "tiny", num_frames=10, image_size=32)
    load_network_weights(network, model)
    assert bool(network.measure_head.fitted)
    written = {stem: nib.load(predicted / f"seg_{stem}.nii.gz") for stem in ("sa", "la_2ch", "la_4ch")}
    volumes = volume_curves_from_segmentations({k: (np.asarray(v.dataobj), v.affine) for k, v in written.items()})
    if volumes["LVBP"].max() > 0:
        assert reported["phenotypes_method"] == "measure_head"
        expected = dict(zip(PHENOTYPE_NAMES, phenotypes_from_measures(network, volumes)))
    else:
        assert reported["phenotypes_method"] == "phenotype_head"
        expected = reported["phenotypes_from_embedding"]
    for name, value in expected.items():
        if name in report["phenotypes_implausible"]:  # a value no heart has is left empty, and named
            assert reported["phenotypes"][name] is None and (value < 0 or value > 100)
        else:
            assert reported["phenotypes"][name] == pytest.approx(value, rel=1e-4, abs=1e-3)
    # measured on the written segmentations: the LV blood pool volume at ED is what seg_sa holds
    seg_sa = nib.load(predicted / "seg_sa.nii.gz")
    voxel_ml = abs(np.linalg.det(seg_sa.affine[:3, :3])) / 1000
    lv_ml = (np.asarray(seg_sa.dataobj) == 1).sum(axis=(0, 1, 2)) * voxel_ml
    if lv_ml.max() > 0:
        assert measured["LVEDV"] == pytest.approx(lv_ml.max(), rel=1e-6)
    else:  # an untrained tiny model may find no LV: then nothing is measured rather than a 0 mL ventricle
        assert measured["LVEDV"] is None and measured["LVEF"] is None
    # a chamber is named where its EF was left empty because the ES volume exceeded the ED one
    for chamber in ("LV", "RV"):
        edv, esv, ef = (measured[f"{chamber}{k}"] for k in ("EDV", "ESV", "EF"))
        not_measured = edv is not None and esv is not None and edv > 0 and esv > edv
        assert (chamber in report["ejection_not_measured"]) == not_measured and (ef is None or not not_measured)
    tables = {}
    for table in ("phenotypes", "phenotypes_from_embedding", "phenotypes_from_segmentation"):
        tables[table] = list(csv.DictReader(open(out / f"{table}.csv")))
        assert [r["subject"] for r in tables[table]] == [subject.name]
    # each table says where its values come from
    assert tables["phenotypes"][0]["phenotypes_source"] == reported["phenotypes_method"]
    assert tables["phenotypes_from_embedding"][0]["phenotypes_source"] == "phenotype_head"
    assert tables["phenotypes_from_segmentation"][0]["phenotypes_source"] == "segmentation"
    # and the planes they rest on: every segmented plane for the heads, each chamber's own views for the measures
    segmented = sorted(path.name[4:-7] for path in predicted.glob("seg_*.nii.gz"))
    assert reported["phenotypes_planes"] == segmented
    assert all(rows[0]["planes"] == ";".join(segmented) for rows in tables.values())
    measured_on = reported["phenotypes_from_segmentation_planes"]
    assert measured_on["LVEDV"] == ["sa"] and measured_on["LAVmax"] == [
        s for s in ("la_2ch", "la_4ch") if s in segmented
    ]
    # the cohort table holds the reported phenotypes (the measure head's), not the embedding head's
    assert float(tables["phenotypes"][0]["LVEDV"]) == pytest.approx(reported["phenotypes"]["LVEDV"], abs=1e-3)
    embedding_lvedv = reported["phenotypes_from_embedding"]["LVEDV"]
    assert float(tables["phenotypes_from_embedding"][0]["LVEDV"]) == pytest.approx(embedding_lvedv, abs=1e-3)


def test_inference_keeps_going_past_a_bad_subject(trained, tiny_cohort, tmp_path):
    dataset = tmp_path / "dataset"
    names = [e["subject"] for e in json.loads((tiny_cohort / "datalist.json").read_text())["training"][:2]]
    for name in names:
        shutil.copytree(tiny_cohort / name, dataset / name)
    bad = dataset / names[0]
    for path in bad.glob("*.nii.gz"):
        path.write_bytes(b"not a nifti file")
    out = tmp_path / "predictions"
    model = trained / "finetune_phenotypes" / "models" / "model.pt"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.yaml", "--preset",
               "tiny", "--dataset_dir", str(dataset), "--output_dir", str(out), "--ckpt", str(model)]  # fmt: skip
    result = subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True)
    assert result.returncode == 1, "a batch with a failed subject must not exit 0"
    assert f"1 subject(s) failed ({names[0]})" in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["done"] == [names[1]]
    assert summary["failed"][0]["subject"] == names[0]
    assert names[0] in summary["failed"][0]["error"] or "sa.nii.gz" in summary["failed"][0]["error"]


def test_evaluate_reports_dice_phenotypes_robustness_side_by_side(trained, tiny_cohort, tmp_path):
    model = trained / "finetune_phenotypes" / "models" / "model.pt"
    out = tmp_path / "evaluation"
    bundle_run(
        ["configs/inference.yaml", "configs/evaluate.yaml"],
        dataset_dir=tiny_cohort,
        output_dir=out,
        ckpt=model,
        scratch_ckpt=trained / "finetune_segmentation" / "models" / "model.pt",
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) == {"pretrained", "scratch"}
    pretrained = metrics["models"]["pretrained"]
    assert set(pretrained["dice"]) >= {"sa", "la_2ch", "la_3ch", "la_4ch", "all"}
    assert 0.0 <= pretrained["dice"]["all"]["LVBP"] <= 1.0
    lvef = pretrained["phenotypes"]["LVEF"]
    assert lvef["mae"] >= 0 and lvef["mean_guess_mae"] > 0 and abs(lvef["bias"]) <= lvef["mae"] + 1e-9
    assert "LVEDV" in pretrained["phenotypes_from_segmentation"] or pretrained["dice"]["all"]["LVBP"] == 0
    # measured on the reference labels, the ventricular volumes are close to the synthetic model's truth
    reference = metrics["phenotypes_from_reference_labels"]
    assert reference["LVEDV"]["mae"] < reference["LVEDV"]["mean_guess_mae"]
    # the tables of docs/README.md are printed from the report by tools/metrics_table.py
    tables = subprocess.run(
        [sys.executable, "-m", "tools.metrics_table", str(out / "metrics.json")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    lvbp = pretrained["dice"]["all"]["LVBP"]
    assert f"| pretrained | all | {lvbp:.3f} |" in tables and "| scratch, measured on segmentation |" in tables
    # Dice "as written" is that of the files inference writes (every plane in its own grid, every SA slice)
    assert set(pretrained["dice_input_planes"]) == {"sa", "la_2ch", "la_3ch", "la_4ch", "all"}
    (test_entry,) = json.loads((tiny_cohort / "datalist.json").read_text())["test"]
    subject = tiny_cohort / test_entry["subject"]
    predictions = tmp_path / "predictions"
    bundle_run(["configs/inference.yaml"], dataset_dir=subject, output_dir=predictions, ckpt=model)
    overlap = sizes = 0
    for stem in ("sa", "la_2ch", "la_3ch", "la_4ch"):
        written = np.asarray(nib.load(predictions / subject.name / f"seg_{stem}.nii.gz").dataobj)
        label = np.asarray(nib.load(subject / f"seg_{stem}.nii.gz").dataobj)
        overlap += 2 * ((written == 1) & (label == 1)).sum()
        sizes += (written == 1).sum() + (label == 1).sum()
    assert pretrained["dice_input_planes"]["all"]["LVBP"] == pytest.approx(overlap / sizes, abs=1e-6)
    written_lvbp = pretrained["dice_input_planes"]["all"]["LVBP"]
    assert f"| pretrained | all | {written_lvbp:.3f} |" in tables.split("as inference writes them")[1]
    # only the phenotype fine-tuning fit a measure head; the segmentation model has none fit
    from_measures = pretrained["phenotypes_from_measures"]["LVEDV"]
    assert from_measures["mae"] >= 0 and "phenotypes_from_measures" not in metrics["models"]["scratch"]
    assert f"| pretrained, regressed on measures | {from_measures['mae']:.1f} " in tables
    assert "| scratch, regressed on measures |" not in tables
    # the RA is in no 2-chamber view: not scored there, but counted when painted
    assert pretrained["dice"]["la_2ch"]["RABP"] is None
    ra_2ch = pretrained["spurious"]["la_2ch"]["RABP"]
    assert ra_2ch["absent"] == len(metrics["subjects"]) and 0 <= ra_2ch["painted"] <= ra_2ch["absent"]
    assert "| pretrained | la_2ch |" in tables.split("Classes painted where the labels show none")[1]
    bias_table = tables.split("Phenotype bias")[1].split("Missing-plane robustness")[0]
    assert f"| pretrained, regressed on embedding | {pretrained['phenotypes']['LVEDV']['bias']:+.1f} |" in bias_table
    for removed in ("1_planes_removed", "2_planes_removed"):
        for key in ("embedding_cosine_mean", "standardised_embedding_cosine_mean"):
            assert -1.0 <= pretrained["robustness"][removed][key] <= 1.0
    # subject by subject: one test subject, so its record is the cohort's mean, and the paired difference theirs
    (record,) = pretrained["per_subject"]
    assert record["subject"] == metrics["subjects"][0]
    assert record["dice_input_planes"]["LVBP"] == pytest.approx(written_lvbp)
    scratch_lvbp = metrics["models"]["scratch"]["dice_input_planes"]["all"]["LVBP"]
    paired = metrics["paired"]
    assert (paired["first"], paired["second"]) == ("pretrained", "scratch")
    lvbp_pair = paired["dice_input_planes"]["LVBP"]
    assert lvbp_pair["mean_difference"] == pytest.approx(written_lvbp - scratch_lvbp)
    assert lvbp_pair["first_better"] + lvbp_pair["second_better"] + lvbp_pair["ties"] == lvbp_pair["subjects"] == 1
    assert "| Dice LVBP, as written | 1 |" in tables.split("Subject by subject")[1]
    demo = load_tool("demo")
    wins, losses = lvbp_pair["first_better"], lvbp_pair["second_better"]
    assert f"LVBP {wins}-{losses} (p 1.00)" in demo.paired_line(metrics)
    # each model evaluated in a report of its own, then put side by side: the same tables as the joint report
    single = {}
    for name in ("pretrained", "scratch"):
        single[name] = tmp_path / f"{name}.json"
        alone = {key: value for key, value in metrics.items() if key != "paired"}
        single[name].write_text(json.dumps({**alone, "models": {"model": metrics["models"][name]}}))
    table_script = [sys.executable, "-m", "tools.metrics_table", str(single["pretrained"])]
    beside = subprocess.run(
        table_script + ["--beside", str(single["scratch"]), "--names", "pretrained", "scratch"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert beside == tables
    unnamed = subprocess.run(table_script + ["--beside", str(single["scratch"])], capture_output=True, text=True)
    assert unnamed.returncode != 0 and "--names" in unnamed.stderr


def test_metadata_and_network_io_verify():
    schema = SHARED / "schema" / "meta_schema_20240725.json"
    if not schema.is_file():
        pytest.skip(f"bundle metadata schema not found at {schema}")
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "verify_metadata", "--meta_file", "configs/metadata.json",
         "--filepath", str(schema)],
        cwd=BUNDLE, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0 and "verified with no error" in result.stdout + result.stderr, result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "verify_net_in_out", "--net_id", "network_def", "--meta_file",
         "configs/metadata.json", "--config_file", "configs/inference.yaml", "--preset", "tiny",
         "--num_frames", "50", "--crop_size", "128"],
        cwd=BUNDLE, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]


def test_finetuning_from_scratch_when_asked(trained, tiny_cohort, tmp_path):
    # a pretrained checkpoint at the default path whose encoder is all 0.5: loading it would be unmistakable
    out = tmp_path / "outputs"
    (out / "pretrain" / "models").mkdir(parents=True)
    state = torch.load(trained / "pretrain" / "models" / "model.pt", weights_only=True)
    torch.save({k: torch.full_like(v, 0.5) if k.startswith("encoder.") else v for k, v in state.items()},
               out / "pretrain" / "models" / "model.pt")  # fmt: skip
    result = bundle_run(
        TRAIN + ["configs/finetune_segmentation.yaml"],
        dataset_dir=tiny_cohort,
        output_dir=out,
        max_epochs=1,
        task="finetune_segmentation_scratch",
        pretrained_ckpt="''",
    )
    assert "training from scratch" in result.stdout + result.stderr
    scratch = torch.load(out / "finetune_segmentation_scratch" / "models" / "model.pt", weights_only=True)
    weight = scratch["encoder.patch_embed.weight"]
    assert weight.std() > 1e-3 and (weight - 0.5).abs().min() > 0.1, "the encoder starts from its own initialisation"


def test_finetuning_on_the_first_subjects_only(trained, tiny_cohort):
    """A label-efficiency run: the encoder pretrained on every subject, segmentation fine-tuned on one."""
    bundle_run(
        TRAIN + ["configs/finetune_segmentation.yaml"],
        dataset_dir=tiny_cohort,
        output_dir=trained,
        max_epochs=1,
        task="finetune_segmentation_one_subject",
        max_train_subjects=1,
    )
    models = trained / "finetune_segmentation_one_subject" / "models"
    checkpoint = torch.load(models / "checkpoint_epoch=1.pt", weights_only=True)
    assert checkpoint["trainer"]["epoch_length"] == 1, "one training subject, batch size 1: one step per epoch"


def test_a_named_datalist_is_the_fold_of_training_validation_and_evaluation(trained, tiny_cohort, tmp_path):
    """Cross-validation on a small labelled cohort: ``--datalist`` names one fold's split file for every workflow."""
    from scripts.subject import read_phenotypes

    names = sorted(entry["subject"] for entry in json.loads((tiny_cohort / "datalist.json").read_text())["training"])
    fold = tmp_path / "fold0.json"
    fold.write_text(json.dumps({"training": [{"subject": names[0]}], "validation": [{"subject": names[1]}],
                                "test": [{"subject": names[2]}, {"subject": names[3]}]}))  # fmt: skip
    out = tmp_path / "outputs"
    common = {"dataset_dir": tiny_cohort, "datalist": fold, "max_epochs": 1}
    pretrained = trained / "pretrain" / "models" / "model.pt"
    bundle_run(TRAIN + ["configs/finetune_segmentation.yaml"], output_dir=out, pretrained_ckpt=pretrained, **common)
    checkpoint = torch.load(out / "finetune_segmentation" / "models" / "checkpoint_epoch=1.pt", weights_only=True)
    assert checkpoint["trainer"]["epoch_length"] == 1, "the fold's one training subject, not the cohort's four"
    common.pop("max_epochs")
    model = out / "finetune_segmentation" / "models" / "model.pt"
    # the model named on the command line, as a report of one fold's model would be
    named = {"evaluator#checkpoints": f"{{'fold0': '{model}'}}"}
    bundle_run(["configs/inference.yaml", "configs/evaluate.yaml"], output_dir=tmp_path / "eval", **named, **common)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert (
        metrics["subjects"] == names[2:4] and metrics["datalist"] == str(fold) and list(metrics["models"]) == ["fold0"]
    )
    # the mean guess is that of the fold's training subjects: here the one subject's own values
    truth = read_phenotypes(tiny_cohort / "phenotypes.csv")
    index = PHENOTYPE_NAMES.index("LVEDV")
    guess = np.mean([abs(truth[names[0]][index] - truth[name][index]) for name in names[2:4]])
    lvedv = metrics["models"]["fold0"]["phenotypes"]["LVEDV"]
    assert lvedv["mean_guess_mae"] == pytest.approx(float(guess), rel=1e-5)
    # a held-out cohort alone (no training split, no --reference_dataset_dir): the MAE without a mean guess, and a
    # warning that says how to get one
    held_out = tmp_path / "held_out.json"
    held_out.write_text(json.dumps({"training": [], "validation": [], "test": [{"subject": names[2]}]}))
    result = bundle_run(["configs/inference.yaml", "configs/evaluate.yaml"], output_dir=tmp_path / "eval_held_out",
                        ckpt=model, dataset_dir=tiny_cohort, datalist=held_out)  # fmt: skip
    log = result.stdout + result.stderr
    assert f"{tiny_cohort}: no subject in its training split ({held_out})" in log and "--reference_dataset_dir" in log
    metrics = json.loads((tmp_path / "eval_held_out" / "metrics.json").read_text())
    lvedv = metrics["models"]["pretrained"]["phenotypes"]["LVEDV"]
    assert lvedv["mae"] >= 0 and lvedv["mean_guess_mae"] is None and lvedv["ratio_to_mean_guess"] is None
    assert "(training split, 0 subjects)" in metrics["mean_guess_from"]
    # a subject both in the training split and evaluated: its mean guess is its own value, and the log and the
    # report say so
    in_sample = tmp_path / "in_sample.json"
    in_sample.write_text(json.dumps({"training": [{"subject": names[2]}], "test": [{"subject": names[2]}]}))
    result = bundle_run(["configs/inference.yaml", "configs/evaluate.yaml"], output_dir=tmp_path / "eval_in_sample",
                        ckpt=model, dataset_dir=tiny_cohort, datalist=in_sample)  # fmt: skip
    assert "1 of the 1 evaluated subjects are also in the training split" in result.stdout + result.stderr
    metrics = json.loads((tmp_path / "eval_in_sample" / "metrics.json").read_text())
    assert metrics["mean_guess_from"].endswith("(training split, 1 subjects, 1 of them evaluated here)")
    assert metrics["models"]["pretrained"]["phenotypes"]["LVEDV"]["mean_guess_mae"] == 0
    with pytest.raises(AssertionError, match="fold1.json does not exist"):
        bundle_run(["configs/inference.yaml", "configs/evaluate.yaml"], output_dir=tmp_path / "eval1", ckpt=model,
                   dataset_dir=tiny_cohort, datalist=tmp_path / "fold1.json")  # fmt: skip


def test_evaluate_reports_the_good_subjects_and_exits_1_naming_a_failed_one(trained, tiny_cohort, tmp_path):
    """A test split with one broken subject: the report covers the good one and the status says a subject failed."""
    dataset = tmp_path / "mixed"
    good = sorted(entry["subject"] for entry in json.loads((tiny_cohort / "datalist.json").read_text())["test"])[0]
    shutil.copytree(tiny_cohort / good, dataset / good)
    (dataset / "broken_study").mkdir()
    (dataset / "broken_study" / "sa.nii.gz").write_bytes(b"not a nifti")
    (dataset / "datalist.json").write_text(
        json.dumps({"training": [], "test": [{"subject": good}, {"subject": "broken_study"}]})
    )
    model = trained / "finetune_phenotypes" / "models" / "model.pt"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file",
               "['configs/inference.yaml','configs/evaluate.yaml']", "--preset", "tiny", "--dataset_dir", str(dataset),
               "--output_dir", str(tmp_path / "eval"), "--ckpt", str(model)]  # fmt: skip
    result = subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "1 subject(s) failed (broken_study)" in result.stderr
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["subjects"] == [good] and [failure["subject"] for failure in metrics["failed"]] == ["broken_study"]
    assert "sa.nii.gz" in metrics["failed"][0]["error"]


def test_inference_never_writes_into_its_input_and_a_rerun_leaves_no_stale_plane(trained, tiny_cohort, tmp_path):
    subject = tmp_path / "data" / "subject_a"
    shutil.copytree(tiny_cohort / "subject_0000", subject)
    model = trained / "finetune_phenotypes" / "models" / "model.pt"
    label_before = (subject / "seg_sa.nii.gz").read_bytes()
    for output_dir in (subject.parent, subject / "predictions"):  # holding the input, inside it
        with pytest.raises(AssertionError, match="the segmentations would be written into the input's folders"):
            bundle_run(["configs/inference.yaml"], dataset_dir=subject, output_dir=output_dir, ckpt=model)
    assert (subject / "seg_sa.nii.gz").read_bytes() == label_before and not (subject / "predictions").exists()
    out = tmp_path / "predictions"
    bundle_run(["configs/inference.yaml"], dataset_dir=subject, output_dir=out, ckpt=model)
    assert (out / "subject_a" / "seg_la_2ch.nii.gz").is_file()
    (subject / "la_2ch.nii.gz").unlink()  # the same subject again without its 2-chamber view
    result = bundle_run(["configs/inference.yaml"], dataset_dir=subject, output_dir=out, ckpt=model)
    assert not (out / "subject_a" / "seg_la_2ch.nii.gz").exists() and (out / "subject_a" / "seg_sa.nii.gz").is_file()
    assert "removed seg_la_2ch.nii.gz of an earlier run" in result.stdout + result.stderr
    # a datalist entry naming a folder outside the dataset is refused
    (tmp_path / "data" / "datalist.json").write_text(
        json.dumps({"training": [], "test": [{"subject": "../predictions/subject_a"}]})
    )
    with pytest.raises(AssertionError, match="lies outside the dataset folder"):
        bundle_run(["configs/inference.yaml", "configs/evaluate.yaml"], dataset_dir=tmp_path / "data",
                   output_dir=tmp_path / "eval", ckpt=model)  # fmt: skip


def test_inference_uses_the_shipped_weights_by_default(tiny_cohort, tmp_path):
    shipped = BUNDLE / "models" / "model.pt"
    if not shipped.is_file():
        pytest.skip(f"no shipped weights at {shipped}")
    subject = tiny_cohort / "subject_0000"
    out = tmp_path / "predictions"
    # the shipped preset and canonical grid (small: 50 frames, 128 px at 1.8 mm), no --ckpt
    bundle_run(["configs/inference.yaml"], dataset_dir=subject, output_dir=out, preset="small")
    written = nib.load(out / subject.name / "seg_sa.nii.gz")
    assert written.shape == nib.load(subject / "sa.nii.gz").shape
    assert (np.asarray(written.dataobj) > 0).any(), "the trained model finds heart structures in a synthetic subject"
    # weights saved before the measure head existed load with it unfit; the phenotypes then come from the embedding
    has_measure_head = any(k.startswith("measure_head.") for k in torch.load(shipped, weights_only=True))
    method = json.loads((out / subject.name / "phenotypes.json").read_text())["phenotypes_method"]
    assert method == ("measure_head" if has_measure_head else "phenotype_head")
    # at another preset the shipped weights do not fit: one line that names the file, a tensor and what to check
    with pytest.raises(AssertionError) as error:
        bundle_run(["configs/inference.yaml"], dataset_dir=subject, output_dir=tmp_path / "tiny", preset="tiny")
    assert "models/model.pt holds a network of another size" in str(error.value)
    assert "check --preset matches the checkpoint" in str(error.value) and "size mismatch" not in str(error.value)


def test_shipped_float16_file_reports_what_its_heads_were_fit_for(trained, tiny_cohort, tmp_path):
    """The recipe rounds the segmentation model to the shipped precision before the heads are fit on it, and the
    installed file keeps both heads in float32: inference with the installed file then reports exactly what the
    fitted model does (the embedding head's input statistics, rounded to float16, used to move its values)."""
    demo = load_tool("demo")
    rounded = demo.shipped_precision(
        trained / "finetune_segmentation" / "models" / "model.pt", tmp_path / "segmentation_float16.pt"
    )
    common = {"dataset_dir": tiny_cohort, "output_dir": tmp_path, "max_epochs": 1, "measure_head_subjects": 2}
    bundle_run(TRAIN + ["configs/finetune_phenotypes.yaml"], pretrained_ckpt=rounded, **common)
    fitted = tmp_path / "finetune_phenotypes" / "models" / "model.pt"
    installed = tmp_path / "installed.pt"
    demo.install_weights(fitted, installed)
    state = torch.load(installed, weights_only=True)
    assert state["encoder.patch_embed.weight"].dtype == torch.float16
    heads = [
        v for k, v in state.items() if k.startswith(("phenotype_head.", "measure_head.")) and v.is_floating_point()
    ]
    assert heads and {v.dtype for v in heads} == {torch.float32}
    reported = {}
    for name, checkpoint in (("fitted", fitted), ("installed", installed)):
        out = tmp_path / name
        bundle_run(
            ["configs/inference.yaml"], dataset_dir=tiny_cohort / "subject_0005", output_dir=out, ckpt=checkpoint
        )
        reported[name] = json.loads((out / "subject_0005" / "phenotypes.json").read_text())
    for key in ("phenotypes", "phenotypes_from_embedding"):
        assert reported["installed"][key] == reported["fitted"][key], key


#: the tiny preset's canonical grid, the input shape of the exports
TINY_INPUT_SHAPE = [1, 1, 9, 10, 32, 32]


def export_tiny_network(exporter: str, checkpoint: Path, exported: Path, *options: str) -> torch.nn.Module:
    """Export the tiny network of ``checkpoint`` with MONAI's ``exporter`` (``ckpt_export``, ``onnx_export``) to
    ``exported`` by tracing; returns the same weights as an eager network in eval mode."""
    command = [
        sys.executable, "-m", "monai.bundle", exporter, "network_def", "--filepath", str(exported),
        "--ckpt_file", str(checkpoint), "--meta_file", "configs/metadata.json", "--config_file",
        "configs/inference.yaml", "--preset", "tiny", "--use_trace", "True", "--input_shape", repr(TINY_INPUT_SHAPE),
        *options,
    ]  # fmt: skip
    result = subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    eager = build_network("heart", "tiny", num_frames=10, image_size=32, **load_tool("benchmark").inference_refiner())
    eager.load_state_dict(torch.load(checkpoint, weights_only=True))
    return eager.eval()


def test_ckpt_export_writes_a_torchscript_segmenter(trained, tmp_path):
    """MONAI's ``ckpt_export`` (what Model Zoo and Deploy use) traces the network; the TorchScript model segments
    like the eager one, with every plane present and with planes missing."""
    exported = tmp_path / "model.ts"
    eager = export_tiny_network("ckpt_export", trained / "finetune_phenotypes" / "models" / "model.pt", exported)
    scripted = torch.jit.load(str(exported))
    image = torch.rand(TINY_INPUT_SHAPE)
    missing = image.clone()
    missing[:, :, [6, 8]] = 0  # 2ch and 4ch absent: their tokens are dropped inside the traced graph too
    with torch.no_grad():
        for case in (image, missing):
            torch.testing.assert_close(scripted(case), eager(case), atol=1e-4, rtol=1e-4)


def test_onnx_export_runs_in_onnx_runtime_like_the_eager_network(trained, tmp_path):
    """MONAI's ``onnx_export`` with the TorchScript-based exporter: ONNX Runtime segments a real study (SA only, the
    long-axis planes zero as the data layer leaves missing planes) and an input with every plane like the eager network.
    """
    import onnxruntime

    from scripts.canonical import LoadCineSubjectd

    exported = tmp_path / "model.onnx"
    checkpoint = trained / "finetune_phenotypes" / "models" / "model.pt"
    eager = export_tiny_network("onnx_export", checkpoint, exported, "--converter_kwargs", "{'dynamo': False}")
    session = onnxruntime.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    (input_name,) = [i.name for i in session.get_inputs()]
    load = LoadCineSubjectd(keys="subject", num_frames=10, crop_size=32, spacing_mm=7.2)
    real = load({"subject": str(REPO / "examples" / "sunnybrook" / "SCD0000101")})
    assert real["plane_mask"].tolist() == [True] * 6 + [False] * 3
    for image in (real["image"][None], torch.rand(TINY_INPUT_SHAPE)):
        with torch.no_grad():
            expected = eager(image).numpy()
        (logits,) = session.run(None, {input_name: image.numpy()})
        np.testing.assert_allclose(logits, expected, atol=1e-3, rtol=0)
        assert (logits.argmax(1) == expected.argmax(1)).mean() > 0.999


def test_multi_gpu_overlay_with_fewer_subjects_than_processes_runs_and_rank_zero_alone_writes(tiny_cohort, tmp_path):
    """The DistributedDataParallel overlay under torchrun (gloo CPU processes here, NCCL on GPUs) with 1 training and
    1 validation subject for 2 processes: both train on the one subject and both validate it."""
    out = tmp_path / "ddp"
    configs = TRAIN + ["configs/finetune_segmentation.yaml", "configs/multi_gpu_train.yaml"]
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "monai.bundle",
        "run", "--config_file", repr(configs), "--preset", "tiny", "--dataset_dir", str(tiny_cohort),
        "--output_dir", str(out), "--max_epochs", "1", "--pretrained_ckpt", "''", "--max_train_subjects", "1",
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=BUNDLE, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    # the ranks' log lines (stdout) say how far each got when one of them fails
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert len(json.loads((tiny_cohort / "datalist.json").read_text())["validation"]) == 1
    models = out / "finetune_segmentation" / "models"
    checkpoint = torch.load(models / "checkpoint_epoch=1.pt", weights_only=True)
    assert checkpoint["trainer"]["epoch_length"] == 1, "each process trains on the one subject"
    assert not any(key.startswith("module.") for key in checkpoint["network"]), "saved without the DDP wrapper"
    assert 0 <= checkpoint["best_model"]["best_metric"] <= 1, "a Dice over the validation subject"
    # rank 0's files alone: one TensorBoard events file (rank 0's process), the two checkpoints
    events = list((out / "finetune_segmentation" / "logs").iterdir())
    assert len(events) == 1 and events[0].name.startswith("events.out.tfevents")
    files = sorted(str(path.relative_to(out)) for path in out.rglob("*") if path.is_file())
    assert files == [str(events[0].relative_to(out))] + [
        "finetune_segmentation/models/checkpoint_epoch=1.pt", "finetune_segmentation/models/model.pt"
    ]  # fmt: skip
    assert not [path for path in (tiny_cohort / ".cache").iterdir() if ".partial." in path.name]
    assert result.stdout.count("Epoch[1] Metrics") == 1, "one process logs"


def test_a_misspelt_override_stops_the_workflow_at_start_with_the_key_and_its_nearest_names(tmp_path):
    """``--output_dri`` would otherwise be a new, unused key and the run would write to the default folder."""
    command = [
        sys.executable, "-m", "monai.bundle", "run", "--config_file",
        "['configs/inference.yaml','configs/evaluate.yaml']", "--preset", "tiny", "--dataset_dir", str(tmp_path),
        "--output_dri", str(tmp_path / "out"), "--centre_shift_px", "[]", "--evaluator#checkpoint", "{}",
        # known: a key of either config, a further keyword argument of a component, MONAI's own arguments
        "--scratch_ckpt", "''", "--load_subject#centre_shift_px", "[0, 0]", "--meta_file", "configs/metadata.json",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("unknown override")]
    assert lines == [
        "unknown override --output_dri: 'output_dri' is not a key of configs/inference.yaml, configs/evaluate.yaml; "
        "did you mean --output_dir?",
        "unknown override --centre_shift_px: 'centre_shift_px' is not a key of configs/inference.yaml, "
        "configs/evaluate.yaml; did you mean --centre_shifts_px?",
        "unknown override --evaluator#checkpoint: 'evaluator#checkpoint' is not a key of configs/inference.yaml, "
        "configs/evaluate.yaml; did you mean --evaluator#checkpoints?",
    ]
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()
    # a value outside an option's choices stops it the same way, instead of a traceback from the first component
    command = [
        sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.yaml", "--preset", "huge",
        "--precision=fp61", "--label_map", "project", "--dataset_dir", str(tmp_path), "--output_dir", str(tmp_path),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-2:] == [
        "--preset 'huge' is not one of paper, small, tiny",
        "--precision 'fp61' is not one of auto, fp32",
    ]


def test_a_stopped_folder_inference_is_finished_by_skip_existing_keeping_the_complete_subjects(tiny_cohort, tmp_path):
    dataset = tmp_path / "dataset"
    for name in ("subject_0000", "subject_0001"):
        shutil.copytree(tiny_cohort / name, dataset / name)
    model = untrained_tiny_model(tmp_path / "model.pt")
    out = tmp_path / "predictions"
    common = {"dataset_dir": dataset, "output_dir": out, "ckpt": model, "centre_shifts_px": "[]"}
    bundle_run(["configs/inference.yaml"], **common)
    table_names = ("phenotypes.csv", "phenotypes_from_embedding.csv", "phenotypes_from_segmentation.csv")
    tables = {name: (out / name).read_text() for name in table_names}
    kept, redone = out / "subject_0000", out / "subject_0001"
    assert (kept / "cohort_rows.json").is_file() and (redone / "cohort_rows.json").is_file()

    # what a run killed while writing subject_0001's segmentation leaves: no rows file (it is written last), a hidden
    # unfinished file there, and one of a cohort table
    (redone / "cohort_rows.json").unlink()
    (redone / "seg_sa.nii.gz").unlink()
    (redone / ".seg_sa.k2j3h4g5.partial.nii.gz").write_bytes(b"")
    (out / ".phenotypes.abcd1234.partial.csv").write_bytes(b"")
    kept_files = {path.name: path.stat().st_ino for path in kept.iterdir()}
    result = bundle_run(["configs/inference.yaml"], skip_existing="true", **common)
    assert "subject_0000: complete from an earlier run, kept" in result.stdout + result.stderr
    assert {path.name: path.stat().st_ino for path in kept.iterdir()} == kept_files, "left exactly as it was"
    assert (redone / "seg_sa.nii.gz").is_file() and (redone / "cohort_rows.json").is_file()
    assert not [path for path in out.rglob(".*") if ".partial." in path.name], "unfinished files removed"
    assert {name: (out / name).read_text() for name in table_names} == tables, "both subjects' rows, as first written"
    assert json.loads((out / "summary.json").read_text())["done"] == ["subject_0000", "subject_0001"]


def test_a_killed_folder_inference_leaves_cohort_tables_of_exactly_the_subjects_it_finished(tiny_cohort, tmp_path):
    dataset = tmp_path / "dataset"
    names = ["subject_0000", "subject_0001", "subject_0002", "subject_0003"]
    for name in names:
        shutil.copytree(tiny_cohort / name, dataset / name)
    for path in (dataset / names[0]).glob("*.nii.gz"):
        path.write_bytes(b"not a nifti file")  # the first subject fails: errors.csv must be on disk too
    model = untrained_tiny_model(tmp_path / "model.pt")
    out = tmp_path / "predictions"
    command = [
        sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.yaml", "--preset", "tiny",
        "--dataset_dir", str(dataset), "--output_dir", str(out), "--ckpt", str(model), "--centre_shifts_px", "[]",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=BUNDLE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = []
    try:
        for line in process.stdout:
            log.append(line)
            if f"[2/4] {names[1]}: done" in line:
                process.kill()  # SIGKILL: no handler, no final write runs
                break
    finally:
        process.kill()
        process.wait(timeout=60)
    assert any(f"[2/4] {names[1]}: done" in line for line in log), "".join(log[-40:])
    assert re.search(r"\[2/4\] subject_0001: done; \d+ s per subject, about \d+ min left", "".join(log))
    finished = [name for name in names if (out / name / "cohort_rows.json").is_file()]
    assert finished[:1] == [names[1]] and len(finished) < 3, "killed after the second subject, long before the last"
    table_names = ("phenotypes.csv", "phenotypes_from_embedding.csv", "phenotypes_from_segmentation.csv")
    for table in table_names:
        rows = list(csv.DictReader((out / table).open()))
        assert [row["subject"] for row in rows] == finished, table
        assert rows[0]["LVEDV"] != "", "whole rows, values included"
    assert [row["subject"] for row in csv.DictReader((out / "errors.csv").open())] == [names[0]]
    assert not (out / "summary.json").exists(), "the run did not get to its end"

    # the rerun keeps the finished subjects and writes each subject's row once, in the subjects' order
    shutil.copytree(tiny_cohort / names[0], dataset / names[0], dirs_exist_ok=True)
    result = subprocess.run(command + ["--skip_existing", "true"], cwd=BUNDLE, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for table in table_names:
        assert [row["subject"] for row in csv.DictReader((out / table).open())] == names, table
    assert not (out / "errors.csv").exists(), "the earlier run's failure was redone"


def test_subjects_written_in_background_are_the_subjects_written_one_after_the_other(tiny_cohort, tmp_path):
    """Folder inference writes a subject while it segments the next one: the folders, the cohort tables and the
    failures are those of the one-after-the-other run, in the subjects' order, and a subject whose folder cannot be
    written fails alone (its report's path is a folder here) while the batch goes on and exits 1."""
    dataset = tmp_path / "dataset"
    names = ["subject_0000", "subject_0001", "subject_0002"]
    for name in names:
        shutil.copytree(tiny_cohort / name, dataset / name)
    model = untrained_tiny_model(tmp_path / "model.pt")
    outputs = {}
    for background in ("true", "false"):
        out = tmp_path / f"predictions_{background}"
        (out / names[1] / "report.png").mkdir(parents=True)
        command = [
            sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.yaml", "--preset",
            "tiny", "--dataset_dir", str(dataset), "--output_dir", str(out), "--ckpt", str(model),
            "--centre_shifts_px", "[]", "--write_in_background", background,
        ]  # fmt: skip
        result = subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True)
        assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
        assert f"1 subject(s) failed ({names[1]})" in result.stderr
        summary = json.loads((out / "summary.json").read_text())
        assert summary["done"] == [names[0], names[2]]
        assert "report.png" in summary["failed"][0]["error"]
        assert not (out / names[1] / "cohort_rows.json").exists(), "a subject not fully written is not complete"
        outputs[background] = out
    for name in (names[0], names[2]):
        for path in sorted((outputs["false"] / name).glob("seg_*.nii.gz")):
            written = np.asarray(nib.load(str(outputs["true"] / name / path.name)).dataobj)
            np.testing.assert_array_equal(written, np.asarray(nib.load(str(path)).dataobj))
    for table in ("phenotypes.csv", "phenotypes_from_segmentation.csv"):
        assert (outputs["true"] / table).read_text() == (outputs["false"] / table).read_text(), table
    for out in outputs.values():
        assert [row["subject"] for row in csv.DictReader((out / "errors.csv").open())] == [names[1]]
        assert not [path for path in out.rglob(".*") if ".partial." in path.name], "no unfinished file left"


def test_a_cohort_table_grown_row_by_row_is_the_table_of_all_its_rows(tmp_path):
    path = tmp_path / "phenotypes.csv"
    table = CohortTable(path, phenotype_columns)
    table.start()
    assert path.read_bytes() == csv_text([], phenotype_columns([])).encode()
    values = {name: 1.5 for name in PHENOTYPE_NAMES}
    rows = [
        {"subject": "a", SOURCE_COLUMN: "measure_head", **values, "LVEF": float("nan")},
        {"subject": "b", SOURCE_COLUMN: "measure_head", **values},
        # a subject converted from DICOM after NIfTI ones brings the identifier columns: the table is rewritten
        {"subject": "c", "patient_id": "P1", "study_instance_uid": "1.2", SOURCE_COLUMN: "measure_head", **values},
        {"subject": "d", SOURCE_COLUMN: "phenotype_head", **values},
    ]
    for count, row in enumerate(rows, start=1):
        table.append(row)
        assert path.read_bytes() == csv_text(rows[:count], phenotype_columns(rows[:count])).encode()
    header = path.read_text().splitlines()[0].split(",")
    assert header[:4] == ["subject", "patient_id", "study_instance_uid", SOURCE_COLUMN]
    errors = CohortTable(tmp_path / "errors.csv", lambda rows: list(ERROR_COLUMNS), keep_empty=False)
    (tmp_path / "errors.csv").write_text("subject,error\r\nold,an earlier run's\r\n")
    errors.start()
    assert not (tmp_path / "errors.csv").exists(), "no failure yet, no errors.csv"


def test_head_fitting_logs_the_subjects_done_and_the_time_left(trained):
    log = (trained / "finetune_phenotypes.log").read_text()
    eta = r"\d+ s per subject, about \d+ min left"
    assert re.search(rf"\[4/4\] phenotype head: representations of the training subjects; {eta}", log), log[-3000:]
    assert re.search(rf"\[3/3\] measure head: segmented the training subjects; {eta}", log), log[-3000:]
