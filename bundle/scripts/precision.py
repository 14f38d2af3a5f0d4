"""Numerics of a run: the floating-point precision of the forward passes and seeded random generators.

``precision`` (the configs' ``--precision``) is ``"auto"``, bf16 autocast where the device computes bf16 natively
(:func:`autocast_context`), or ``"fp32"``; :func:`seeded_rng` runs a block (a validation) at a fixed seed without
moving the training's random streams.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


def autocast_context(device: torch.device | str) -> contextlib.AbstractContextManager:
    """bf16 autocast where the device computes bf16 natively (CUDA with bf16, CPU with AVX512-BF16 or AMX), else a
    null context (bf16 emulated on older CPUs is slower than fp32)."""
    device = torch.device(device)
    if device.type == "cuda":
        supported = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    elif device.type == "cpu":
        supported = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    else:
        supported = False
    if supported:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def precision_context(device: torch.device | str, precision: str = "auto") -> contextlib.AbstractContextManager:
    """``"auto"``: bf16 autocast where the device computes bf16 natively, fp32 elsewhere; ``"fp32"``: always fp32."""
    if precision not in ("auto", "fp32"):
        raise ValueError(f"precision must be 'auto' or 'fp32', got {precision!r}")
    return autocast_context(device) if precision == "auto" else contextlib.nullcontext()


@contextlib.contextmanager
def seeded_rng(seed: int, device: torch.device | str) -> Iterator[None]:
    """Run a block with torch's random generators seeded by ``seed`` and restore them afterwards: the CPU's and, on
    CUDA, the device's, which ``torch.manual_seed`` reseeds too. Seeded validation then leaves the training's random
    streams (on CUDA the MAE's masks) where they were, rather than restarting them at the same seed every epoch."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield
