"""The main job end to end on the embedded default: synthetic cohort -> pretrain -> fine-tune -> inference -> evaluate.

Every step is the real bundle command (``python -m monai.bundle run ...``), printed before it runs, so each can be
repeated by hand. The default run is bounded for a 2-core CPU (about 13 minutes, under 30); ``--full`` is the recipe
of the shipped weights (hours; resumable with ``--resume``), with the same fine-tuning from scratch side by side
unless ``--no-scratch``.

    python -m tools.demo [--work-dir runs/demo] [--full] [--no-scratch] [--resume] [--install-weights]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from scripts.evaluation import PHENOTYPE_SOURCES
from scripts.files import atomic_path
from tools import BUNDLE, REPO

#: sizes of the two recipes: the cohort (and its training/validation/test split), the held-out cohort, epochs per
#: stage, validation interval of the segmentation fine-tuning and the training steps of the optional few-label
#: fine-tunings. Every stage uses all training subjects: pretraining without labels, segmentation with the contours,
#: the phenotype heads with the phenotypes. ``centre_shifts_px``: inference's test-time shifts for the measure head's
#: fit, inference and evaluation (None: the config's). The short demo runs one pass: the shifts triple the cost of
#: those three stages (22 min 55 s end to end with them, session 25) for ~0.002 Dice that 4-epoch models cannot use.
RECIPES = {
    "demo": {
        "subjects": 24,
        "split": "0.8,0.1,0.1",
        "test_subjects": 8,
        "pretrain_epochs": 8,
        "segmentation_epochs": 4,
        "segmentation_val_interval": 2,
        "phenotype_epochs": 5,
        "few_label_steps": 40,
        "centre_shifts_px": [],
    },
    "full": {
        "subjects": 350,
        "split": "0.97,0.03,0",
        "test_subjects": 16,
        "pretrain_epochs": 20,
        "segmentation_epochs": 10,
        "segmentation_val_interval": 1,
        "phenotype_epochs": 5,
        "few_label_steps": 400,
        "centre_shifts_px": None,
    },
}
PRESET = "small"
#: the phenotypes whose error the demo prints
TARGET_PHENOTYPES = ("LVEDV", "LVEF", "LVM", "RVEDV", "RVEF")
TRAIN_CONFIGS = ["configs/inference.yaml", "configs/train.yaml"]
SEGMENTATION_TASKS = ("finetune_segmentation", "finetune_segmentation_scratch")
PHENOTYPE_TASKS = ("finetune_phenotypes", "finetune_phenotypes_scratch")


def bundle_command(configs: list[str], **overrides: object) -> list[str]:
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", repr(configs)]
    for key, value in overrides.items():
        command += [f"--{key}", str(value)]
    return command


def printable(command: list[str]) -> str:
    return " ".join(f'"{c}"' if ("[" in c or " " in c) else c for c in command)


def finished(task_dir: Path, max_epochs: int) -> bool:
    """Whether a training's latest checkpoint is at ``max_epochs`` (a resumed demo skips it, not reloads it)."""
    return (task_dir / "models" / f"checkpoint_epoch={max_epochs}.pt").is_file()


def synthesize(out: Path, subjects: int, seed: int, workers: int, log: Path, split: str) -> None:
    """A synthetic cohort in ``out`` (kept if already there)."""
    if not (out / "datalist.json").is_file():
        run([sys.executable, "-m", "tools.synthesize", "--out", str(out), "--subjects", str(subjects),
             "--seed", str(seed), "--workers", str(workers), "--split", split], log)  # fmt: skip


