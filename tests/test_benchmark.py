"""The benchmark's contract at its smallest preset: progress on stderr, a table and one JSON line per ``what`` on
stdout with every key of the right type, and the same records in ``--out`` (no timing asserts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WHATS = {
    "matmul_peak",
    "encoder_forward",
    "inference_network",
    "inference_end_to_end",
    "pretrain_step",
    "segmentation_step",
}
NETWORK_LINES = {"encoder_forward", "inference_network", "pretrain_step", "segmentation_step"}
#: the keys every line carries (others read them)
CONTRACT_KEYS = {
    "preset",
    "what",
    "device",
    "dtype",
    "seconds_per_subject",
    "tflop_per_subject",
    "achieved_tflops",
    "fraction_of_bf16_peak",
    "peak_rss_gb",
    "baseline_seconds_per_subject",
    "speedup_vs_baseline",
}
NUMBER_KEYS = ("seconds_per_subject", "tflop_per_subject", "baseline_seconds_per_subject", "speedup_vs_baseline")


def test_tiny_benchmark_prints_one_json_line_per_what(tmp_path: Path) -> None:
    """``python -m tools.benchmark --preset tiny --device cpu --out tmp.json`` through its command line."""
    out = tmp_path / "tmp.json"
    command = [sys.executable, "-m", "tools.benchmark", "--preset", "tiny", "--device", "cpu", "--out", str(out)]
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[1/8] matmul_peak" in proc.stderr and "timed" in proc.stderr, "progress goes to stderr"
    assert "of bf16" in proc.stdout and "warm from cache" in proc.stdout

    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert {r["what"] for r in records} == WHATS and len(records) == len(WHATS), "exactly one line per what"
    for record in records:
        what = record["what"]
        assert CONTRACT_KEYS <= set(record), (what, CONTRACT_KEYS - set(record))
        assert record["preset"] == "tiny" and record["device"] == "cpu", what
        assert record["dtype"] in ("bfloat16", "float32"), what
        for key in ("achieved_tflops", "fraction_of_bf16_peak", "peak_rss_gb"):
            assert isinstance(record[key], float) and record[key] > 0, (what, key)
        assert 0 < record["fraction_of_bf16_peak"] <= 1, (what, record["fraction_of_bf16_peak"])
        for key in NUMBER_KEYS:
            assert record[key] is None or isinstance(record[key], float), (what, key)
        timed = what != "matmul_peak"
        assert (record["seconds_per_subject"] is not None) == timed, what
        assert (record["tflop_per_subject"] is not None) == timed, what
        if timed:
            assert record["seconds_per_subject"] > 0 and record["tflop_per_subject"] > 0, what
            assert record["timed_calls"] >= 1 and record["untimed_calls"] >= 1, what
        has_baseline = what in NETWORK_LINES
        assert (record["baseline_seconds_per_subject"] is not None) == has_baseline, what
        assert (record["speedup_vs_baseline"] is not None) == has_baseline, what
        if has_baseline:
            assert record["baseline_seconds_per_subject"] > 0 and record["speedup_vs_baseline"] > 0, what
    by_what = {r["what"]: r for r in records}
    assert by_what["matmul_peak"]["fraction_of_bf16_peak"] == 1.0
    # the whole network does more than its encoder, and the subject's passes run it at least once
    assert by_what["inference_network"]["tflop_per_subject"] > by_what["encoder_forward"]["tflop_per_subject"]
    assert by_what["inference_end_to_end"]["tflop_per_subject"] >= by_what["inference_network"]["tflop_per_subject"]

    results = json.loads(out.read_text())
    assert results["records"] == records
    # the end-to-end subject is the one of the line's definition: 9 planes, which one network pass covers
    assert results["meta"]["network_passes"] == 1
    assert "end to end: 1 network pass," in proc.stdout
    assert not list(tmp_path.glob(".tmp.json.*"))  # the atomic write left no temporary file
