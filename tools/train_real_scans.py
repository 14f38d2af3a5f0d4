"""The recipe of the shipped weights for real scans, and its measurements on the real Sunnybrook studies.

From a segmentation model trained on the classic synthetic cohort (``--start``; the ``full`` recipe of
``python -m tools.demo``), every step a real workflow command, printed before it runs:

1. a ``--variety wide`` synthetic cohort (``python -m tools.synthesize``) and the Sunnybrook studies with their
   contours (``python -m tools.import_sunnybrook``), with one leave-one-out split file per study;
2. ``synthetic``: segmentation fine-tuned on the wide cohort seen through random appearances, no real label, and its
   full-resolution refiner trained on the same synthetic subjects (``synthetic_refined``,
   ``configs/refine_segmentation.yaml``, the rest of the network fixed): the synthetic-only model, scored zero-shot
   on every real study;
3. ``real_fold<k>``: from it, the wide cohort with the real studies but study k repeated in every epoch
   (``real_scans.yaml``), scored on study k and on the studies it trained on (``in_sample``: how well the network
   fits real contours at all, beside how well it carries them to a study it has not seen), after its full-resolution
   refiner is trained on it (``real_fold<k>_refined``, ``configs/refine_segmentation.yaml``, the rest of the network
   fixed);
4. the choice: where the folds score their held-out studies better than the synthetic-only model scores the same
   studies (:func:`contoured_real_dice`: LV blood pool at ED and ES, myocardium at ED), ``real`` is trained on
   every study, with its refiner (``real_refined``), and ships; otherwise the synthetic-only model ships;
5. the phenotype heads fit on the shipped segmentation network (encoder frozen; the measure head on what its refined
   segmentations measure), and both synthetic held-out cohorts (classic and wide) evaluated with it and with the
   start; ``summary.json`` collects the numbers.

Settings: ``real_scans`` in ``bundle/configs/recipe.yaml``. With ``--resume`` finished trainings and cohorts are
kept; ``--install-weights`` ships the final model as ``bundle/models/model.pt`` (float16). ``--synthetic-model``
starts at step 3 from a synthetic-only model already made (the held-out cohorts then compare with it).

    python -m tools.train_real_scans --start runs/demo/outputs/finetune_segmentation/models/model.pt \\
        [--work-dir runs/real_scans] [--resume] [--install-weights]
    python -m tools.train_real_scans --synthetic-model SYNTHETIC.pt [--in-plane-axes patient] [...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scripts.files import write_json_atomic
from scripts.weights import shipped_precision
from tools import REPO
from tools.demo import (
    SHIPPED_WEIGHTS,
    TRAIN_CONFIGS,
    bundle_command,
    evaluate,
    finished,
    install_weights,
    load_recipes,
    run,
    synthesize,
    tool_command,
)

SEGMENTATION = TRAIN_CONFIGS + ["configs/finetune_segmentation.yaml"]
REAL_SEGMENTATION = SEGMENTATION + ["configs/real_scans.yaml"]
PHENOTYPES = TRAIN_CONFIGS + ["configs/finetune_phenotypes.yaml"]
SYNTHETIC_REFINE = SEGMENTATION + ["configs/refine_segmentation.yaml"]
REFINE = REAL_SEGMENTATION + ["configs/refine_segmentation.yaml"]


#: the split file of the real studies that trains on all of them (the shipped model's)
ALL_STUDIES = "all_studies.json"


def import_real_studies(source: Path, out: Path, log: Path) -> list[str]:
    """The Sunnybrook studies as subject folders in ``out``, with leave-one-out split files ``folds/fold<k>.json``
    (validation on the training studies) and :data:`ALL_STUDIES` (every study in training); returns the folds'
    names, relative to ``out``."""
    if not (out / "datalist.json").is_file():
        run(tool_command("import_sunnybrook", "--src", source, "--out", out), log)
    if not (out / "folds").is_dir():
        run(tool_command("make_folds", out, "--validation", "0"), log)
    if not (out / ALL_STUDIES).is_file():
        studies = json.loads((out / "datalist.json").read_text())["test"]
        write_json_atomic({"training": studies, "validation": studies, "test": []}, out / ALL_STUDIES)
    return [f"folds/{path.name}" for path in sorted((out / "folds").glob("fold*.json"))]


def in_sample_split(real: Path, fold: str) -> str:
    """Write ``in_sample/<fold's file name>`` in ``real``: a split file whose test split is the fold's training
    studies, so that ``evaluate`` scores the fold's model on what it trained on. Returns its path relative to
    ``real``."""
    studies = json.loads((real / fold).read_text())["training"]
    name = f"in_sample/{Path(fold).name}"
    (real / name).parent.mkdir(exist_ok=True)
    write_json_atomic({"training": [], "validation": [], "test": studies}, real / name)
    return name


def segmentation_model(out: Path, task: str, epochs: int) -> Path:
    """The last epoch's checkpoint of a fine-tuning: with a handful of real studies, the synthetic validation
    subjects that pick ``model.pt`` say nothing of real scans, so the recipe takes the epochs it states."""
    return out / task / "models" / f"checkpoint_epoch={epochs}.pt"


def train_segmentation(configs: list[str], task: str, settings: dict, common: dict, resume: bool, log: Path) -> Path:
    """One fine-tuning (skipped when ``resume`` and finished); returns its last epoch's checkpoint."""
    epochs = settings["max_epochs"]
    if not (resume and finished(common["output_dir"] / task, epochs)):
        run(bundle_command(configs, task=task, **settings, **common), log)
    return segmentation_model(common["output_dir"], task, epochs)


def train_refiner(
    network: Path, task: str, settings: dict, common: dict, resume: bool, log: Path, configs: list[str] = REFINE
) -> Path:
    """The full-resolution refiner trained on ``network`` (everything else fixed; skipped when ``resume`` and
    written) with ``configs`` (``SYNTHETIC_REFINE``: on the synthetic cohort alone); returns the refined network."""
    refined = common["output_dir"] / task / "models" / "model.pt"
    if not (resume and refined.is_file()):
        run(bundle_command(configs, task=task, pretrained_ckpt=network, **settings, **common), log)
    return refined


def fit_heads(segmentation: Path, settings: dict, common: dict, resume: bool, log: Path) -> Path:
    """The phenotype and measure heads on the (float16-rounded, as shipped) segmentation model, encoder frozen; the
    rounded model is written in the work's output folder (never beside a ``--synthetic-model`` given from elsewhere)."""
    task, epochs = "finetune_phenotypes", settings["max_epochs"]
    if not (resume and finished(common["output_dir"] / task, epochs)):
        rounded = shipped_precision(segmentation, common["output_dir"] / "segmentation_float16.pt")
        run(bundle_command(PHENOTYPES, task=task, pretrained_ckpt=rounded, **settings, **common), log)
    return common["output_dir"] / task / "models" / "model.pt"


def sunnybrook_scores(metrics: dict) -> dict:
    """The real-scan numbers of one model's evaluation: Dice over all labelled voxels as written, and at the
    labelled ED and ES (per study in ``per_subject``)."""
    (model,) = metrics["models"].values()
    return {
        "dice_as_written": model["dice_input_planes"].get("all"),
        "labelled_phases": model["labelled_phases"],
        "per_subject": [
            {
                "subject": s["subject"],
                "dice_as_written": s["dice_input_planes"],
                "labelled_phases": s["labelled_phases"],
            }
            for s in model["per_subject"]
        ],
    }


def synthetic_scores(metrics: dict) -> dict:
    """The held-out synthetic numbers of one model's evaluation: Dice per class over all planes and frames, and how
    its LV volume curve follows the true one (every frame is labelled: correlation, |LVEF error|, ED and ES frames)."""
    (model,) = metrics["models"].values()
    phases = model["labelled_phases"] or {}
    curve_keys = ("lv_curve_correlation", "lvef_abs_error", "ed_frame_difference", "es_frame_difference")
    return {"dice": model["dice"].get("all"), "lv_curve": {key: phases.get(key) for key in curve_keys}}