def run(command: list[str], log: Path) -> None:
    """Run a step from the bundle folder, echoing the command, teeing its output into ``log``."""
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
        print(f"\n$ (cd bundle && {printable(command)})", flush=True)
        stream = open(log, "a")
        stream.write(f"\n$ {printable(command)}\n")
        stream.flush()
        processes.append(
            (subprocess.Popen(command, cwd=BUNDLE, stdout=stream, stderr=subprocess.STDOUT, env=env), stream, log)
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


#: tensors the shipped file keeps in float32: the phenotype head (its input statistics standardise an embedding whose
#: mean dwarfs its spread, so rounding them moves its values; a few thousand numbers) and the measure head (a few
#: hundred, most of them in mL)
KEEP_FLOAT32 = ("phenotype_head.", "measure_head.")


def shipped_precision(checkpoint: Path, destination: Path) -> Path:
    """``checkpoint`` with every other floating tensor rounded to float16, as the shipped file holds it.

    The Model Zoo caps files at 25 MB and float32 `small` weights are ~32 MB, so the shipped file is float16. The
    heads are fit in closed form on the network they are given; fitting them on this rounded network, rather than
    on the float32 one, makes them fit the encoder and segmentation that users actually run."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    shipped = {
        key: value.half() if value.is_floating_point() and not key.startswith(KEEP_FLOAT32) else value
        for key, value in state.items()
    }
    with atomic_path(destination) as temp_path:
        torch.save(shipped, temp_path)
    return destination


def install_weights(checkpoint: Path, destination: Path) -> None:
    """Ship ``checkpoint`` as ``destination`` at the shipped precision (:func:`shipped_precision`)."""
    shipped_precision(checkpoint, destination)
    print(f"installed {checkpoint} as {destination} ({destination.stat().st_size / 2**20:.1f} MB, float16 weights)")


def segmentation_side_by_side(task: str, logs: list[Path], common: dict, **overrides: object) -> None:
    """Fine-tune segmentation as ``task`` from the MAE encoder and, given a second log, as ``task``_scratch from
    scratch, side by side (each step into its log)."""
    segmentation = TRAIN_CONFIGS + ["configs/finetune_segmentation.yaml"]
    commands = [
        bundle_command(segmentation, task=task, **overrides, **common),
        bundle_command(segmentation, task=f"{task}_scratch", pretrained_ckpt="''", **overrides, **common),
    ]
    run_side_by_side(commands[: len(logs)], logs)


def evaluate(
    ckpt: Path,
    scratch_ckpt: Path | None,
    output_dir: Path,
    test_data: Path,
    data: Path,
    log: Path,
    **overrides: object,
) -> dict:
    """The ``evaluate`` workflow on the held-out cohort, both models side by side (or ``ckpt`` alone when
    ``scratch_ckpt`` is None), with further config ``overrides``; returns its metrics."""
    run(
        bundle_command(
            ["configs/inference.yaml", "configs/evaluate.yaml"],
            dataset_dir=test_data,
            output_dir=output_dir,
            ckpt=ckpt,
            scratch_ckpt=scratch_ckpt or "''",
            reference_dataset_dir=data,
            preset=PRESET,
            **overrides,
        ),
        log,
    )
    return json.loads((output_dir / "metrics.json").read_text())


def dice_line(model_metrics: dict) -> str:
    """``LVBP 0.963, LVMYO 0.900, ...``: a model's Dice over all planes and frames."""
    dice = model_metrics["dice"].get("all", {})
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


def shift_overrides(recipe: dict) -> dict:
    """The ``centre_shifts_px`` override of a recipe that sets one, else none (the config's shifts)."""
    shifts = recipe["centre_shifts_px"]
    return {} if shifts is None else {"centre_shifts_px": shifts}


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
        **shift_overrides(recipe),
    )
    print(f"\nsegmentation fine-tuned on {count} labelled subjects ({epochs} epochs), held-out Dice:")
    for name, model_metrics in metrics["models"].items():
        print(f"  {name}: {dice_line(model_metrics)}")
    print(f"metrics: {evaluation}/metrics.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default=str(REPO / "runs" / "demo"), help="where data, models and outputs go")
    parser.add_argument("--full", action="store_true", help="the full recipe of the shipped weights (hours)")
    parser.add_argument("--resume", action="store_true", help="continue the trainings from their latest checkpoints")
    parser.add_argument("--seed", type=int, default=1, help="seed of the training cohort")
    parser.add_argument("--workers", type=int, default=2, help="processes synthesising the cohort")
    parser.add_argument("--test-seed", type=int, default=2024, help="seed of the held-out evaluation cohort")
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
    args = parser.parse_args()

    recipe = RECIPES["full" if args.full else "demo"]
    work = Path(args.work_dir).resolve()
    data, test_data, out = work / "data", work / "test_data", work / "outputs"
    work.mkdir(parents=True, exist_ok=True)
    log = work / "demo.log"
    common = {"dataset_dir": data, "output_dir": out, "preset": PRESET, "resume": str(args.resume).lower()}

    synthesize(data, recipe["subjects"], args.seed, args.workers, log, recipe["split"])
    # subjects from a seed the training never saw, all in the test split
    synthesize(test_data, recipe["test_subjects"], args.test_seed, args.workers, log, split="0,0,1")

    # with --resume a finished stage is skipped, not reloaded
    if not (args.resume and finished(out / "pretrain", recipe["pretrain_epochs"])):
        pretrain = TRAIN_CONFIGS + ["configs/pretrain.yaml"]
        run(bundle_command(pretrain, max_epochs=recipe["pretrain_epochs"], **common), log)
    epochs = recipe["segmentation_epochs"]
    # the arms trained (pretrained, then scratch unless --no-scratch) and the log of each
    arms = 1 if args.no_scratch else 2
    logs = [log, work / "demo_scratch.log"][:arms]
    if not (args.resume and all(finished(out / t, epochs) for t in SEGMENTATION_TASKS[:arms])):
        segmentation_side_by_side(
            "finetune_segmentation",
            logs,
            common,
            max_epochs=epochs,
            val_interval=recipe["segmentation_val_interval"],
        )
    epochs = recipe["phenotype_epochs"]
    if not (args.resume and all(finished(out / t, epochs) for t in PHENOTYPE_TASKS[:arms])):
        # the head of each segmentation model (pretrained, scratch), side by side
        # fit on each segmentation model as it will be shipped (float16), so the heads match the installed file
        rounded = [
            shipped_precision(out / task / "models" / "model.pt", out / task / "models" / "model_float16.pt")
            for task in SEGMENTATION_TASKS[:arms]
        ]
        phenotypes = TRAIN_CONFIGS + ["configs/finetune_phenotypes.yaml"]
        settings = {**common, "max_epochs": epochs, **shift_overrides(recipe)}
        commands = [
            bundle_command(phenotypes, task=task, pretrained_ckpt=checkpoint, **settings)
            for task, checkpoint in zip(PHENOTYPE_TASKS, rounded)
        ]
        run_side_by_side(commands, logs)

    model = out / "finetune_phenotypes" / "models" / "model.pt"
    scratch = None if args.no_scratch else out / "finetune_phenotypes_scratch" / "models" / "model.pt"
    predictions = out / "inference"
    run(
        bundle_command(
            ["configs/inference.yaml"],
            dataset_dir=test_data,
            output_dir=predictions,
            ckpt=model,
            preset=PRESET,
            **shift_overrides(recipe),
        ),
        log,
    )
    evaluation = out / "evaluation"
    metrics = evaluate(model, scratch, evaluation, test_data, data, log, **shift_overrides(recipe))
    if args.install_weights:
        install_weights(model, BUNDLE / "models" / "model.pt")
    if args.few_labels:
        few_labels(args.few_labels, recipe, common, test_data, data, out, work)

    print("\nresults on held-out synthetic subjects (seed %d):" % args.test_seed)
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


if __name__ == "__main__":
    main()
