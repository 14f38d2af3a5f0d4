"""The benchmark CLI at its smallest setting: it runs, prints its table and writes well-formed JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKLOADS = {"mae_step", "seg_step_3_planes", "seg_step_3_planes_5_frames", "seg_step_9_planes", "inference"}


def test_quick_benchmark_writes_json(tmp_path: Path) -> None:
    """``python -m tools.benchmark --quick --out tmp.json``: structure and plausible ratios (no timing asserts)."""
    out = tmp_path / "tmp.json"
    command = [sys.executable, "-m", "tools.benchmark", "--quick", "--out", str(out)]
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "of peak" in proc.stdout and "warm from cache" in proc.stdout

    results = json.loads(out.read_text())
    assert set(results) >= {"schema", "meta", "peak", "network", "data", "subject_inference"}
    assert not list(tmp_path.glob(".tmp.json.*"))  # the atomic write left no temporary file

    peak = results["peak"]
    assert peak["fp32_tflops"] > 0 and peak["bf16_tflops"] > 0 and peak["threads"] >= 1

    network = results["network"]
    assert network["preset"] == "tiny" and network["geometry"] == [9, 10, 32, 32]
    assert network["precision"] in ("bf16", "fp32")
    assert network["reference_peak_tflops"] == peak[f"{network['precision']}_tflops"]
    assert set(network["workloads"]) == WORKLOADS
    for name, workload in network["workloads"].items():
        assert workload["seconds_per_subject"] > 0 and workload["subjects_per_hour"] > 0, name
        assert workload["forward_gflop"] > 0 and workload["achieved_tflops"] > 0, name
        assert (workload["backward_gflop"] > 0) == (name != "inference"), name
        assert 0 < workload["peak_ratio"] <= 1.5, (name, workload["peak_ratio"])
    # decoding 3 of 9 planes, and then 5 of their 10 frames at full resolution, must count fewer FLOPs each time
    workloads = network["workloads"]
    assert workloads["seg_step_3_planes_5_frames"]["total_gflop"] < workloads["seg_step_3_planes"]["total_gflop"]
    assert workloads["seg_step_3_planes"]["total_gflop"] < workloads["seg_step_9_planes"]["total_gflop"]

    data = results["data"]
    assert data["subject"] == "synthetic"
    for key in ("cold_ms_per_subject", "first_cached_ms_per_subject", "warm_ms_per_subject", "cache_mb_per_subject"):
        assert data[key] > 0, key

    inference = results["subject_inference"]
    assert inference["seconds_per_subject"] > 0 and "s per subject" in proc.stdout
    # the synthetic subject's SA stack is longer than the canonical 6 slices: extra passes cover the rest
    one_pass = 1 + -(-(inference["sa_slices"] - 6) // 6)
    assert inference["sa_slices"] > 6 and inference["network_passes_one_pass"] == one_pass
    # each test-time shift of inference.yaml runs the canonical pass and the extra passes again
    assert inference["network_passes"] == one_pass * (1 + len(inference["centre_shifts_px"]))
    assert inference["seconds_per_subject_one_pass"] > 0
