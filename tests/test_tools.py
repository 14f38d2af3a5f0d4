"""Command-line tools run as files: canonical 4-D NIfTI export, the planes picture, the representation probe and the
cross-validation split files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from conftest import BUNDLE, REPO, SHARED, load_tool

from scripts.canonical import LoadCineSubjectd
from scripts.canonical_nifti import read_canonical_nifti
from scripts.presets import build_network
from scripts.subject import load_datalist

SUNNYBROOK = SHARED / "data" / "sunnybrook"


def test_export_canonical_writes_one_4d_nifti_per_subject(tiny_cohort, tmp_path):
    subject = tiny_cohort / "subject_0000"
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "sa.nii.gz").write_bytes(b"truncated")
    out = tmp_path / "canonical"
    command = [sys.executable, "-m", "tools.export_canonical", str(subject), "--out", str(out)]
    command += ["--num-frames", "10", "--crop-size", "32", "--spacing-mm", "7.2"]
    subprocess.run(command, check=True, capture_output=True, text=True)
    image, plane_mask = read_canonical_nifti(out / "subject_0000.nii.gz")
    label, _ = read_canonical_nifti(out / "subject_0000_label.nii.gz")
    sample = LoadCineSubjectd(num_frames=10, crop_size=32, spacing_mm=7.2)({"subject": str(subject)})
    np.testing.assert_allclose(image, sample["image"].numpy(), atol=1e-6)
    np.testing.assert_array_equal(label, sample["label"].numpy())
    np.testing.assert_array_equal(plane_mask, sample["plane_mask"].numpy())
    # a bad subject is named, skipped, and turns the exit code to 1
    result = subprocess.run(command[:3] + [str(tmp_path / "bad")] + command[4:], capture_output=True, text=True)
    assert result.returncode == 1 and "bad" in result.stderr and "skipped" in result.stderr


def test_plot_planes_writes_a_picture(tiny_cohort, tmp_path):
    out = tmp_path / "planes.png"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.plot_planes",
            str(tiny_cohort / "subject_0000"),
            str(tiny_cohort / "subject_0000"),
            "--frames",
            "0",
            "5",
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    one_frame_per_row = [sys.executable, "-m", "tools.plot_planes", str(tiny_cohort / "subject_0000"), "--frames", "0"]
    bad = one_frame_per_row + ["1", "--out", str(tmp_path / "bad.png")]
    result = subprocess.run(bad, capture_output=True, text=True)
    assert result.returncode == 2 and "2 frames for 1 rows" in result.stderr and not (tmp_path / "bad.png").exists()


def test_probe_pool_time_averages_the_tokens_of_each_temporal_index():
    probe = load_tool("probe_representation")
    tokens = torch.tensor([[1.0, 2.0], [3.0, 4.0], [10.0, 20.0]])
    pooled = probe.pool_time(tokens, torch.tensor([0, 0, 2]), num_times=3)
    np.testing.assert_allclose(pooled.numpy(), [2.0, 3.0, 0.0, 0.0, 10.0, 20.0])


def test_probe_representation_reads_the_checkpoint_and_skips_a_bad_subject(tiny_cohort, tmp_path):
    dataset = tmp_path / "dataset"
    shutil.copytree(tiny_cohort, dataset)
    (dataset / "datalist.json").unlink()  # every subject is probed
    (dataset / "zz_bad").mkdir()
    (dataset / "zz_bad" / "sa.nii.gz").write_bytes(b"truncated")
    torch.manual_seed(0)
    torch.save(build_network("heart", "tiny", num_frames=10, image_size=32).state_dict(), tmp_path / "seed0.pt")
    torch.manual_seed(1)
    torch.save(
        {"network": build_network("mae", "tiny", num_frames=10, image_size=32).state_dict()}, tmp_path / "mae.pt"
    )

    def probe(ckpt: str, name: str) -> tuple[subprocess.CompletedProcess, dict]:
        command = [sys.executable, "-m", "tools.probe_representation", str(dataset), "--ckpt", ckpt]
        command += ["--preset", "tiny", "--folds", "2", "--test-dataset-dir", str(tiny_cohort), "--out"]
        result = subprocess.run(command + [str(tmp_path / name)], capture_output=True, text=True)
        return result, json.loads((tmp_path / name).read_text())

    random, random_report = probe("random", "random.json")
    assert random.returncode == 1 and "zz_bad" in random.stderr and "skipped" in random.stderr
    assert random_report["subjects"] == 6 and random_report["test_subjects"] == 1
    assert {name: p["width"] for name, p in random_report["poolings"].items()} == {
        "mean": 32,
        "time": 64,
        "mean_std": 64,
    }
    for pooling in random_report["poolings"].values():
        assert all(np.isfinite(pooling[score]["LVEDV"]) for score in ("cross_validation", "test"))
    assert "| mean | 32 | 2-fold CV |" in random.stdout
    # the random baseline is the network initialised with --seed 0: the same weights from a file give the same probe,
    # an MAE checkpoint's encoder (other weights) another one
    _, same_report = probe(str(tmp_path / "seed0.pt"), "same.json")
    _, mae_report = probe(str(tmp_path / "mae.pt"), "mae.json")
    assert same_report["poolings"] == random_report["poolings"]
    assert mae_report["poolings"]["mean"]["test"] != random_report["poolings"]["mean"]["test"]


def test_make_folds_writes_disjoint_splits_that_test_every_subject_once(tiny_cohort, tmp_path):
    tool = [sys.executable, "-m", "tools.make_folds", str(tiny_cohort)]
    subprocess.run(tool + ["--folds", "3", "--out", str(tmp_path / "folds")], check=True, capture_output=True)
    tested = []
    for k in range(3):
        fold = tmp_path / "folds" / f"fold{k}.json"
        splits = {split: {item["id"] for item in load_datalist(tiny_cohort, split, fold)} for split in
                  ("training", "validation", "test")}  # fmt: skip
        assert len(splits["test"]) == 2 and len(splits["validation"]) == 1 and len(splits["training"]) == 3
        assert not (splits["test"] & splits["training"]) and not (splits["test"] & splits["validation"])
        assert not (splits["training"] & splits["validation"])
        tested += splits["test"]
    assert sorted(tested) == sorted(p.name for p in tiny_cohort.iterdir() if p.name.startswith("subject_"))
    # leave one out, validating on the training subjects (too few to spare one); the default folder is DATASET/folds
    dataset = tmp_path / "dataset"
    shutil.copytree(tiny_cohort, dataset, ignore=shutil.ignore_patterns(".cache"))
    subprocess.run(tool[:3] + [str(dataset), "--validation", "0"], check=True, capture_output=True)
    fold = json.loads((dataset / "folds" / "fold0.json").read_text())
    assert len(fold["test"]) == 1 and fold["validation"] == fold["training"] and len(fold["training"]) == 5
    # more folds than subjects, or none left to train on: a clear error and exit code 1
    for arguments in (["--folds", "7"], ["--folds", "2", "--validation", "3"]):
        result = subprocess.run(tool + arguments + ["--out", str(tmp_path / "bad")], capture_output=True, text=True)
        assert result.returncode == 1 and str(tiny_cohort) in result.stderr and not (tmp_path / "bad").exists()


def test_demo_runs_both_arms_or_the_pretrained_alone_and_one_pass_only_in_the_short_run(tmp_path, monkeypatch):
    """The training stages the demo would run (its bundle commands recorded, not run; the first stage, the shipped
    weights, is tested through the real tool below): both arms by default, the pretrained arm alone with
    --no-scratch, none with --skip-training; the epochs of each recipe in bundle/configs/recipe.yaml; the short run's
    measure-head fit, inference and evaluation with one pass (``--centre_shifts_px []``), the full recipe's with the
    config's test-time shifts."""
    demo = load_tool("demo")
    recipes = yaml.safe_load((BUNDLE / "configs" / "recipe.yaml").read_text())

    def stages(name: str, *flags: str) -> tuple[list[str], list, dict, dict]:
        """The tasks of the demo's training commands, the scratch checkpoint it evaluates, the shifts override
        of each stage (None: none given) and the epochs of each training."""
        tasks, evaluated, shifts, epochs = [], [], {}, {}

        def record(commands, logs):
            for command in commands:
                task = command[command.index("--task") + 1] if "--task" in command else None
                if "--max_epochs" in command:  # a training
                    tasks.append(task or "pretrain")
                    epochs[task or "pretrain"] = int(command[command.index("--max_epochs") + 1])
                stage = task or ("pretrain" if "--max_epochs" in command else "inference")
                override = command.index("--centre_shifts_px") + 1 if "--centre_shifts_px" in command else None
                shifts[stage] = None if override is None else command[override]

        def evaluate(ckpt, scratch_ckpt, *args, **overrides):
            evaluated.append(scratch_ckpt)
            shifts["evaluate"] = overrides.get("centre_shifts_px")
            return {"models": {"pretrained": {"dice": {"all": {"LVBP": 0.5}}}}}

        monkeypatch.setattr(demo, "score_shipped_weights", lambda *args, **kwargs: None)
        monkeypatch.setattr(demo, "synthesize", lambda *args, **kwargs: None)
        monkeypatch.setattr(demo, "shipped_precision", lambda checkpoint, destination: destination)
        monkeypatch.setattr(demo, "run_side_by_side", record)
        monkeypatch.setattr(demo, "evaluate", evaluate)
        monkeypatch.setattr(sys, "argv", ["demo.py", "--work-dir", str(tmp_path / name), *flags])
        demo.main()
        return tasks, evaluated, shifts, epochs

    def recipe_epochs(recipe: str) -> dict[str, int]:
        """The epochs of each training of ``recipe`` as recipe.yaml gives them, by task."""
        stages = ("pretrain", "finetune_segmentation", "finetune_phenotypes")
        return {stage: recipes[recipe][stage]["max_epochs"] for stage in stages}

    tasks, evaluated, shifts, epochs = stages("both")
    assert tasks == ["pretrain", "finetune_segmentation", "finetune_segmentation_scratch", "finetune_phenotypes",
                     "finetune_phenotypes_scratch"]  # fmt: skip
    assert evaluated[0] is not None
    one_pass = ("finetune_phenotypes", "finetune_phenotypes_scratch", "inference")
    assert all(shifts[stage] == "[]" for stage in one_pass) and shifts["evaluate"] == []
    assert recipe_epochs("demo").items() <= epochs.items()
    tasks, evaluated, _, _ = stages("alone", "--no-scratch")
    assert tasks == ["pretrain", "finetune_segmentation", "finetune_phenotypes"] and evaluated == [None]
    _, _, shifts, epochs = stages("full", "--full", "--no-scratch")
    assert all(value is None for value in shifts.values()) and "evaluate" in shifts
    assert epochs == recipe_epochs("full") != recipe_epochs("demo")
    tasks, evaluated, _, _ = stages("shipped_weights_only", "--skip-training")
    assert tasks == [] and evaluated == []


