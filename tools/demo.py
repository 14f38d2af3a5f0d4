"""The main job: the shipped weights on synthetic and real hearts, then a short training run of every workflow.

Stage 1, the shipped weights (a few minutes): inference and evaluation with ``bundle/models/model.pt`` on freshly
synthesised held-out subjects and on the real Sunnybrook study shipped in ``examples/sunnybrook``; it prints Dice per
class and the phenotypes and writes the segmentations, the evaluation reports and a picture of the contours.
Stage 2, a short training run (about 13 minutes on a 2-core CPU): synthetic cohort -> pretrain -> fine-tune ->
inference -> evaluate, which exercises every workflow; its models are undertrained (a few epochs) and are not the
shipped ones. ``--full`` runs the classic-cohort recipe that ``tools.train_real_scans`` starts the shipped weights
from (hours; resumable with ``--resume``), with the same fine-tuning from scratch side by side unless
``--no-scratch``; ``--skip-training`` stops after stage 1.
Stage 1's settings and both recipes are ``bundle/configs/recipe.yaml``.

Every step is the real command (``python -m monai.bundle run ...`` from ``bundle/``, ``python -m tools.NAME`` from
the repository root), printed before it runs, so each can be repeated by hand. Under ``--work-dir``:
``shipped_weights/`` (stage 1: ``held_out/``, ``segmentations/<dataset>/``, ``evaluation/<dataset>/``,
``contours.png``), ``data/`` and ``test_data/`` (stage 2's cohorts), ``outputs/`` (its models, segmentations and
reports) and the log ``demo.log``.

    python -m tools.demo [--work-dir runs/demo] [--skip-training] [--full] [--no-scratch] [--resume]
                         [--install-weights] [--few-labels N]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.bundle import ConfigParser

from scripts.evaluation import PHENOTYPE_SOURCES
from scripts.labels import CLASS_NAMES, PHENOTYPE_UNITS
from scripts.weights import shipped_precision
from tools import BUNDLE, REPO

#: stage 1's settings and the two training recipes (``demo``, ``full``); this tool only reads and runs them
RECIPE_FILE = BUNDLE / "configs" / "recipe.yaml"
SHIPPED_WEIGHTS = BUNDLE / "models" / "model.pt"
#: the real study stage 1 scores the weights on (CC0, see its SOURCE.md); a dataset folder with a datalist.json
REAL_EXAMPLE = REPO / "examples" / "sunnybrook"
#: stage 1's datasets by folder name under shipped_weights/, as its summary names them
STAGE_1_DATASETS = {"synthetic": "held-out synthetic hearts", "sunnybrook": "real Sunnybrook study"}
#: what stage 1's summary says of the shipped weights
SHIPPED_WEIGHTS_NOTE = (
    "The shipped weights learned from synthetic hearts and the three Sunnybrook studies, this one included, so its "
    "Dice here is a training score; the studies left out in turn score lower (bundle/docs/README.md, Results). Real "
    "scans are not solved (the myocardium, the LVEF): evaluate them on labelled studies of your own before use."
)
#: frames per cycle of the canonical grid that ``tools.plot_planes`` draws (``LoadCineSubjectd``'s default)
PICTURE_FRAMES = 50
#: mean Dice over the labelled classes from which a model is said to segment a dataset well, and below which poorly
GOOD_DICE, POOR_DICE = 0.8, 0.5
#: the phenotypes the demo prints
TARGET_PHENOTYPES = ("LVEDV", "LVEF", "LVM", "RVEDV", "RVEF")
TRAIN_CONFIGS = ["configs/inference.yaml", "configs/train.yaml"]
SEGMENTATION_TASKS = ("finetune_segmentation", "finetune_segmentation_scratch")
PHENOTYPE_TASKS = ("finetune_phenotypes", "finetune_phenotypes_scratch")


def load_recipes() -> dict:
    """``bundle/configs/recipe.yaml`` read by the bundle's own config reader: ``preset``, ``shipped_weights``,
    ``demo`` and ``full``."""
    return ConfigParser.load_config_file(RECIPE_FILE)


def bundle_command(configs: list[str], **overrides: object) -> list[str]:
    """``python -m monai.bundle run`` of ``configs`` (paths relative to ``bundle/``) with ``--key value`` overrides."""
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", repr(configs)]
    for key, value in overrides.items():
        command += [f"--{key}", str(value)]
    return command


def tool_command(name: str, *arguments: object) -> list[str]:
    """``python -m tools.NAME ARGUMENTS``: a command-line tool of the repository."""
    return [sys.executable, "-m", f"tools.{name}", *map(str, arguments)]


def working_folder(command: list[str]) -> Path:
    """Where a step runs: the repository root for its tools (``python -m tools.NAME``), ``bundle/`` for the
    bundle's workflows, whose config paths and defaults are relative to it."""
    return REPO if command[2].startswith("tools.") else BUNDLE


