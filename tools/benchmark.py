"""Benchmark the machine, the network and the data layer; print a table and write the numbers as JSON.

Usage: ``python -m tools.benchmark [--preset small] [--quick] [--device cpu|cuda] [--repeats N] [--threads N]
[--subject DIR] [--out results.json]``

What is measured (batch of one subject, the configs' ``batch_size``):

- **peak**: best dense matmul throughput of this machine, now, with the threads torch uses: fp32 and bf16
  (``n x n @ n x n``, 2 n^3 FLOP, best of several, sampled before and after the network runs). It is the roof the
  network numbers are compared with.
- **network** at the preset, on 9 planes x 50 frames x 128 x 128 (``tiny``: 9 x 10 x 32 x 32, its test geometry),
  under the project's own precision (:func:`scripts.precision.autocast_context`: bf16 autocast where the device computes
  bf16 natively, else fp32):
  MAE pretraining step (forward + backward, 70 % of tokens masked), segmentation training step (forward + loss +
  backward) decoding ``decoded_planes`` planes (3, read from ``finetune_segmentation.yaml``) with every frame, the
  same with the full-resolution stage and the loss on ``decoded_frames`` evenly spread frames (10, as training runs
  it; ``tiny``: 5 of its 10), and all 9 planes, and inference (segmentation forward, no grad). Median seconds per
  subject over the repeats, after warm-up.
- **data**: one synthetic subject (or ``--subject DIR``) through :class:`scripts.canonical.LoadCineSubjectd`:
  from NIfTI without a cache (cold), the first load that also writes the cache, and from the cache (warm).
- **subject inference**: the same subject segmented the way the ``inference`` workflow does it
  (:meth:`scripts.subject_segmenter.SubjectSegmenter.segment`: files read, canonical sample, one pass per group of SA
  slices until every slice is covered, all again for each test-time shift of ``inference.yaml``'s
  ``centre_shifts_px``, labels written back onto each input plane's grid; NIfTI output not included), and the same
  without the shifts (one pass per group), with the shipped weights (``bundle/models/model.pt``) at ``small``,
  random ones at other presets. The network's cost does not depend on the weights, the write-back's does: it blends
  class probabilities only between canonical pixels of different classes, a few percent of them with trained
  weights and most with random ones.

How to read the ratios (``of peak`` = achieved / peak, achieved = counted FLOPs / median seconds):

- FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on one real step (forward and backward counted
  separately; backward is ~2x forward), 2 FLOPs per multiply-add. Only matmuls, convolutions (incl. transposed)
  and attention are counted (CPU fused attention with torch's CUDA formulas, which its counter lacks for CPU);
  norms, activations, softmax, the loss, gradient zeroing, gathers/scatters and memory traffic cost time but no
  FLOPs, so the ratio is a lower bound on how busy the arithmetic units are.
- The reference peak is the bf16 one when autocast is on, else fp32. Parts that run in fp32 under autocast (the
  token-grid convolutions of the segmentation decoder, the loss) are held to the bf16 roof too.
- The transformer matmuls (MAE step, encoder) are the part that can approach the peak; 3D convolutions with few
  channels (8-32 at full resolution in the segmentation decoder) are limited by memory bandwidth and oneDNN's
  per-call overhead and reach a small fraction of it. A low segmentation ratio means "bandwidth bound", not
  "broken"; compare ratios between runs of the same preset and machine rather than with 1.
- ``tiny`` is dominated by Python and per-op overhead: its ratios say nothing about the real model.
- The peak and the steps are measured at different moments: another process sharing the cores (see ``load
  average``) lowers both, not always equally; ratios slightly above 1 are measurement noise, not magic.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from scripts.canonical import LoadCineSubjectd, parse_geometry
from scripts.files import write_json_atomic
from scripts.labels import NUM_CLASSES
from scripts.losses import segmentation_loss
from scripts.precision import autocast_context
from scripts.presets import PRESETS, build_network, preset_grid
from scripts.subject_segmenter import SubjectSegmenter
from scripts.synthetic import synthesize_cohort
from scripts.weights import load_network_weights
from tools import BUNDLE

SCHEMA_VERSION = 1
NUM_PLANES = 9  # 6 SA slices + 3 LA views
# what a segmentation training step decodes, as the config trains it (planes per step, frames per decoded plane)
SEGMENTATION_CONFIG = BUNDLE / "configs" / "finetune_segmentation.yaml"
# the test-time shifts inference runs (``centre_shifts_px``)
INFERENCE_CONFIG = BUNDLE / "configs" / "inference.yaml"
SHIPPED_WEIGHTS = {"small": BUNDLE / "models" / "model.pt"}


@dataclass
class Settings:
    """How hard to measure: matmul size n, warm-up and timed repeats per measurement."""

    matmul_size: int
    matmul_repeats: int
    warmup: int
    repeats: int


@dataclass
class Workload:
    """One network measurement: ``forward()`` returns the loss (``train``) or the output (inference)."""

    name: str
    network: torch.nn.Module
    forward: Callable[[], torch.Tensor]
    train: bool


# --------------------------------------------------------------------------------------------------
# Timing and FLOP counting
# --------------------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    """Wait for queued device work (CUDA kernels are asynchronous); no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Seconds per call of ``fn``, ``repeats`` timings after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of CPU fused attention (torch counts the CUDA kernels only): QK^T and AV, mask ignored."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_attention_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kw):
    """FLOPs of the CPU fused attention backward (the four gradient matmuls, as torch counts them on CUDA)."""
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _extra_flop_formulas() -> dict[Any, Callable[..., int]]:
    """FlopCounterMode ``custom_mapping`` for ops it does not know (CPU flash attention)."""
    aten = torch.ops.aten
    mapping: dict[Any, Callable[..., int]] = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_attention_flops
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _cpu_attention_backward_flops
    return mapping