def contoured_real_dice(scores: list[dict]) -> float:
    """Mean over the scored studies (held out, or trained on for ``in_sample``) of :func:`sunnybrook_scores`: the mean
    of the LV blood pool Dice at the contoured ED and ES and the myocardium Dice at ED, each over the whole of the
    contoured slices (where a study is contoured at two or more frames; else its LV blood pool and myocardium Dice as
    written). On the held-out studies, the one number by which the recipe chooses what ships: the Dice as written
    leaves out the unlabelled band around an end-systolic endocardium drawn alone, so it cannot see an LV spilling
    into it."""
    values = []
    for score in scores:
        for study in score["per_subject"]:
            phases = study["labelled_phases"]
            at_phases = [] if phases is None else [phases["dice_ed"]["LVBP"], phases["dice_es"]["LVBP"]]
            at_phases += [] if phases is None else [phases["dice_ed"]["LVMYO"]]
            at_phases = [value for value in at_phases if value is not None]
            if at_phases:
                values.append(sum(at_phases) / len(at_phases))
            else:
                values.append((study["dice_as_written"]["LVBP"] + study["dice_as_written"]["LVMYO"]) / 2)
    return float(sum(values) / len(values))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    origin = parser.add_mutually_exclusive_group(required=True)
    origin.add_argument("--start", type=Path, help="segmentation model trained on the classic cohort")
    origin.add_argument(
        "--synthetic-model",
        type=Path,
        help="the synthetic-only model of step 2, already made (e.g. the 0.15.0 shipped weights): step 2 is skipped",
    )
    parser.add_argument("--work-dir", type=Path, default=REPO / "runs" / "real_scans", help="data, models, reports")
    parser.add_argument("--sunnybrook", type=Path, default=REPO.parent / "shared" / "data" / "sunnybrook")
    parser.add_argument("--workers", type=int, default=2, help="processes synthesising the cohorts")
    parser.add_argument("--resume", action="store_true", help="keep finished cohorts and trainings")
    parser.add_argument("--install-weights", action="store_true", help="ship the final model as models/model.pt")
    parser.add_argument(
        "--in-plane-axes",
        choices=("stored", "patient"),
        help="train and score every sample on these in-plane axes (the configs' in_plane_axes; default: theirs)",
    )
    args = parser.parse_args(argv)
    recipes = load_recipes()
    recipe = recipes["real_scans"]
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    log, out = work / "train_real_scans.log", work / "outputs"
    wide, real = work / "wide", work / "sunnybrook"
    cohort = recipe["cohort"]
    synthesize(wide, cohort["subjects"], cohort["seed"], args.workers, log, cohort["split"], variety="wide")
    folds = import_real_studies(args.sunnybrook.resolve(), real, log)
    common = {"dataset_dir": wide, "output_dir": out, "preset": recipes["preset"]}
    common["resume"] = str(args.resume).lower()
    segmenting = dict(recipe["segmenting"])
    if args.in_plane_axes is not None:
        common["in_plane_axes"] = segmenting["in_plane_axes"] = args.in_plane_axes
    if args.start is not None:
        start = args.start.resolve()
        synthetic = train_segmentation(
            SEGMENTATION, "synthetic", {"pretrained_ckpt": start, **recipe["synthetic"]}, common, args.resume, log
        )
    else:
        start = synthetic = args.synthetic_model.resolve()
    synthetic_refined = train_refiner(
        synthetic, "synthetic_refined", recipe["refine"], common, args.resume, log, SYNTHETIC_REFINE
    )
    real_settings = {"pretrained_ckpt": synthetic, "real_dataset_dir": real, **recipe["real"]}
    refine_settings = {"real_dataset_dir": real, **recipe["refine"]}
    fold_models = [
        train_refiner(
            train_segmentation(
                REAL_SEGMENTATION, f"real_fold{k}", {**real_settings, "real_datalist": fold}, common, args.resume, log
            ),
            f"real_fold{k}_refined", {**refine_settings, "real_datalist": fold}, common, args.resume, log,
        )
        for k, fold in enumerate(folds)
    ]  # fmt: skip
    preset = common["preset"]
    evaluations = work / "evaluation"
    summary: dict = {
        "zero_shot": sunnybrook_scores(
            evaluate(synthetic_refined, None, evaluations / "zero_shot", real, real, log, preset=preset, **segmenting)
        ),
        "leave_one_out": [
            sunnybrook_scores(
                evaluate(
                    model, None, evaluations / f"fold{k}", real, real, log, preset=preset, datalist=fold, **segmenting
                )
            )
            for k, (model, fold) in enumerate(zip(fold_models, folds))
        ],
    }
    summary["in_sample"] = [
        sunnybrook_scores(
            evaluate(
                model, None, evaluations / f"fold{k}_in_sample", real, real, log, preset=preset,
                datalist=in_sample_split(real, fold), **segmenting,
            )
        )
        for k, (model, fold) in enumerate(zip(fold_models, folds))
    ]  # fmt: skip
    summary["held_out_real_dice"] = {
        "synthetic_only": contoured_real_dice([summary["zero_shot"]]),
        "with_real_studies": contoured_real_dice(summary["leave_one_out"]),
    }
    # the same measure on the folds' own training studies: a network that cannot fit them cannot carry them over
    summary["in_sample_real_dice"] = contoured_real_dice(summary["in_sample"])
    # the real studies join training only where leaving each out in turn shows they help the one left out
    if summary["held_out_real_dice"]["with_real_studies"] > summary["held_out_real_dice"]["synthetic_only"]:
        summary["shipped"] = "with_real_studies"
        settings = {**real_settings, "real_datalist": ALL_STUDIES}
        segmentation = train_segmentation(REAL_SEGMENTATION, "real", settings, common, args.resume, log)
        refine_all = {**refine_settings, "real_datalist": ALL_STUDIES}
        segmentation = train_refiner(segmentation, "real_refined", refine_all, common, args.resume, log)
    else:
        summary["shipped"] = "synthetic_only"
        segmentation = synthetic_refined
    print(
        f"shipped segmentation: {summary['shipped']} ({summary['held_out_real_dice']}; the folds on their own "
        f"training studies: {summary['in_sample_real_dice']:.3f})",
        flush=True,
    )
    final = fit_heads(segmentation, recipe["phenotypes"], common, args.resume, log)
    for name, held_out in recipe["held_out"].items():
        test_data = work / f"held_out_{name}"
        synthesize(test_data, held_out["subjects"], held_out["seed"], args.workers, log, "0,0,1", held_out["variety"])
        summary[f"held_out_{name}"] = {
            model: synthetic_scores(
                evaluate(
                    checkpoint, None, evaluations / f"held_out_{name}_{model}", test_data, wide, log, preset=preset,
                    **segmenting,
                )
            )
            for model, checkpoint in (("final", final), ("start", start))
        }  # fmt: skip
    write_json_atomic(summary, work / "summary.json")
    print(json.dumps(summary["zero_shot"]["labelled_phases"]))
    print(f"summary: {work / 'summary.json'}")
    if args.install_weights:
        install_weights(final, SHIPPED_WEIGHTS)


if __name__ == "__main__":
    main()
