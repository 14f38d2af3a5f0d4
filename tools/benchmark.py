"""Benchmark the network and inference against this machine's bf16 matmul peak and an authors'-style baseline.

Usage: ``python -m tools.benchmark [--preset tiny|small|paper] [--device cpu|cuda] [--repeats N] [--threads N]
[--subject DIR] [--out results.json]``

Prints progress to stderr, a table to stdout, then one JSON object per line (stdout) per measured ``what``, with the
keys ``preset``, ``what``, ``device``, ``dtype``, ``seconds_per_subject``, ``tflop_per_subject``, ``achieved_tflops``,
``fraction_of_bf16_peak``, ``peak_rss_gb``, ``baseline_seconds_per_subject``, ``speedup_vs_baseline`` (null where a
key does not apply), then ``timed_calls``, ``seconds_timed``, ``untimed_calls``, ``peak_device_gb``. What is
measured, batch of one subject on 9 planes x 50 frames x 128 x 128 (``tiny``: 9 x 10 x 32 x 32), under the project's
precision (:func:`scripts.precision.autocast_context`: bf16 autocast where the device has native bf16, else fp32):

- ``matmul_peak``: best dense ``n x n @ n x n`` bf16 matmul throughput (2 n^3 FLOP), sampled before and after the rest;
  the roof of every ``fraction_of_bf16_peak`` (the fp32 peak is in the table).
- ``encoder_forward``: the encoder over every token, no grad.
- ``inference_network``: the segmentation network as inference builds it (encoder + decoder + refiner, every plane and
  frame), no grad.
- ``pretrain_step``: MAE step (forward + backward, 70 % of the tokens masked).
- ``segmentation_step``: segmentation training step (forward + loss + backward) decoding ``decoded_planes`` planes with
  the full-resolution stage on ``decoded_frames`` frames, as ``finetune_segmentation.yaml`` trains (``tiny``: 5 of 10).
- ``inference_end_to_end``: one synthetic subject of 9 planes (the middle 6 slices of its SA stack and the three
  long-axis views, no label files; or ``--subject``) through the inference workflow's own
  :class:`scripts.inference.CohortPredictor` built from ``inference.yaml`` at the preset, one pass
  (``centre_shifts_px: []``): files read, every plane and frame segmented (the extra SA passes included), labels
  written back onto every input plane, phenotypes, reports and tables written. Shipped weights at ``small``, random
  ones elsewhere (the network's cost does not depend on them).

Method: every item's first call runs under ``torch.utils.flop_counter.FlopCounterMode`` (untimed; it is also the first
warm-up), then untimed warm-ups and the timed calls; ``seconds_per_subject`` is their median. ``inference_end_to_end``
is counted here and timed in a fresh process after its warm-up runs there. ``paper`` on a CPU makes one counted, one
warm-up and two timed calls per network item. FLOPs: matmuls, convolutions and attention, 2 per multiply-add (CPU
fused attention with torch's CUDA formulas); norms, softmax, gathers and memory traffic cost time but no FLOPs, so
the fractions are lower bounds on how busy the arithmetic units are. ``peak_rss_gb`` is the process's peak resident
memory so far (:func:`peak_rss_gb`), so it never falls from one line to the next, except ``inference_end_to_end``'s:
the peak of its own process, what an inference process holds. ``peak_device_gb`` is the item's own peak of CUDA
memory (null on CPU).

Baseline (network lines): :mod:`tools.baseline_encoder`, the authors' implementation choices (fp32, explicit
``softmax(QK^T)V`` attention, width D + 1 with 5 heads at ``paper``, no fusion) at the preset's encoder depth, over
the same tokens as the line's encoder (+ a class token): forward for ``encoder_forward`` and ``inference_network``,
forward + backward for the steps. It stands for the encoder alone, so ``speedup_vs_baseline`` is exact for
``encoder_forward`` and a lower bound for the whole-network lines (their decoders are in our time, not in the
baseline's). ``tiny`` is dominated by per-op overhead: its numbers say nothing about the real model.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import math
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import nibabel as nib
import torch
import yaml
from monai.bundle import ConfigParser
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from scripts.canonical import LoadCineSubjectd
from scripts.files import write_json_atomic
from scripts.labels import NUM_CLASSES
from scripts.losses import segmentation_loss
from scripts.precision import autocast_context
from scripts.presets import PRESETS, build_network, preset_config, preset_grid
from scripts.synthetic import synthesize_cohort
from scripts.weights import load_network_weights
from tools import BUNDLE
from tools.baseline_encoder import build_baseline

SCHEMA_VERSION = 2
NUM_SA_SLICES = 6  # inference.yaml's num_sa_slices: what one network pass covers
NUM_PLANES = NUM_SA_SLICES + 3  # and the three long-axis views
#: the ``what`` of the JSON lines, in the order they are printed
WHATS = (
    "matmul_peak",
    "encoder_forward",
    "inference_network",
    "inference_end_to_end",
    "pretrain_step",
    "segmentation_step",
)
# what a segmentation training step decodes, as the config trains it (planes per step, frames per decoded plane)
SEGMENTATION_CONFIG = BUNDLE / "configs" / "finetune_segmentation.yaml"
INFERENCE_CONFIG = BUNDLE / "configs" / "inference.yaml"
SHIPPED_WEIGHTS = {"small": BUNDLE / "models" / "model.pt"}


@dataclass
class Settings:
    """How hard to measure: matmul size n and its repeats; untimed warm-ups after the FLOP-counting call and timed
    calls per network item; warm-up and timed runs of ``inference_end_to_end`` in its own process (whose first run
    would pay for starting it)."""

    matmul_size: int
    matmul_repeats: int
    warmup: int
    repeats: int
    subject_warmup: int
    subject_repeats: int


@dataclass
class Item:
    """One measured ``what``: FLOPs of one call, timed seconds per call, the baseline's, memory after it."""

    what: str
    dtype: str
    seconds: list[float] = field(default_factory=list)
    flops: int | None = None
    untimed_calls: int = 0
    baseline_seconds: list[float] | None = None
    peak_rss_gb: float = 0.0
    peak_device_gb: float | None = None