def flop_counter() -> FlopCounterMode:
    """A silent FLOP counter that also knows CPU attention."""
    return FlopCounterMode(display=False, custom_mapping=_extra_flop_formulas())


# --------------------------------------------------------------------------------------------------
# Machine peak
# --------------------------------------------------------------------------------------------------
def matmul_tflops(device: torch.device, dtype: torch.dtype, size: int, repeats: int) -> float:
    """Best dense ``size^3`` matmul throughput in TFLOP/s (2 * size^3 FLOP per product)."""
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, generator=generator).to(dtype)
    b = torch.randn(size, size, device=device, generator=generator).to(dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    seconds = time_calls(lambda: torch.mm(a, b, out=out), device, warmup=1, repeats=repeats)
    return 2.0 * size**3 / min(seconds) / 1e12


def measure_peak(device: torch.device, settings: Settings) -> dict[str, float]:
    """fp32 and bf16 matmul peaks in TFLOP/s."""
    size, repeats = settings.matmul_size, settings.matmul_repeats
    return {
        "fp32_tflops": matmul_tflops(device, torch.float32, size, repeats),
        "bf16_tflops": matmul_tflops(device, torch.bfloat16, size, repeats),
    }


def combine_peaks(samples: Sequence[dict[str, float]], settings: Settings) -> dict[str, Any]:
    """The best of peak samples taken at different moments (a busy moment of another process lowers one sample)."""
    peak: dict[str, Any] = {"matmul_size": settings.matmul_size, "threads": torch.get_num_threads()}
    for key in samples[0]:
        peak[key] = max(sample[key] for sample in samples)
        peak[f"{key}_samples"] = [sample[key] for sample in samples]
    return peak


# --------------------------------------------------------------------------------------------------
# Network
# --------------------------------------------------------------------------------------------------
def precision_name(device: torch.device) -> str:
    """``"bf16"`` when the project's :func:`autocast_context` autocasts on ``device``, else ``"fp32"``."""
    context = autocast_context(device)
    return "bf16" if getattr(context, "fast_dtype", None) == torch.bfloat16 else "fp32"


def geometry(preset: str) -> tuple[int, int, int, int]:
    """Benchmark input (P, T, H, W): 9 x 50 x 128 x 128, or the tiny preset's test geometry 9 x 10 x 32 x 32."""
    grid = preset_grid(preset)
    return NUM_PLANES, grid.num_frames, grid.crop_size, grid.crop_size


def synthetic_batch(shape: Sequence[int], device: torch.device) -> dict[str, torch.Tensor]:
    """One canonical subject (batch 1) with random intensities in [0, 1], random labels and every plane present."""
    generator = torch.Generator().manual_seed(0)
    planes, frames, height, width = shape
    image = torch.rand(1, 1, planes, frames, height, width, generator=generator)
    label = torch.randint(0, NUM_CLASSES, image.shape, generator=generator, dtype=torch.uint8)
    return {
        "image": image.to(device),
        "label": label.to(device),
        "plane_mask": torch.ones(1, planes, dtype=torch.bool, device=device),
        "class_mask": torch.ones(1, NUM_CLASSES, dtype=torch.bool, device=device),
    }


def spread_ids(size: int, count: int, device: torch.device) -> torch.Tensor | None:
    """``count`` evenly spread indices (long) of ``size`` planes or frames, or None for all of them."""
    if count <= 0 or count >= size:
        return None
    return torch.linspace(0, size - 1, count, device=device).round().long()


def build_workloads(preset: str, shape: Sequence[int], device: torch.device) -> list[Workload]:
    """MAE step, segmentation steps (the config's planes with all frames and with its frames; all planes), inference."""
    planes, frames, height, _ = shape
    batch = synthetic_batch(shape, device)
    image, plane_mask = batch["image"], batch["plane_mask"]
    size = dict(num_planes=planes, num_frames=frames, image_size=height)
    torch.manual_seed(0)
    mae = build_network("mae", preset, **size).to(device)
    heart = build_network("heart", preset, **size).to(device)

    def segmentation(count: int, frame_count: int = 0) -> Callable[[], torch.Tensor]:
        decode, decode_frames = spread_ids(planes, count, device), spread_ids(frames, frame_count, device)
        label = batch["label"] if decode is None else batch["label"][:, :, decode]
        label = label if decode_frames is None else label[:, :, :, decode_frames]

        def forward() -> torch.Tensor:
            return segmentation_loss(heart(image, plane_mask, decode, decode_frames), label, batch["class_mask"])

        return forward

    config = yaml.safe_load(SEGMENTATION_CONFIG.read_text())
    decoded_planes = config["decoded_planes"]
    decoded_frames = min(config["decoded_frames"], frames // 2)  # the same share of tiny's 10 frames: 5

    return [
        Workload("mae_step", mae, lambda: mae(image, plane_mask)["loss"], train=True),
        Workload(f"seg_step_{decoded_planes}_planes", heart, segmentation(decoded_planes), train=True),
        Workload(
            f"seg_step_{decoded_planes}_planes_{decoded_frames}_frames",
            heart,
            segmentation(decoded_planes, decoded_frames),
            train=True,
        ),
        Workload(f"seg_step_{planes}_planes", heart, segmentation(planes), train=True),
        Workload("inference", heart, lambda: heart(image, plane_mask), train=False),
    ]


def run_workload(workload: Workload, device: torch.device) -> None:
    """One training step (zero grads, forward under autocast, backward) or one no-grad forward."""
    workload.network.train(workload.train)
    if workload.train:
        workload.network.zero_grad(set_to_none=True)
        with autocast_context(device):
            loss = workload.forward()
        loss.backward()
    else:
        with torch.no_grad(), autocast_context(device):
            workload.forward()


def count_workload_flops(workload: Workload, device: torch.device) -> tuple[int, int]:
    """(forward FLOPs, backward FLOPs) of one call; backward is 0 for inference."""
    workload.network.train(workload.train)
    workload.network.zero_grad(set_to_none=True)
    grad = torch.enable_grad() if workload.train else torch.no_grad()
    with grad, flop_counter() as forward_counter, autocast_context(device):
        output = workload.forward()
    if not workload.train:
        return forward_counter.get_total_flops(), 0
    with flop_counter() as backward_counter:
        output.backward()
    workload.network.zero_grad(set_to_none=True)
    return forward_counter.get_total_flops(), backward_counter.get_total_flops()


def measure_workload(workload: Workload, device: torch.device, settings: Settings) -> dict[str, Any]:
    """Seconds per subject (median, min), subjects/hour, counted GFLOP and achieved TFLOP/s."""
    forward_flops, backward_flops = count_workload_flops(workload, device)
    seconds = time_calls(lambda: run_workload(workload, device), device, settings.warmup, settings.repeats)
    median = statistics.median(seconds)
    total = forward_flops + backward_flops
    achieved = total / median / 1e12
    return {
        "seconds_per_subject": median,
        "seconds_min": min(seconds),
        "subjects_per_hour": 3600.0 / median,
        "forward_gflop": forward_flops / 1e9,
        "backward_gflop": backward_flops / 1e9,
        "total_gflop": total / 1e9,
        "achieved_tflops": achieved,
        "repeats": len(seconds),
    }


def measure_network(preset: str, device: torch.device, settings: Settings) -> dict[str, Any]:
    """Every workload of :func:`build_workloads` at the project's precision."""
    shape = geometry(preset)
    results = {}
    for workload in build_workloads(preset, shape, device):
        results[workload.name] = measure_workload(workload, device, settings)
    return {"preset": preset, "geometry": list(shape), "precision": precision_name(device), "workloads": results}


def add_peak_ratios(network: dict[str, Any], peak: dict[str, Any]) -> None:
    """Set ``reference_peak_tflops`` (peak of the network's precision) and every workload's ``peak_ratio``."""
    reference = peak[f"{network['precision']}_tflops"]
    network["reference_peak_tflops"] = reference
    for workload in network["workloads"].values():
        workload["peak_ratio"] = workload["achieved_tflops"] / reference


# --------------------------------------------------------------------------------------------------
# Data layer
# --------------------------------------------------------------------------------------------------
def folder_mb(folder: Path, pattern: str = "*") -> float:
    """Total size of the files matching ``pattern`` in ``folder``, in MB (10^6 bytes)."""
    return sum(p.stat().st_size for p in folder.glob(pattern) if p.is_file()) / 1e6


def loader(preset: str, cache_dir: Path | None) -> LoadCineSubjectd:
    """The bundle's subject loader on the preset's canonical grid (as in inference.yaml)."""
    grid = preset_grid(preset)
    frames, size, spacing = grid.num_frames, grid.crop_size, grid.spacing_mm
    return LoadCineSubjectd(
        keys="subject",
        num_sa_slices=NUM_PLANES - 3,
        num_frames=frames,
        crop_size=size,
        spacing_mm=spacing,
        cache_dir=cache_dir,
    )


def benchmark_subject(preset: str, subject: Path | None, workdir: Path) -> Path:
    """The given subject folder, or one synthetic subject written under ``workdir``."""
    if subject is not None:
        return subject
    names = synthesize_cohort(workdir / "cohort", 1, seed=0, tiny=preset == "tiny")
    return workdir / "cohort" / names[0]


def measure_data(preset: str, settings: Settings, subject: Path, workdir: Path, name: str) -> dict[str, Any]:
    """ms per subject from NIfTI (cold), first cached load (build + write) and from the cache (warm); cache MB.
    ``name``: how the report names the subject."""
    item = {"subject": str(subject)}
    cold = time_calls(lambda: loader(preset, None)(item), torch.device("cpu"), settings.warmup, settings.repeats)
    cache_dir = workdir / "cache"
    cached = loader(preset, cache_dir)
    first = time_calls(lambda: cached(item), torch.device("cpu"), warmup=0, repeats=1)
    warm = time_calls(lambda: cached(item), torch.device("cpu"), settings.warmup, settings.repeats)
    grid = preset_grid(preset)
    return {
        "subject": name,
        "grid": {"frames": grid.num_frames, "crop_size": grid.crop_size, "spacing_mm": grid.spacing_mm},
        "nifti_mb_per_subject": folder_mb(subject),
        "cold_ms_per_subject": 1e3 * statistics.median(cold),
        "first_cached_ms_per_subject": 1e3 * first[0],
        "warm_ms_per_subject": 1e3 * statistics.median(warm),
        "cache_mb_per_subject": folder_mb(cache_dir, "*.npz"),
        "repeats": len(cold),
    }


def measure_subject_inference(preset: str, device: torch.device, settings: Settings, subject: Path) -> dict[str, Any]:
    """Seconds to segment ``subject`` as the inference workflow does
    (:meth:`scripts.subject_segmenter.SubjectSegmenter.segment`)."""
    grid = preset_grid(preset)
    frames, size = grid.num_frames, grid.crop_size
    torch.manual_seed(0)
    network = build_network("heart", preset, num_planes=NUM_PLANES, num_frames=frames, image_size=size)
    weights = SHIPPED_WEIGHTS.get(preset)
    if weights is not None and weights.is_file():
        load_network_weights(network, weights)
    else:
        weights = None
    network = network.to(device).eval()
    load = loader(preset, None)
    item = {"subject": str(subject)}
    geometry = parse_geometry(load(item)["geometry"])
    shifts = yaml.safe_load(INFERENCE_CONFIG.read_text())["centre_shifts_px"]
    # the network passes are counted on the timed calls themselves (every pass goes through segment_and_embed)
    passes = []
    segment_and_embed = network.segment_and_embed
    network.segment_and_embed = lambda *args, **kwargs: passes.append(1) or segment_and_embed(*args, **kwargs)
    timed = {}
    for key, centre_shifts_px in (("shifted", shifts), ("one_pass", [])):
        passes.clear()
        segmenter = SubjectSegmenter(network, load, device, centre_shifts_px=centre_shifts_px)
        seconds = time_calls(lambda: segmenter.segment(item), device, settings.warmup, settings.repeats)
        calls = settings.warmup + len(seconds)
        if len(passes) % calls:
            raise RuntimeError(
                f"{len(passes)} network passes over {calls} calls: the segmentation is not deterministic"
            )
        timed[key] = (seconds, len(passes) // calls)
    (seconds, num_passes), (one_pass_seconds, one_pass_passes) = timed["shifted"], timed["one_pass"]
    return {
        "seconds_per_subject": statistics.median(seconds),
        "seconds_min": min(seconds),
        "sa_slices": geometry["sources"]["sa"]["shape"][2] if "sa" in geometry["sources"] else 0,
        "centre_shifts_px": shifts,
        "network_passes": num_passes,
        "seconds_per_subject_one_pass": statistics.median(one_pass_seconds),
        "network_passes_one_pass": one_pass_passes,
        "repeats": len(seconds),
        "weights": str(weights) if weights else "random",
    }


# --------------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------------
def machine_info(device: torch.device) -> dict[str, Any]:
    """Versions, device name, CPU count and the 1-minute load average (other processes sharing the cores)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def format_table(results: dict[str, Any]) -> str:
    """Human-readable summary of :func:`run_benchmark`'s results."""
    meta, peak, net, data = results["meta"], results["peak"], results["network"], results["data"]
    n = peak["matmul_size"]
    lines = [
        f"machine: {meta['device']} ({meta['device_name']}), {peak['threads']} threads, torch {meta['torch']}, "
        f"load average {meta['load_average_1min']}",
        f"peak matmul {n}^3: fp32 {peak['fp32_tflops']:.3f} TFLOP/s, bf16 {peak['bf16_tflops']:.3f} TFLOP/s",
        f"network: preset {net['preset']}, {' x '.join(map(str, net['geometry']))} (P x T x H x W), "
        f"precision {net['precision']} (ratios against the {net['precision']} peak)",
        f"{'workload':<28}{'s/subject':>11}{'subjects/h':>12}{'fwd GFLOP':>11}{'step GFLOP':>12}"
        f"{'TFLOP/s':>10}{'of peak':>9}",
    ]
    for name, w in net["workloads"].items():
        lines.append(
            f"{name:<28}{w['seconds_per_subject']:>11.4f}{w['subjects_per_hour']:>12.0f}{w['forward_gflop']:>11.2f}"
            f"{w['total_gflop']:>12.2f}{w['achieved_tflops']:>10.4f}{w['peak_ratio']:>9.1%}"
        )
    grid = data["grid"]
    lines += [
        f"data layer ({data['subject']}, grid {grid['frames']} frames x {grid['crop_size']} px at "
        f"{grid['spacing_mm']} mm; NIfTI {data['nifti_mb_per_subject']:.2f} MB):",
        f"  cold from NIfTI {data['cold_ms_per_subject']:.1f} ms, first cached load (build + write) "
        f"{data['first_cached_ms_per_subject']:.1f} ms, warm from cache {data['warm_ms_per_subject']:.1f} ms, "
        f"cache {data['cache_mb_per_subject']:.2f} MB per subject",
    ]
    inference = results["subject_inference"]
    lines.append(
        f"subject inference (files read, {inference['network_passes']} network passes for its "
        f"{inference['sa_slices']} SA slices and {len(inference['centre_shifts_px'])} test-time shifts, labels back on "
        f"every input plane; {Path(inference['weights']).name} weights): "
        f"{inference['seconds_per_subject']:.2f} s per subject; without the shifts "
        f"({inference['network_passes_one_pass']} passes) {inference['seconds_per_subject_one_pass']:.2f} s"
    )
    load, cpus = meta["load_average_1min"], meta["cpu_count"] or 1
    if load is not None and load > 0.5 * cpus:
        lines.append(
            f"warning: load average {load:.1f} on {cpus} CPUs before the run: other processes share the cores, "
            "so timings are pessimistic and noisy (see seconds_min in the JSON)"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """Command-line interface."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None, help="default small, tiny with --quick")
    parser.add_argument("--quick", action="store_true", help="tiny preset, 512^3 matmuls, few repeats (seconds)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--subject", type=Path, default=None, help="subject folder for the data layer")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    return parser


def settings_for(args: argparse.Namespace, device: torch.device) -> Settings:
    """Measurement effort from ``--quick`` / ``--repeats`` and the device."""
    if args.quick:
        settings = Settings(matmul_size=512, matmul_repeats=10, warmup=1, repeats=2)
    else:
        settings = Settings(matmul_size=4096 if device.type == "cuda" else 2048, matmul_repeats=5, warmup=2, repeats=5)
    if args.repeats is not None:
        settings.repeats = max(1, args.repeats)
    return settings


def run_benchmark(preset: str, device: torch.device, settings: Settings, subject: Path | None) -> dict[str, Any]:
    """Peak, network and data measurements as one JSON-ready dict."""
    meta = {**machine_info(device), "preset": preset, "settings": asdict(settings)}
    phases: dict[str, float] = {}
    start = time.perf_counter()

    def lap(name: str) -> None:
        phases[name] = time.perf_counter() - start - sum(phases.values())

    peak_before = measure_peak(device, settings)
    lap("peak_before")
    network = measure_network(preset, device, settings)
    lap("network")
    peak = combine_peaks([peak_before, measure_peak(device, settings)], settings)
    add_peak_ratios(network, peak)
    lap("peak_after")
    with tempfile.TemporaryDirectory(prefix="benchmark-") as tmp:
        name = "synthetic" if subject is None else str(subject)
        subject = benchmark_subject(preset, subject, Path(tmp))
        data = measure_data(preset, settings, subject, Path(tmp), name)
        lap("data")
        inference = measure_subject_inference(preset, device, settings, subject)
        lap("subject_inference")
    meta["phase_seconds"] = phases
    return {
        "schema": SCHEMA_VERSION,
        "meta": meta,
        "peak": peak,
        "network": network,
        "data": data,
        "subject_inference": inference,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table and write the JSON."""
    args = build_parser().parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    preset = args.preset or ("tiny" if args.quick else "small")
    results = run_benchmark(preset, device, settings_for(args, device), args.subject)
    print(format_table(results))
    if args.out is not None:
        write_json_atomic(results, args.out)
        print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
