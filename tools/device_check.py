"""Run every workflow at ``tiny`` through ``python -m monai.bundle run``, then the benchmark at ``paper``: the check of
a machine (written for a CUDA one, where the whole takes under 10 minutes; it runs on a CPU too, slowly).

Usage: ``python -m tools.device_check OUT [--no-paper-benchmark] [--budget-s 570]``

Steps, each a subprocess with its own timeout, cut to what is left of ``--budget-s``: a tiny synthetic cohort
(``tools.synthesize --tiny``, 6 subjects), ``pretrain``, ``finetune_segmentation``, ``finetune_phenotypes`` (one
epoch each, as the tests run them), ``inference`` on one test subject and ``evaluate`` on the cohort with the
fine-tuned model, then ``tools.benchmark --preset paper`` (``--no-paper-benchmark``: at ``tiny``, for a CPU). Writes
under OUT: ``<step>.log`` (stdout and stderr of each step), ``benchmark.jsonl`` (the benchmark's JSON lines),
``benchmark.json`` and ``summary.json`` (each step's status, exit code and seconds); exits 1 if a step failed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from tools import BUNDLE, REPO

TRAIN = ["configs/inference.yaml", "configs/train.yaml"]
#: seconds each step may take on a CUDA machine (startup and the CPU-side data work dominate at ``tiny``)
STEP_TIMEOUTS_S = {
    "synthesize": 60,
    "pretrain": 60,
    "finetune_segmentation": 75,
    "finetune_phenotypes": 120,
    "inference": 60,
    "evaluate": 90,
    "benchmark": 240,
}


def bundle_command(configs: list[str], section: str = "run", **overrides: object) -> list[str]:
    """``python -m monai.bundle run <section> --config_file [...] --preset tiny --key value ...``, run from bundle/."""
    command = [sys.executable, "-m", "monai.bundle", "run", section, "--config_file", repr(configs)]
    for key, value in {"preset": "tiny", **overrides}.items():
        command += [f"--{key}", str(value)]
    return command


def plan(out: Path, paper_benchmark: bool) -> list[tuple[str, list[str], Path]]:
    """The steps: (name, command, working folder)."""
    cohort, trained = out / "cohort", out / "trained"
    model = trained / "finetune_phenotypes" / "models" / "model.pt"
    common = {"dataset_dir": cohort, "output_dir": trained, "max_epochs": 1}
    synthesize = [sys.executable, "-m", "tools.synthesize", "--out", str(cohort), "--subjects", "6", "--seed", "7",
                  "--tiny", "--split", "0.67,0.17,0.16"]  # fmt: skip
    benchmark = [sys.executable, "-m", "tools.benchmark", "--preset", "paper" if paper_benchmark else "tiny",
                 "--out", str(out / "benchmark.json")]  # fmt: skip
    return [
        ("synthesize", synthesize, REPO),
        ("pretrain", bundle_command(TRAIN + ["configs/pretrain.yaml"], **common), BUNDLE),
        # the full-resolution stage on 5 of the 10 tiny frames per step, as the recipe's 10 of 50
        ("finetune_segmentation", bundle_command(TRAIN + ["configs/finetune_segmentation.yaml"], decoded_frames=5,
                                                 **common), BUNDLE),  # fmt: skip
        ("finetune_phenotypes", bundle_command(TRAIN + ["configs/finetune_phenotypes.yaml"], measure_head_subjects=3,
                                               **common), BUNDLE),  # fmt: skip
        # the first subject of the test split (datalist.json is written by synthesize; read when the step runs)
        ("inference", bundle_command(["configs/inference.yaml"], dataset_dir="{test_subject}",
                                     output_dir=out / "inference", ckpt=model), BUNDLE),  # fmt: skip
        ("evaluate", bundle_command(["configs/inference.yaml", "configs/evaluate.yaml"], dataset_dir=cohort,
                                    output_dir=out / "evaluate", ckpt=model), BUNDLE),  # fmt: skip
        ("benchmark", benchmark, REPO),
    ]


def first_test_subject(cohort: Path) -> str:
    """The folder of the first subject of the cohort's test split."""
    datalist = json.loads((cohort / "datalist.json").read_text())
    return str(cohort / datalist["test"][0]["subject"])


def run_step(name: str, command: list[str], cwd: Path, timeout_s: float, log: Path) -> dict[str, object]:
    """Run one step with ``timeout_s``, its output in ``log``; its status ("ok", "failed", "timeout"), exit code
    and seconds."""
    print(f"{name}: up to {timeout_s:.0f} s, log {log}", flush=True)
    start = time.perf_counter()
    with log.open("w") as stream:
        try:
            code = subprocess.run(
                command, cwd=cwd, stdout=stream, stderr=subprocess.STDOUT, timeout=timeout_s
            ).returncode
            status = "ok" if code == 0 else "failed"
        except subprocess.TimeoutExpired:
            code, status = None, "timeout"
    seconds = time.perf_counter() - start
    print(f"{name}: {status} in {seconds:.0f} s", flush=True)
    return {"step": name, "status": status, "returncode": code, "seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    """Run the steps in order, stopping at the first that fails (the later ones need its output); 0 if all passed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output folder (logs, JSON lines, summary)")
    parser.add_argument("--no-paper-benchmark", action="store_true", help="benchmark at tiny instead (for a CPU)")
    parser.add_argument("--budget-s", type=float, default=570.0, help="seconds for all steps together")
    parser.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every step's timeout (slow CPU)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.perf_counter() + args.budget_s
    results = []
    for name, command, cwd in plan(out, not args.no_paper_benchmark):
        left = deadline - time.perf_counter()
        if left <= 0:
            results.append({"step": name, "status": "not run: budget spent", "returncode": None, "seconds": 0.0})
            break
        if name == "inference":
            command = [first_test_subject(out / "cohort") if part == "{test_subject}" else part for part in command]
        result = run_step(
            name, command, cwd, min(STEP_TIMEOUTS_S[name] * args.timeout_scale, left), out / f"{name}.log"
        )
        results.append(result)
        if result["status"] != "ok":
            break
    benchmark_log = out / "benchmark.log"
    if benchmark_log.is_file():
        lines = [line for line in benchmark_log.read_text().splitlines() if line.startswith("{")]
        (out / "benchmark.jsonl").write_text("".join(line + "\n" for line in lines))
    passed = len(results) == len(STEP_TIMEOUTS_S) and all(r["status"] == "ok" for r in results)
    summary = {"passed": passed, "budget_s": args.budget_s, "steps": results}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