def test_demo_first_stage_scores_the_weights_on_synthetic_hearts_and_the_shipped_real_study(tiny_cohort, tmp_path):
    """The demo's first stage through the real tool (``--skip-training``) at the ``tiny`` preset, with an untrained
    tiny network in place of the shipped ``small`` weights, on the tiny cohort (put where the tool keeps the held-out
    cohort it synthesises) and on the Sunnybrook study in examples/: it writes every subject's segmentations, an
    evaluation report per dataset whose Dice it prints, and the picture of the contours; it trains nothing."""
    work = tmp_path / "demo"
    shutil.copytree(tiny_cohort, work / "shipped_weights" / "held_out", ignore=shutil.ignore_patterns(".cache"))
    weights = tmp_path / "tiny.pt"
    torch.save(build_network("heart", "tiny", num_planes=9, num_frames=10, image_size=32).state_dict(), weights)
    command = [sys.executable, "-m", "tools.demo", "--skip-training", "--work-dir", str(work), "--preset", "tiny",
               "--ckpt", str(weights)]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    stage = work / "shipped_weights"
    example = REPO / "examples" / "sunnybrook"
    for name, dataset in (("synthetic", tiny_cohort), ("sunnybrook", example)):
        for subject in [p for p in dataset.iterdir() if (p / "sa.nii.gz").is_file()]:
            written = nib.load(stage / "segmentations" / name / subject.name / "seg_sa.nii.gz")
            assert written.shape == nib.load(subject / "sa.nii.gz").shape
        assert (stage / "segmentations" / name / "phenotypes.csv").is_file()
        metrics = json.loads((stage / "evaluation" / name / "metrics.json").read_text())
        tested = json.loads((dataset / "datalist.json").read_text())["test"]
        assert metrics["subjects"] == [item["subject"] for item in tested]
        (model,) = metrics["models"].values()
        assert f"Dice as written: LVBP {model['dice_input_planes']['all']['LVBP']:.3f}" in result.stdout
    # the real study is contoured in the LV only: its other classes are not scored
    assert metrics["subjects"] == ["SCD0000101"] and model["dice_input_planes"]["all"]["RVBP"] is None
    assert (stage / "contours.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "segments the real Sunnybrook study poorly" in result.stdout
    assert not (work / "outputs").exists() and "Stage 2" not in result.stdout


@pytest.mark.skipif(not (SUNNYBROOK / "link.csv").is_file(), reason=f"no Sunnybrook studies at {SUNNYBROOK}")
def test_the_shipped_real_example_is_the_study_as_import_sunnybrook_writes_it(tmp_path):
    """examples/sunnybrook holds one study exactly as ``python -m tools.import_sunnybrook --study ID`` writes it
    (the same voxels, affine, sidecar, datalist and SOURCE.md with the licence and citation), less the conversion
    report, which names the folder it was made from."""
    example = REPO / "examples" / "sunnybrook"
    (study,) = [item["subject"] for item in json.loads((example / "datalist.json").read_text())["test"]]
    command = [sys.executable, "-m", "tools.import_sunnybrook", "--src", str(SUNNYBROOK), "--out", str(tmp_path),
               "--study", study]  # fmt: skip
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    assert sorted(p.name for p in (example / study).iterdir()) == ["sa.nii.gz", "seg_sa.nii.gz", "subject.json"]
    for name in ("sa.nii.gz", "seg_sa.nii.gz"):
        shipped, imported = nib.load(example / study / name), nib.load(tmp_path / study / name)
        assert shipped.get_data_dtype() == imported.get_data_dtype() and np.array_equal(shipped.affine, imported.affine)
        assert np.array_equal(np.asarray(shipped.dataobj), np.asarray(imported.dataobj))
    for name in (f"{study}/subject.json", "datalist.json", "SOURCE.md"):
        assert (example / name).read_text() == (tmp_path / name).read_text(), name
    source = (example / "SOURCE.md").read_text()
    assert "CC0" in source and "Radau P" in source and study in source.splitlines()[0]
    # an unknown study is one line and exit code 1
    unknown = subprocess.run(command[:-1] + ["SCD9999999"], cwd=REPO, capture_output=True, text=True)
    assert unknown.returncode == 1 and "SCD9999999 not in" in unknown.stderr


def test_time_inference_times_a_checkout_and_refuses_a_folder_that_is_not_one(tiny_cohort, tmp_path):
    """The timing tool segments a subject with the given checkout's code, config and shifts and prints one JSON line;
    it refuses a folder that is not a checkout, and weights of another preset."""
    tool = [sys.executable, "-m", "tools.time_inference"]
    subject = tiny_cohort / "subject_0000"
    weights = tmp_path / "tiny.pt"
    torch.save(build_network("heart", "tiny", num_planes=9, num_frames=10, image_size=32).state_dict(), weights)
    result = subprocess.run(tool + [str(subject), "--preset", "tiny", "--ckpt", str(weights), "--repeats", "2"],
                            check=True, capture_output=True, text=True)  # fmt: skip
    timing = json.loads(result.stdout.strip().splitlines()[-1])
    shifts = yaml.safe_load((REPO / "bundle" / "configs" / "inference.yaml").read_text())["centre_shifts_px"]
    assert timing["centre_shifts_px"] == shifts and timing["weights"] == str(weights)
    assert len(timing["seconds"]) == 2 and timing["seconds_median"] > 0 and timing["peak_rss_mb"] > 0
    shipped = subprocess.run(
        tool + [str(subject), "--preset", "tiny", "--repeats", "1"], capture_output=True, text=True
    )
    assert shipped.returncode != 0 and "check --preset matches the checkpoint" in shipped.stderr
    bad = subprocess.run(tool + [str(subject), "--repo", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 1 and str(tmp_path) in bad.stderr and "checkout" in bad.stderr


def test_real_scan_recipe_chooses_by_dice_at_the_contoured_phases_where_a_study_has_them():
    """An LV spilling into the unlabelled band around an end-systolic endocardium scores well as written and badly
    at ES (whole contoured slices): the choice reads the latter where the study has contoured phases."""
    tool = load_tool("train_real_scans")
    written = {"LVBP": 0.9, "LVMYO": 0.5}
    phases = {"dice_ed": {"LVBP": 0.9, "LVMYO": 0.5}, "dice_es": {"LVBP": 0.4, "LVMYO": None}}
    contoured = {"dice_as_written": written, "labelled_phases": phases}
    assert tool.contoured_real_dice([{"per_subject": [contoured]}]) == pytest.approx(0.6)
    as_written_only = {"dice_as_written": written, "labelled_phases": None}
    assert tool.contoured_real_dice([{"per_subject": [as_written_only]}]) == pytest.approx(0.7)


@pytest.mark.parametrize("real_studies_help, given_synthetic", [(True, False), (False, False), (True, True)])
def test_real_scan_recipe_ships_real_training_only_where_leave_one_out_shows_it_helps(
    real_studies_help, given_synthetic, tmp_path, monkeypatch
):
    """The trainings and evaluations ``tools.train_real_scans`` runs (bundle commands recorded, not run): the
    synthetic-only model from --start (or the one --synthetic-model names, untrained), refined on synthetic subjects
    alone and scored zero-shot, and one model per leave-one-out fold from it with a refiner trained on it, each fold
    evaluated refined on its own split file; the model on all real studies is trained, refined and given the heads
    only where the folds' held-out Dice beats the synthetic-only model's on the same studies; otherwise the refined
    synthetic-only model ships. With --in-plane-axes (given with
    --synthetic-model here) every training and evaluation runs on those axes; without it, on the configs' own."""
    tool = load_tool("train_real_scans")
    recipe = yaml.safe_load((BUNDLE / "configs" / "recipe.yaml").read_text())["real_scans"]
    folds = [f"folds/fold{k}.json" for k in range(3)]
    trainings, evaluations, axes_used = {}, [], []

    def run(command, log):
        arguments = dict(zip(command[4::2], command[5::2]))
        trainings[arguments["--task"]] = arguments

    def evaluate(ckpt, scratch_ckpt, output_dir, test_data, data, log, **overrides):
        evaluations.append((output_dir.name, ckpt, overrides.get("datalist")))
        axes_used.append(overrides.get("in_plane_axes"))
        fold = output_dir.name.startswith("fold")
        value = 0.7 if fold == real_studies_help else 0.6
        dice = {"all": {"LVBP": value, "LVMYO": value}}
        studies = 1 if fold else 3
        study = {"dice_input_planes": dice["all"], "labelled_phases": None}
        per_subject = [{"subject": f"s{k}", **study} for k in range(studies)]
        model = {"dice": dice, "dice_input_planes": dice, "labelled_phases": None, "per_subject": per_subject}
        return {"models": {"pretrained": model}}

    monkeypatch.setattr(tool, "run", run)
    monkeypatch.setattr(tool, "evaluate", evaluate)
    monkeypatch.setattr(tool, "synthesize", lambda *args, **kwargs: None)

    def import_real_studies(source, out, log):
        for k, fold in enumerate(folds):
            (out / fold).parent.mkdir(parents=True, exist_ok=True)
            training = [{"subject": f"s{j}"} for j in range(3) if j != k]
            (out / fold).write_text(json.dumps({"training": training, "validation": training, "test": []}))
        return folds

    monkeypatch.setattr(tool, "import_real_studies", import_real_studies)
    rounded = []
    monkeypatch.setattr(tool, "shipped_precision", lambda checkpoint, out: rounded.append((checkpoint, out)) or out)
    start = tmp_path / "start.pt"
    origin = ["--synthetic-model" if given_synthetic else "--start", str(start)]
    axes = "patient" if given_synthetic else None
    tool.main(origin + ["--work-dir", str(tmp_path / "work")] + (["--in-plane-axes", axes] if axes else []))
    assert {arguments.get("--in_plane_axes") for arguments in trainings.values()} == {axes}
    assert set(axes_used) == {axes}
    out = tmp_path / "work" / "outputs"
    synthetic = out / "synthetic" / "models" / f"checkpoint_epoch={recipe['synthetic']['max_epochs']}.pt"
    synthetic = start.resolve() if given_synthetic else synthetic
    real = out / "real" / "models" / f"checkpoint_epoch={recipe['real']['max_epochs']}.pt"
    real_refined = out / "real_refined" / "models" / "model.pt"
    synthetic_refined = out / "synthetic_refined" / "models" / "model.pt"
    refined = {"synthetic_refined"} | {f"real_fold{k}_refined" for k in range(3)}
    refined |= {"real_refined"} if real_studies_help else set()
    expected = {"real_fold0", "real_fold1", "real_fold2", "finetune_phenotypes"} | (
        set() if given_synthetic else {"synthetic"}
    )
    assert set(trainings) == expected | refined | ({"real"} if real_studies_help else set())
    if not given_synthetic:
        assert trainings["synthetic"]["--pretrained_ckpt"] == str(start.resolve())
        assert "real_scans.yaml" not in trainings["synthetic"]["--config_file"]
    for task in set(trainings) - {"synthetic", "finetune_phenotypes"} - refined:
        assert trainings[task]["--pretrained_ckpt"] == str(synthetic)
        assert "real_scans.yaml" in trainings[task]["--config_file"]
    assert [trainings[f"real_fold{k}"]["--real_datalist"] for k in range(3)] == folds
    # every refiner takes the recipe's refine settings; the zero-shot model's learns from synthetic subjects alone
    for task in refined:
        assert {key: trainings[task][f"--{key}"] for key in recipe["refine"]} == {
            key: str(value) for key, value in recipe["refine"].items()
        }
    refine = trainings["synthetic_refined"]
    assert refine["--pretrained_ckpt"] == str(synthetic) and "refine_segmentation.yaml" in refine["--config_file"]
    assert "real_scans.yaml" not in refine["--config_file"] and "--real_dataset_dir" not in refine
    # each fold's refiner trains on that fold's network and studies, the shipped one on the network of every study,
    # before the heads are fit on what it segments
    for k in range(3):
        refine = trainings[f"real_fold{k}_refined"]
        assert "refine_segmentation.yaml" in refine["--config_file"] and refine["--real_datalist"] == folds[k]
        fold_model = out / f"real_fold{k}" / "models" / f"checkpoint_epoch={recipe['real']['max_epochs']}.pt"
        assert refine["--pretrained_ckpt"] == str(fold_model)
    if real_studies_help:
        assert trainings["real_refined"]["--real_datalist"] == tool.ALL_STUDIES
        assert trainings["real_refined"]["--pretrained_ckpt"] == str(real)
    shipped = real_refined if real_studies_help else synthetic_refined
    # the shipped network is rounded into the work's outputs, never beside a --synthetic-model given from elsewhere
    assert rounded == [(shipped, out / "segmentation_float16.pt")]
    assert trainings["finetune_phenotypes"]["--pretrained_ckpt"] == str(out / "segmentation_float16.pt")
    if real_studies_help:
        assert trainings["real"]["--real_datalist"] == tool.ALL_STUDIES
    by_name = {name: (ckpt, datalist) for name, ckpt, datalist in evaluations}
    assert by_name["zero_shot"] == (synthetic_refined, None)
    assert [by_name[f"fold{k}"] for k in range(3)] == [
        (out / f"real_fold{k}_refined" / "models" / "model.pt", fold) for k, fold in enumerate(folds)
    ]
    heads = out / "finetune_phenotypes" / "models" / "model.pt"
    assert {ckpt for name, ckpt, _ in evaluations if name.endswith("_final")} == {heads}
    # each fold's model is also scored on the studies it trained on, named in a split file of its own
    real_dir = tmp_path / "work" / "sunnybrook"
    for k in range(3):
        ckpt, split = by_name[f"fold{k}_in_sample"]
        assert ckpt == by_name[f"fold{k}"][0]
        assert json.loads((real_dir / split).read_text())["test"] == [{"subject": f"s{j}"} for j in range(3) if j != k]
    summary = json.loads((tmp_path / "work" / "summary.json").read_text())
    assert summary["shipped"] == ("with_real_studies" if real_studies_help else "synthetic_only")
    assert summary["held_out_real_dice"]["synthetic_only"] == pytest.approx(0.6 if real_studies_help else 0.7)
    assert summary["in_sample_real_dice"] == pytest.approx(0.7 if real_studies_help else 0.6)