def printable(command: list[str]) -> str:
    """The command as a shell line, from the folder it runs in."""
    line = " ".join(f'"{c}"' if ("[" in c or " " in c) else c for c in command)
    return line if working_folder(command) == REPO else f"(cd bundle && {line})"


def finished(task_dir: Path, max_epochs: int) -> bool:
    """Whether a training's latest checkpoint is at ``max_epochs`` (a resumed demo skips it, not reloads it)."""
    return (task_dir / "models" / f"checkpoint_epoch={max_epochs}.pt").is_file()


def synthesize(
    out: Path, subjects: int, seed: int, workers: int, log: Path, split: str, variety: str = "classic"
) -> None:
    """A synthetic cohort of ``variety`` (``tools.synthesize --variety``) in ``out`` (kept if already there)."""
    if not (out / "datalist.json").is_file():
        command = tool_command("synthesize", "--out", out, "--subjects", subjects, "--seed", seed, "--workers", workers)
        run(command + ["--split", split, "--variety", variety], log)


def run(command: list[str], log: Path) -> None:
    """Run a step, echoing the command, teeing its output into ``log``."""
    run_side_by_side([command], [log])


def run_side_by_side(commands: list[list[str]], logs: list[Path]) -> None:
    """Run independent steps at the same time, each on an equal share of the CPU cores (a step's threads come from
    ``OMP_NUM_THREADS``), each teeing into its own log; stop if any fails.

    The pretrained and the from-scratch fine-tunings are independent: side by side they finish together in about
    the time of running them one after the other, and neither's numbers depend on the other's.
    """
    threads = max(1, (os.cpu_count() or 1) // len(commands))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if len(commands) > 1 else None
    started, processes = time.time(), []
    for command, log in zip(commands, logs):
        print(f"\n$ {printable(command)}", flush=True)
        stream = open(log, "a")
        stream.write(f"\n$ {printable(command)}\n")
        stream.flush()
        folder = working_folder(command)
        processes.append(
            (subprocess.Popen(command, cwd=folder, stdout=stream, stderr=subprocess.STDOUT, env=env), stream, log)
        )
    failed = []
    for process, stream, log in processes:
        process.wait()
        stream.close()
        if process.returncode != 0:
            failed.append((process.returncode, log))
    print(f"  ... {time.time() - started:.0f} s (log: {', '.join(str(log) for log in logs)})", flush=True)
    for returncode, log in failed:
        tail = log.read_text().splitlines()[-30:]
        sys.exit(f"step failed (exit {returncode}); last lines of {log}:\n" + "\n".join(tail))


def install_weights(checkpoint: Path, destination: Path) -> None:
    """Ship ``checkpoint`` as ``destination`` at the shipped precision (:func:`shipped_precision`)."""
    shipped_precision(checkpoint, destination)
    print(f"installed {checkpoint} as {destination} ({destination.stat().st_size / 2**20:.1f} MB, float16 weights)")


def evaluate(
    ckpt: Path,
    scratch_ckpt: Path | None,
    output_dir: Path,
    test_data: Path,
    data: Path,
    log: Path,
    **overrides: object,
) -> dict:
    """The ``evaluate`` workflow on the test split of ``test_data`` (the mean guess from ``data``'s training split),
    both models side by side (or ``ckpt`` alone when ``scratch_ckpt`` is None), with further config ``overrides``
    (``preset``, ...); returns its metrics."""
    run(
        bundle_command(
            ["configs/inference.yaml", "configs/evaluate.yaml"],
            dataset_dir=test_data,
            output_dir=output_dir,
            ckpt=ckpt,
            scratch_ckpt=scratch_ckpt or "''",
            reference_dataset_dir=data,
            **overrides,
        ),
        log,
    )
    return json.loads((output_dir / "metrics.json").read_text())


def dice_line(model_metrics: dict, key: str = "dice") -> str:
    """``LVBP 0.963, LVMYO 0.900, ...``: a model's Dice over all planes and frames (``key``: ``dice`` on the
    canonical grid, ``dice_input_planes`` as written), the classes its labels show."""
    dice = model_metrics[key].get("all", {})
    return ", ".join(f"{k} {v:.3f}" for k, v in dice.items() if v is not None)


def paired_line(metrics: dict) -> str | None:
    """``LVBP 6-10 (p 0.45), ...``: per class, in how many subjects the first model's Dice as written beats the
    second's and the other way round, with the sign test's p-value (None for a report of one model)."""
    paired = metrics.get("paired")
    if not paired:
        return None
    cells = ", ".join(
        f"{c} {e['first_better']}-{e['second_better']} (p {e['sign_test_p']:.2f})"
        for c, e in paired["dice_input_planes"].items()
    )
    return f"subject by subject, Dice as written, {paired['first']} better-{paired['second']} better: {cells}"


def evaluated_subjects(dataset: Path) -> list[str]:
    """The subject folder names of ``dataset``'s test split (its ``datalist.json``), the subjects evaluate scores."""
    return [item["subject"] for item in json.loads((dataset / "datalist.json").read_text())["test"]]


def segmentation_view(subject: Path, predictions: Path, view: Path) -> Path:
    """A subject folder ``view`` holding ``subject``'s images and, as its labels, the segmentations inference wrote
    to ``predictions`` (links, not copies), for ``tools.plot_planes``."""
    view.mkdir(parents=True, exist_ok=True)
    images = [p for p in subject.iterdir() if ".nii" in p.name and not p.name.startswith("seg_")]
    for source in images + sorted(predictions.glob("seg_*.nii*")):
        link = view / source.name
        link.unlink(missing_ok=True)
        link.symlink_to(source.resolve())
    return view


def contoured_frame(subject: Path) -> int:
    """The canonical frame of the picture (of :data:`PICTURE_FRAMES`, showing the acquired frame nearest in time)
    at the acquired frame of ``subject``'s ``seg_sa.nii.gz`` (X, Y, S, T) with the most labelled LV myocardium:
    end-diastole, where real studies contour the epicardium (not always their first frame)."""
    labels = np.asarray(nib.load(subject / "seg_sa.nii.gz").dataobj)
    acquired = int(np.argmax((labels == CLASS_NAMES.index("LVMYO")).sum(axis=(0, 1, 2))))
    return round(acquired * PICTURE_FRAMES / labels.shape[3]) % PICTURE_FRAMES


def draw_contours(datasets: dict[str, Path], stage: Path, log: Path) -> Path:
    """``stage/contours.png``: for each evaluated subject, a row of its canonical planes outlined with its manual
    labels and a row outlined with the segmentation inference wrote (``python -m tools.plot_planes``), at the real
    study's end-diastole (:func:`contoured_frame`; a synthetic subject is labelled at every frame)."""
    folders, titles = [], []
    for name, dataset in datasets.items():
        for subject in evaluated_subjects(dataset):
            predictions = stage / "segmentations" / name / subject
            view = segmentation_view(dataset / subject, predictions, stage / "segmentation_views" / name / subject)
            folders += [dataset / subject, view]
            titles += [f"{subject}, manual", f"{subject}, model"]
    picture = stage / "contours.png"
    frame = contoured_frame(REAL_EXAMPLE / evaluated_subjects(REAL_EXAMPLE)[0])
    run(tool_command("plot_planes", *folders, "--out", picture, "--frame", frame, "--titles", *titles), log)
    return picture


def read_phenotypes(path: Path) -> dict[str, dict[str, float]]:
    """{subject: {phenotype: value}} of a phenotypes.csv (inference's estimates, a synthetic cohort's truth); empty
    when there is no such file (a real dataset has no true phenotypes). Other columns (identifiers, the values'
    source, quality control) are left out."""
    if not path.is_file():
        return {}
    with open(path, newline="") as handle:
        rows = csv.DictReader(handle)
        return {row["subject"]: {k: float(row[k]) for k in PHENOTYPE_UNITS if row.get(k)} for row in rows}


def quality(dice: dict[str, float | None]) -> str:
    """``well``, ``fairly`` or ``poorly``: the mean Dice of the classes the labels show against :data:`GOOD_DICE`
    and :data:`POOR_DICE` (``not at all`` when no class could be scored)."""
    scored = [v for v in dice.values() if v is not None]
    if not scored:
        return "not at all (no labelled class to score)"
    mean = sum(scored) / len(scored)
    word = "well" if mean >= GOOD_DICE else "fairly" if mean >= POOR_DICE else "poorly"
    return f"{word} (mean Dice {mean:.2f})"


def print_phenotypes(estimated: dict[str, dict[str, float]], truth: dict[str, dict[str, float]]) -> None:
    """One line per subject: each of :data:`TARGET_PHENOTYPES` as estimated, the truth in brackets where known."""
    print("    " + "subject".ljust(14) + "".join(f"{f'{p} {PHENOTYPE_UNITS[p]}':>14}" for p in TARGET_PHENOTYPES))
    for subject, values in estimated.items():
        known = truth.get(subject, {})
        cells = [
            (f"{values[p]:.0f}" if p in values else "n/a") + (f" ({known[p]:.0f})" if p in known else "")
            for p in TARGET_PHENOTYPES
        ]
        print("    " + subject.ljust(14) + "".join(f"{c:>14}" for c in cells))


def print_stage_1(ckpt: Path, datasets: dict[str, Path], reports: dict[str, dict], stage: Path) -> None:
    """Stage 1's summary: per dataset, Dice per class of the segmentations as written and what it says of the
    model, the phenotypes, and where the files are."""
    shipped = ckpt == SHIPPED_WEIGHTS.resolve()
    print(f"\n=== Stage 1: {'the shipped weights' if shipped else ckpt}, before any training ===")
    for name, metrics in reports.items():
        (model,) = metrics["models"].values()
        dice = model["dice_input_planes"]["all"]
        subjects = ", ".join(metrics["subjects"])
        print(f"{STAGE_1_DATASETS[name]} ({subjects}):")
        print(f"  Dice as written: {dice_line(model, 'dice_input_planes')}")
        print(f"  -> segments the {STAGE_1_DATASETS[name]} {quality(dice)}")
    for name, dataset in datasets.items():
        truth = read_phenotypes(dataset / "phenotypes.csv")
        print(f"phenotypes of the {STAGE_1_DATASETS[name]}, estimated" + (" (truth)" if truth else "") + ":")
        print_phenotypes(read_phenotypes(stage / "segmentations" / name / "phenotypes.csv"), truth)
    if shipped:
        print(SHIPPED_WEIGHTS_NOTE)
    print(f"segmentations: {stage}/segmentations/<dataset>/<subject>/seg_<plane>.nii.gz, phenotypes.csv")
    print(f"metrics:       {stage}/evaluation/<dataset>/metrics.json")
    print(f"picture:       {stage}/contours.png (manual and model contours at the real study's end-diastole)")


def score_shipped_weights(settings: dict, work: Path, ckpt: Path, preset: str, workers: int, log: Path) -> None:
    """Stage 1: inference and evaluation with ``ckpt`` (the recipe's ``shipped_weights`` ``settings``) on freshly
    synthesised held-out subjects and on the real example study, then a picture of their contours and a summary."""
    stage = work / "shipped_weights"
    held_out = settings["held_out"]
    synthesize(stage / "held_out", held_out["subjects"], held_out["seed"], workers, log, "0,0,1", held_out["variety"])
    datasets = {"synthetic": stage / "held_out", "sunnybrook": REAL_EXAMPLE}
    reports = {}
    for name, dataset in datasets.items():
        predictions = stage / "segmentations" / name
        inference = bundle_command(
            ["configs/inference.yaml"], dataset_dir=dataset, output_dir=predictions, ckpt=ckpt, preset=preset,
            **settings["segmenting"],
        )  # fmt: skip
        run(inference, log)
        evaluation = stage / "evaluation" / name
        reports[name] = evaluate(ckpt, None, evaluation, dataset, dataset, log, preset=preset, **settings["segmenting"])
    draw_contours(datasets, stage, log)
    print_stage_1(ckpt, datasets, reports, stage)


def segmentation_side_by_side(task: str, logs: list[Path], common: dict, **overrides: object) -> None:
    """Fine-tune segmentation as ``task`` from the MAE encoder and, given a second log, as ``task``_scratch from
    scratch, side by side (each step into its log)."""
    segmentation = TRAIN_CONFIGS + ["configs/finetune_segmentation.yaml"]
    commands = [
        bundle_command(segmentation, task=task, **overrides, **common),
        bundle_command(segmentation, task=f"{task}_scratch", pretrained_ckpt="''", **overrides, **common),
    ]
    run_side_by_side(commands[: len(logs)], logs)


def few_labels(count: int, recipe: dict, common: dict, test_data: Path, data: Path, out: Path, work: Path) -> None:
    """Segmentation fine-tuned on the first ``count`` training subjects only, from the MAE encoder (pretrained on
    all subjects) and from scratch, side by side; then both evaluated on the held-out cohort."""
    # a fixed budget of steps (batch size 1): fewer subjects, more epochs
    epochs = max(1, recipe["few_label_steps"] // count)
    task = f"finetune_segmentation_{count}_subjects"
    segmentation_side_by_side(
        task,
        [work / f"few_labels_{count}.log", work / f"few_labels_{count}_scratch.log"],
        common,
        max_epochs=epochs,
        val_interval=max(1, epochs // 5),
        max_train_subjects=count,
    )
    evaluation = out / f"evaluation_{count}_subjects"
    metrics = evaluate(
        out / task / "models" / "model.pt",
        out / f"{task}_scratch" / "models" / "model.pt",
        evaluation,
        test_data,
        data,
        work / "demo.log",
        preset=common["preset"],
        **recipe["segmenting"],
    )
    print(f"\nsegmentation fine-tuned on {count} labelled subjects ({epochs} epochs), held-out Dice:")
    for name, model_metrics in metrics["models"].items():
        print(f"  {name}: {dice_line(model_metrics)}")
    print(f"metrics: {evaluation}/metrics.json")


def train(recipe: dict, common: dict, resume: bool, work: Path, arms: int) -> None:
    """Pretrain, fine-tune segmentation and fit the phenotype heads as ``recipe`` says, in ``common``'s output folder;
    ``arms``: the pretrained arm alone (1) or the from-scratch arm beside it (2). With ``resume`` a finished stage
    is skipped, not reloaded."""
    out, log = common["output_dir"], work / "demo.log"
    logs = [log, work / "demo_scratch.log"][:arms]
    if not (resume and finished(out / "pretrain", recipe["pretrain"]["max_epochs"])):
        run(bundle_command(TRAIN_CONFIGS + ["configs/pretrain.yaml"], **recipe["pretrain"], **common), log)
    epochs = recipe["finetune_segmentation"]["max_epochs"]
    if not (resume and all(finished(out / t, epochs) for t in SEGMENTATION_TASKS[:arms])):
        segmentation_side_by_side("finetune_segmentation", logs, common, **recipe["finetune_segmentation"])
    epochs = recipe["finetune_phenotypes"]["max_epochs"]
    if not (resume and all(finished(out / t, epochs) for t in PHENOTYPE_TASKS[:arms])):
        # the head of each segmentation model (pretrained, scratch), side by side
        segmentations = [out / task / "models" / "model.pt" for task in SEGMENTATION_TASKS[:arms]]
        if recipe["heads_fit_on_shipped_precision"]:
            segmentations = [shipped_precision(s, s.with_name("model_float16.pt")) for s in segmentations]
        phenotypes = TRAIN_CONFIGS + ["configs/finetune_phenotypes.yaml"]
        settings = {**common, **recipe["finetune_phenotypes"], **recipe["segmenting"]}
        commands = [
            bundle_command(phenotypes, task=task, pretrained_ckpt=checkpoint, **settings)
            for task, checkpoint in zip(PHENOTYPE_TASKS, segmentations)
        ]
        run_side_by_side(commands, logs)


def print_stage_2(metrics: dict, full: bool, test_seed: int, predictions: Path, evaluation: Path, log: Path) -> None:
    """Stage 2's summary: per model, Dice and phenotype errors on the held-out cohort, and where the files are."""
    models = "the classic-cohort recipe" if full else "the short run (undertrained: not the shipped weights)"
    print(f"\n=== Stage 2: models of {models}, on held-out synthetic subjects (seed {test_seed}) ===")
    for name, model_metrics in metrics["models"].items():
        print(f"  {name}: Dice {dice_line(model_metrics)}")
        for source, title in PHENOTYPE_SOURCES:
            if source not in model_metrics:
                continue
            ratios = {k: model_metrics[source].get(k, {}).get("ratio_to_mean_guess") for k in TARGET_PHENOTYPES}
            cells = ", ".join(f"{k} {v:.2f}" for k, v in ratios.items() if v is not None)
            print(f"    phenotype MAE / mean-guess MAE, {title}: {cells or 'n/a'}")
    comparison = paired_line(metrics)
    if comparison:
        print(f"  {comparison}")
    print(f"\nsegmentations: {predictions}/<subject>/seg_<plane>.nii.gz")
    print(
        f"phenotypes:    {predictions}/phenotypes.csv (estimated: see phenotypes_method in each phenotypes.json), "
        "phenotypes_from_embedding.csv, phenotypes_from_segmentation.csv (measured)"
    )
    print(f"metrics:       {evaluation}/metrics.json")
    print(f"log:           {log}")


def train_and_evaluate(recipe: dict, args: argparse.Namespace, work: Path, preset: str) -> None:
    """Stage 2: synthesise the cohorts, train as ``recipe`` says, then inference and evaluation on the held-out
    cohort (and the optional few-label fine-tunings); prints what the models are and how they score."""
    data, test_data, out, log = work / "data", work / "test_data", work / "outputs", work / "demo.log"
    if args.full:
        print("\n=== Stage 2: the classic-cohort recipe that the shipped weights start from (hours) ===")
    else:
        print(
            "\n=== Stage 2: a short training run of every workflow (about 13 minutes on 2 CPU cores) ===\n"
            f"pretraining {recipe['pretrain']['max_epochs']} epochs, segmentation "
            f"{recipe['finetune_segmentation']['max_epochs']}, phenotype heads "
            f"{recipe['finetune_phenotypes']['max_epochs']}, on {recipe['cohort']['subjects']} synthetic subjects: "
            "its models are undertrained and are NOT the shipped weights; it shows that every workflow runs. "
            "--full trains the classic-cohort recipe that the shipped weights start from (hours)."
        )
    cohort, held_out = recipe["cohort"], recipe["held_out"]
    seed = cohort["seed"] if args.seed is None else args.seed
    synthesize(data, cohort["subjects"], seed, args.workers, log, cohort["split"])
    test_seed = held_out["seed"] if args.test_seed is None else args.test_seed
    synthesize(test_data, held_out["subjects"], test_seed, args.workers, log, split="0,0,1")
    common = {"dataset_dir": data, "output_dir": out, "preset": preset, "resume": str(args.resume).lower()}
    arms = 1 if args.no_scratch else 2
    train(recipe, common, args.resume, work, arms)

    model = out / "finetune_phenotypes" / "models" / "model.pt"
    scratch = None if args.no_scratch else out / "finetune_phenotypes_scratch" / "models" / "model.pt"
    predictions, evaluation = out / "inference", out / "evaluation"
    inference = bundle_command(
        ["configs/inference.yaml"], dataset_dir=test_data, output_dir=predictions, ckpt=model, preset=preset,
        **recipe["segmenting"],
    )  # fmt: skip
    run(inference, log)
    metrics = evaluate(model, scratch, evaluation, test_data, data, log, preset=preset, **recipe["segmenting"])
    if args.install_weights:
        install_weights(model, SHIPPED_WEIGHTS)
    if args.few_labels:
        few_labels(args.few_labels, recipe, common, test_data, data, out, work)
    print_stage_2(metrics, args.full, test_seed, predictions, evaluation, log)


def parse_arguments() -> argparse.Namespace:
    """Command-line interface."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default=str(REPO / "runs" / "demo"), help="where data, models and outputs go")
    parser.add_argument("--skip-training", action="store_true", help="stage 1 only: the shipped weights, no training")
    parser.add_argument(
        "--full", action="store_true", help="train the classic-cohort recipe the shipped weights start from (hours)"
    )
    parser.add_argument("--resume", action="store_true", help="continue the trainings from their latest checkpoints")
    parser.add_argument("--ckpt", default=str(SHIPPED_WEIGHTS), help="the weights stage 1 scores")
    parser.add_argument("--preset", help="network size of --ckpt and of the trainings (default: the recipe's)")
    parser.add_argument("--seed", type=int, help="seed of the training cohort (default: the recipe's)")
    parser.add_argument("--workers", type=int, default=2, help="processes synthesising the cohort")
    parser.add_argument("--test-seed", type=int, help="seed of the held-out evaluation cohort (default: the recipe's)")
    parser.add_argument("--install-weights", action="store_true", help="copy the final model to bundle/models")
    parser.add_argument(
        "--few-labels",
        type=int,
        default=0,
        metavar="N",
        help="also fine-tune segmentation on only N labelled subjects, pretrained and from scratch, and evaluate both "
        "(does pretraining help when labels are scarce?)",
    )
    parser.add_argument(
        "--no-scratch",
        action="store_true",
        help="train the pretrained arm only, without the from-scratch comparison beside it (what the shipped weights "
        "need, in about half the time of both arms)",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_arguments()
    recipes = load_recipes()
    preset = args.preset or recipes["preset"]
    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "demo.log"
    score_shipped_weights(recipes["shipped_weights"], work, Path(args.ckpt).resolve(), preset, args.workers, log)
    if not args.skip_training:
        train_and_evaluate(recipes["full" if args.full else "demo"], args, work, preset)


if __name__ == "__main__":
    main()