class Progress:
    """``[k/N] what: message (elapsed s)`` lines on stderr, so a long run shows where it is."""

    def __init__(self, total: int) -> None:
        self.total, self.step, self.start = total, 0, time.perf_counter()

    def next(self, what: str) -> Callable[[str], None]:
        """Start the next step; returns the function that reports within it."""
        self.step += 1
        step = self.step

        def report(message: str) -> None:
            elapsed = time.perf_counter() - self.start
            print(f"[{step}/{self.total}] {what}: {message} ({elapsed:.0f} s)", file=sys.stderr, flush=True)

        return report


# --------------------------------------------------------------------------------------------------
# Timing, FLOPs, memory
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


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far, GB (10^9 bytes).

    Linux's ``VmHWM`` where there is one: ``getrusage``'s maximum carries over from the parent into a spawned
    child (fork copies the parent's memory map, exec keeps its high-water mark), so it would report a child started
    by a large process as large."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``."""
    return str(dtype).removeprefix("torch.")


def compute_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the project's :func:`autocast_context` autocasts on ``device``, else fp32."""
    return getattr(autocast_context(device), "fast_dtype", torch.float32)


def measure_item(
    what: str,
    fn: Callable[[], Any],
    device: torch.device,
    warmup: int,
    repeats: int,
    report: Callable[[str], None],
) -> Item:
    """FLOPs of one call of ``fn`` (counted, untimed: also the first warm-up), then ``warmup`` untimed and
    ``repeats`` timed calls; the item's peak device memory on CUDA."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    report(f"call 1 of {1 + warmup + repeats}: counting FLOPs (untimed, warms up)")
    with flop_counter() as counter:
        fn()
    synchronize(device)
    for k in range(warmup):
        report(f"call {2 + k} of {1 + warmup + repeats}: warm-up (untimed)")
        fn()
    seconds = []
    for k in range(repeats):
        report(f"call {2 + warmup + k} of {1 + warmup + repeats}: timed")
        seconds += time_calls(fn, device, warmup=0, repeats=1)
    item = Item(what, dtype_name(compute_dtype(device)), seconds, counter.get_total_flops(), 1 + warmup)
    item.peak_rss_gb = peak_rss_gb()
    item.peak_device_gb = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
    return item


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


def training_step(network: torch.nn.Module, loss: Callable[[], torch.Tensor], device: torch.device) -> None:
    """One training step's compute: zero grads, ``loss()`` under the project's autocast, backward."""
    network.train()
    network.zero_grad(set_to_none=True)
    with autocast_context(device):
        value = loss()
    value.backward()


def no_grad_forward(network: torch.nn.Module, forward: Callable[[], Any], device: torch.device) -> None:
    """``forward()`` in eval mode, without grad, under the project's autocast."""
    network.eval()
    with torch.no_grad(), autocast_context(device):
        forward()


def segmentation_loss_call(
    heart: torch.nn.Module, batch: dict[str, torch.Tensor], planes: int, frames: int
) -> Callable[[], torch.Tensor]:
    """The segmentation training loss decoding ``planes`` evenly spread planes with the full-resolution stage on
    ``frames`` evenly spread frames (0: all), as ``SegmentationStep`` trains (the decoder's logits, not the
    refiner's)."""
    image, device = batch["image"], batch["image"].device
    decode = spread_ids(image.shape[2], planes, device)
    decode_frames = spread_ids(image.shape[3], frames, device)
    label = batch["label"] if decode is None else batch["label"][:, :, decode]
    label = label if decode_frames is None else label[:, :, :, decode_frames]

    def loss() -> torch.Tensor:
        logits = heart(image, batch["plane_mask"], decode, decode_frames, refine=False)
        return segmentation_loss(logits, label, batch["class_mask"])

    return loss


class Baseline:
    """The authors'-style encoder (:mod:`tools.baseline_encoder`) at the preset's encoder size over a given number of
    tokens, timed forward (no grad) or forward + backward, always in fp32."""

    def __init__(self, preset: str, num_tokens: int, device: torch.device) -> None:
        config = preset_config(preset)
        torch.manual_seed(0)
        self.encoder = build_baseline(
            config.patch_size, num_tokens, config.hidden_size, config.num_heads, config.num_layers
        ).to(device)
        patch_dim = self.encoder.patch_embed.in_features
        self.patches = torch.rand(1, num_tokens, patch_dim, device=device)
        self.num_tokens = num_tokens

    def forward(self) -> None:
        """Forward pass, no grad."""
        with torch.no_grad():
            self.encoder(self.patches)

    def step(self) -> None:
        """Forward and backward of a scalar of the output (the decoder's loss stands outside the baseline)."""
        self.encoder.zero_grad(set_to_none=True)
        self.encoder(self.patches).mean().backward()

    def describe(self) -> str:
        """Width, heads and layers, for the table."""
        block = self.encoder.blocks[0].attn
        heads = block.num_heads
        return f"width {block.proj.in_features}, {heads} head{'s' * (heads != 1)}, {len(self.encoder.blocks)} layers"


def time_baseline(
    fn: Callable[[], None], device: torch.device, settings: Settings, label: str, report: Callable[[str], None]
) -> list[float]:
    """Seconds per call of a baseline call: ``settings.warmup`` untimed calls and ``settings.repeats`` timed ones."""
    for k in range(settings.warmup):
        report(f"baseline {label}, warm-up {k + 1} of {settings.warmup} (untimed)")
        fn()
    seconds = []
    for k in range(settings.repeats):
        report(f"baseline {label}, timed {k + 1} of {settings.repeats}")
        seconds += time_calls(fn, device, warmup=0, repeats=1)
    return seconds


def measure_pretrain(
    preset: str, batch: dict[str, torch.Tensor], device: torch.device, settings: Settings, report: Callable[[str], None]
) -> Item:
    """``pretrain_step`` on a fresh MAE (freed on return, before the next item)."""
    image, plane_mask = batch["image"], batch["plane_mask"]
    planes, frames, height = image.shape[2:5]
    torch.manual_seed(0)
    mae = build_network("mae", preset, num_planes=planes, num_frames=frames, image_size=height).to(device)
    return measure_item(
        "pretrain_step",
        lambda: training_step(mae, lambda: mae(image, plane_mask)["loss"], device),
        device,
        settings.warmup,
        settings.repeats,
        report,
    )


def inference_refiner() -> dict[str, tuple[int, ...]]:
    """The refiner options ``inference.yaml`` builds its network with (the shipped weights' refiner)."""
    config = yaml.safe_load(INFERENCE_CONFIG.read_text())
    return {key: tuple(config[key]) for key in ("refiner_channels", "refiner_frame_offsets")}


def build_heart(preset: str, shape: Sequence[int], device: torch.device) -> tuple[torch.nn.Module, str]:
    """The segmentation network at ``shape`` (P, T, H, W) as inference builds it (its refiner included) with the
    shipped weights where the preset has them, else random ones; returns it and the weights' name."""
    planes, frames, height, _ = shape
    torch.manual_seed(0)
    heart = build_network(
        "heart", preset, num_planes=planes, num_frames=frames, image_size=height, **inference_refiner()
    )
    weights = SHIPPED_WEIGHTS.get(preset)
    if weights is not None and weights.is_file():
        load_network_weights(heart, weights)
        return heart.to(device), weights.name
    return heart.to(device), "random"


# --------------------------------------------------------------------------------------------------
# End to end and data layer
# --------------------------------------------------------------------------------------------------
def benchmark_subject(preset: str, subject: Path | None, workdir: Path) -> Path:
    """The given subject folder, or one synthetic subject written under ``workdir`` as inference takes one: 9 planes
    (the 6 middle slices of its SA stack, which one network pass covers, and the three long-axis views) and no label
    files."""
    if subject is not None:
        return subject
    names = synthesize_cohort(workdir / "cohort", 1, seed=0, tiny=preset == "tiny")
    folder = workdir / "cohort" / names[0]
    for label in folder.glob("seg_*.nii.gz"):
        label.unlink()
    sa = nib.load(str(folder / "sa.nii.gz"))
    first = max(0, (sa.shape[2] - NUM_SA_SLICES) // 2)
    nib.save(sa.slicer[:, :, first : first + NUM_SA_SLICES], str(folder / "sa.nii.gz"))
    return folder


def cohort_predictor(preset: str, network: torch.nn.Module, device: torch.device, output_dir: Path) -> Any:
    """The inference workflow's :class:`scripts.inference.CohortPredictor`, built from ``inference.yaml`` at
    ``preset`` on ``device`` with ``network`` (weights as they are) and one pass (no test-time shifts)."""
    config = ConfigParser()
    config.read_config(INFERENCE_CONFIG)
    config.update(
        {
            "bundle_root": str(BUNDLE),
            "preset": preset,
            "device": f"$torch.device('{device}')",
            "centre_shifts_px": [],
            "output_dir": str(output_dir),
            "ckpt": None,
        }
    )
    config["network"] = network
    return config.get_parsed_content("predictor")


def end_to_end_call(predictor: Any, subject: Path) -> Callable[[], None]:
    """One run of ``predictor`` on ``subject``, its printed summary sent to stderr (stdout carries the results)."""

    def call() -> None:
        with contextlib.redirect_stdout(sys.stderr):
            summary = predictor.run(subject)
        if summary["failed"]:
            raise RuntimeError(f"inference failed on {subject}: {summary['failed']}")

    return call


def measure_end_to_end(
    preset: str,
    network: torch.nn.Module,
    device: torch.device,
    settings: Settings,
    subject: Path,
    workdir: Path,
    report: Callable[[str], None],
) -> tuple[Item, int]:
    """``inference_end_to_end``: its FLOPs counted here with ``network`` (untimed), its time and memory in a fresh
    (spawned) process with this one's torch threads, so that its ``peak_rss_gb`` is what an inference process holds,
    not the steps measured before it nor the FLOP counter (which runs attention unfused). Returns the item and the
    network passes per subject."""
    report("call 1: counting FLOPs (untimed)")
    predictor = cohort_predictor(preset, network, device, workdir / "counted")
    with flop_counter() as counter, counted_passes(network) as passes:
        end_to_end_call(predictor, subject)()
    report(f"{settings.subject_warmup} warm-up + {settings.subject_repeats} timed call(s) in a fresh process")
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        job = pool.submit(
            time_end_to_end, preset, str(device), subject, workdir / "timed", settings, torch.get_num_threads()
        )
        seconds, rss_gb = job.result()
    item = Item("inference_end_to_end", dtype_name(compute_dtype(device)), seconds, counter.get_total_flops())
    item.untimed_calls, item.peak_rss_gb = 1 + settings.subject_warmup, rss_gb
    return item, len(passes)


def time_end_to_end(
    preset: str, device_name: str, subject: Path, output_dir: Path, settings: Settings, threads: int
) -> tuple[list[float], float]:
    """Run in the child process of :func:`measure_end_to_end` with ``threads`` torch threads: the settings' warm-up
    and timed inference runs on ``subject``; returns the timed seconds and the process's peak resident memory (GB)."""
    torch.set_num_threads(threads)
    device = torch.device(device_name)
    heart, _ = build_heart(preset, geometry(preset), device)
    call = end_to_end_call(cohort_predictor(preset, heart, device, output_dir), subject)
    return time_calls(call, device, settings.subject_warmup, settings.subject_repeats), peak_rss_gb()


@contextlib.contextmanager
def counted_passes(network: torch.nn.Module) -> Iterator[list[int]]:
    """Within the block, every ``network.segment_and_embed`` call (one per network pass of inference) appends to the
    yielded list."""
    passes: list[int] = []
    segment_and_embed = network.segment_and_embed

    def counting(*args: Any, **kwargs: Any) -> Any:
        passes.append(1)
        return segment_and_embed(*args, **kwargs)

    network.segment_and_embed = counting
    try:
        yield passes
    finally:
        del network.segment_and_embed  # the instance attribute: the class's method shows through again


def folder_mb(folder: Path, pattern: str = "*") -> float:
    """Total size of the files matching ``pattern`` in ``folder``, in MB (10^6 bytes)."""
    return sum(p.stat().st_size for p in folder.glob(pattern) if p.is_file()) / 1e6


def loader(preset: str, cache_dir: Path | None) -> LoadCineSubjectd:
    """The bundle's subject loader on the preset's canonical grid (as in inference.yaml)."""
    grid = preset_grid(preset)
    return LoadCineSubjectd(
        keys="subject",
        num_sa_slices=NUM_SA_SLICES,
        num_frames=grid.num_frames,
        crop_size=grid.crop_size,
        spacing_mm=grid.spacing_mm,
        cache_dir=cache_dir,
    )


def measure_data(preset: str, settings: Settings, subject: Path, workdir: Path) -> dict[str, Any]:
    """ms per subject through :class:`LoadCineSubjectd` from NIfTI (cold), the first cached load (build + write) and
    from the cache (warm); NIfTI and cache MB per subject."""
    item = {"subject": str(subject)}
    cpu = torch.device("cpu")
    calls = max(1, settings.subject_repeats)
    cold = time_calls(lambda: loader(preset, None)(item), cpu, warmup=0, repeats=calls)
    cached = loader(preset, workdir / "cache")
    first = time_calls(lambda: cached(item), cpu, warmup=0, repeats=1)
    warm = time_calls(lambda: cached(item), cpu, warmup=0, repeats=calls)
    return {
        "nifti_mb_per_subject": folder_mb(subject),
        "cold_ms_per_subject": 1e3 * statistics.median(cold),
        "first_cached_ms_per_subject": 1e3 * first[0],
        "warm_ms_per_subject": 1e3 * statistics.median(warm),
        "cache_mb_per_subject": folder_mb(workdir / "cache", "*.npz"),
    }


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------
def run_benchmark(preset: str, device: torch.device, settings: Settings, subject: Path | None) -> dict[str, Any]:
    """Every item of :data:`WHATS`, the peak and the data layer, as one JSON-ready dict (``records``: the lines)."""
    meta = {**machine_info(device), "preset": preset, "settings": asdict(settings)}
    progress = Progress(total=8)
    calls = f"1 FLOP-counting + {settings.warmup} warm-up + {settings.repeats} timed call(s) per network item"
    print(f"benchmark {preset} on {device}: {calls}", file=sys.stderr, flush=True)

    report = progress.next("matmul_peak")
    report(f"{settings.matmul_size}^3 fp32 and bf16, before the network")
    peak_before = measure_peak(device, settings)
    peak_rss_before = peak_rss_gb()

    shape = geometry(preset)
    batch = synthetic_batch(shape, device)
    image, plane_mask = batch["image"], batch["plane_mask"]
    heart, weights = build_heart(preset, shape, device)
    items: dict[str, Item] = {}
    all_tokens = shape[0] * math.prod(heart.encoder.token_grid(shape[1:]))  # what the encoder sees unmasked

    report = progress.next("encoder_forward")
    baseline = Baseline(preset, all_tokens, device)
    items["encoder_forward"] = measure_item(
        "encoder_forward",
        lambda: no_grad_forward(heart, lambda: heart.encoder(image, plane_mask), device),
        device,
        settings.warmup,
        settings.repeats,
        report,
    )
    items["encoder_forward"].baseline_seconds = time_baseline(baseline.forward, device, settings, "forward", report)
    baseline_description = baseline.describe()

    report = progress.next("inference_network")
    items["inference_network"] = measure_item(
        "inference_network",
        lambda: no_grad_forward(heart, lambda: heart(image, plane_mask), device),
        device,
        settings.warmup,
        settings.repeats,
        report,
    )
    # the same call as encoder_forward's baseline (forward over every token): one measurement serves both
    items["inference_network"].baseline_seconds = items["encoder_forward"].baseline_seconds

    report = progress.next("pretrain_step")
    items["pretrain_step"] = measure_pretrain(preset, batch, device, settings, report)
    kept_tokens = int(all_tokens * (1.0 - preset_config(preset).mask_ratio))  # as random_masking keeps them
    baseline = Baseline(preset, kept_tokens, device)
    items["pretrain_step"].baseline_seconds = time_baseline(
        baseline.step, device, settings, f"forward + backward over {kept_tokens} tokens", report
    )

    report = progress.next("segmentation_step")
    config = yaml.safe_load(SEGMENTATION_CONFIG.read_text())
    decoded_frames = min(config["decoded_frames"], shape[1] // 2)  # the same share of tiny's 10 frames: 5
    loss = segmentation_loss_call(heart, batch, config["decoded_planes"], decoded_frames)
    items["segmentation_step"] = measure_item(
        "segmentation_step",
        lambda: training_step(heart, loss, device),
        device,
        settings.warmup,
        settings.repeats,
        report,
    )
    baseline = Baseline(preset, all_tokens, device)
    items["segmentation_step"].baseline_seconds = time_baseline(
        baseline.step, device, settings, f"forward + backward over {all_tokens} tokens", report
    )
    del baseline
    heart.zero_grad(set_to_none=True)

    with tempfile.TemporaryDirectory(prefix="benchmark-") as tmp:
        report = progress.next("inference_end_to_end")
        report("writing the subject" if subject is None else f"subject {subject}")
        subject_name = "synthetic" if subject is None else str(subject)
        subject = benchmark_subject(preset, subject, Path(tmp))
        items["inference_end_to_end"], network_passes = measure_end_to_end(
            preset, heart, device, settings, subject, Path(tmp), report
        )
        report = progress.next("data layer")
        report("cold, first cached and warm loads")
        data = {"subject": subject_name, **measure_data(preset, settings, subject, Path(tmp))}

    report = progress.next("matmul_peak")
    report("after the network")
    peak = combine_peaks([peak_before, measure_peak(device, settings)], settings)
    items["matmul_peak"] = Item("matmul_peak", "bfloat16", peak_rss_gb=peak_rss_before)
    # another process sharing the cores slows the threads of a step unevenly: the load is reported on both sides
    meta["load_average_1min_after"] = machine_info(device)["load_average_1min"]
    meta["weights"] = weights
    meta["baseline"] = baseline_description
    meta["network_passes"] = network_passes
    records = [json_record(preset, device, items[what], peak) for what in WHATS]
    return {"schema": SCHEMA_VERSION, "meta": meta, "peak": peak, "records": records, "data": data}


def json_record(preset: str, device: torch.device, item: Item, peak: dict[str, Any]) -> dict[str, Any]:
    """The JSON line of ``item``: the keys of the module's docstring, null where a key does not apply."""
    bf16 = peak["bf16_tflops"]
    if item.what == "matmul_peak":
        seconds = tflop = None
        achieved = bf16
    else:
        seconds = statistics.median(item.seconds)
        tflop = item.flops / 1e12
        achieved = tflop / seconds
    baseline = statistics.median(item.baseline_seconds) if item.baseline_seconds else None
    return {
        "preset": preset,
        "what": item.what,
        "device": str(device),
        "dtype": item.dtype,
        "seconds_per_subject": seconds,
        "tflop_per_subject": tflop,
        "achieved_tflops": achieved,
        "fraction_of_bf16_peak": achieved / bf16,
        "peak_rss_gb": item.peak_rss_gb,
        "baseline_seconds_per_subject": baseline,
        "speedup_vs_baseline": baseline / seconds if baseline is not None else None,
        "timed_calls": len(item.seconds),
        "seconds_timed": item.seconds,
        "untimed_calls": item.untimed_calls,
        "peak_device_gb": item.peak_device_gb,
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


def _number(value: float | None, spec: str) -> str:
    """``value`` formatted by ``spec``, or ``-`` for null."""
    return "-" if value is None else format(value, spec)


def format_table(results: dict[str, Any]) -> str:
    """Human-readable summary of :func:`run_benchmark`'s results."""
    meta, peak, data = results["meta"], results["peak"], results["data"]
    settings = meta["settings"]
    lines = [
        f"machine: {meta['device']} ({meta['device_name']}), {peak['threads']} threads, torch {meta['torch']}, "
        f"load average {meta['load_average_1min']}",
        f"preset {meta['preset']}: per item 1 FLOP-counting call (untimed, the first warm-up) + {settings['warmup']} "
        "warm-up + "
        f"{settings['repeats']} timed (end to end: {settings['subject_warmup']} warm-up + "
        f"{settings['subject_repeats']} timed in its own process); "
        "median of the timed calls",
        f"peak matmul {peak['matmul_size']}^3: fp32 {peak['fp32_tflops']:.3f} TFLOP/s, bf16 {peak['bf16_tflops']:.3f} "
        "TFLOP/s (best of before and after)",
        f"{'what':<22}{'dtype':>10}{'s/subject':>11}{'TFLOP':>9}{'TFLOP/s':>9}{'of bf16':>9}{'baseline s':>12}"
        f"{'speedup':>9}{'RSS GB':>8}",
    ]
    for r in results["records"]:
        lines.append(
            f"{r['what']:<22}{r['dtype']:>10}{_number(r['seconds_per_subject'], '.3f'):>11}"
            f"{_number(r['tflop_per_subject'], '.3f'):>9}{r['achieved_tflops']:>9.3f}"
            f"{r['fraction_of_bf16_peak']:>9.1%}{_number(r['baseline_seconds_per_subject'], '.3f'):>12}"
            f"{_number(r['speedup_vs_baseline'], '.2f'):>9}{r['peak_rss_gb']:>8.2f}"
        )
    lines += [
        f"baseline: authors'-style encoder (fp32, explicit softmax(QK^T)V, {meta['baseline']}) over the line's encoder "
        "tokens + a class token; it leaves out the decoders, so whole-network speedups are lower bounds",
        f"end to end: {meta['network_passes']} network pass{'' if meta['network_passes'] == 1 else 'es'}, "
        f"{meta['weights']} weights, no test-time shifts; "
        "RSS GB: process peak so far (end to end: its own inference process)",
        f"data layer ({data['subject']}, NIfTI {data['nifti_mb_per_subject']:.2f} MB): cold from NIfTI "
        f"{data['cold_ms_per_subject']:.1f} ms, first cached load {data['first_cached_ms_per_subject']:.1f} ms, "
        f"warm from cache {data['warm_ms_per_subject']:.1f} ms, cache {data['cache_mb_per_subject']:.2f} MB",
    ]
    before, after, cpus = meta["load_average_1min"], meta["load_average_1min_after"], meta["cpu_count"] or 1
    if before is not None and max(before, after) > 0.5 * cpus:
        lines.append(
            f"warning: load average {before:.1f} before and {after:.1f} after the run on {cpus} CPUs: other processes "
            "share the cores, so timings are pessimistic and noisy (seconds_timed in the JSON)"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """Command-line interface."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None, help="default small, tiny with --quick")
    parser.add_argument("--quick", action="store_true", help="the tiny preset (seconds)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per network item (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--subject", type=Path, default=None, help="subject folder for inference_end_to_end")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write (everything, lines included)")
    return parser


def settings_for(preset: str, device: torch.device, repeats: int | None) -> Settings:
    """Measurement effort for ``preset`` on ``device`` (``repeats``: timed network calls, None for the default)."""
    if device.type == "cuda":
        settings = Settings(8192, 20, warmup=2, repeats=5, subject_warmup=1, subject_repeats=2)
    elif preset == "paper":
        # a network call takes seconds on a CPU; the FLOP-counting call does not warm up the fused kernels it counts
        # (the first call after it measured up to 1.5x the next ones): one warm-up, the median of two timed calls
        settings = Settings(2048, 5, warmup=1, repeats=2, subject_warmup=1, subject_repeats=1)
    elif preset == "small":
        # a subject takes seconds and other machines' work on the shared cores stretches single calls: a median of 5
        settings = Settings(2048, 5, warmup=1, repeats=3, subject_warmup=1, subject_repeats=5)
    else:
        settings = Settings(512, 10, warmup=0, repeats=2, subject_warmup=1, subject_repeats=1)
    if repeats is not None:
        settings.repeats = max(1, repeats)
    return settings


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table and the JSON lines, write the JSON file."""
    args = build_parser().parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    preset = args.preset or ("tiny" if args.quick else "small")
    results = run_benchmark(preset, device, settings_for(preset, device, args.repeats), args.subject)
    print(format_table(results))
    for record in results["records"]:
        print(json.dumps(record))
    if args.out is not None:
        write_json_atomic(results, args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    return results


if __name__ == "__main__":
    main()
