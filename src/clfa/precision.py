"""The numeric precision a run computes in, shared by training and prediction."""

from __future__ import annotations

import contextlib

import torch

from clfa.errors import OptionError
from clfa.options import PRECISIONS
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: str | torch.device | None = None) -> str:
    """``auto`` -> bf16 on a GPU with bf16 arithmetic (compute capability 8.0 and newer: A100, H100, RTX 30xx and
    later), fp32 elsewhere. Older GPUs (V100, T4) only emulate bf16, more slowly than they compute fp32, so ``auto``
    keeps them in fp32; ask for fp16 there. ``device`` defaults to the GPU when there is one."""
    if precision not in PRECISIONS:
        raise OptionError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda" or not torch.cuda.is_available():
        return "fp32"
    with torch.cuda.device(device):
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp32"


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast to the resolved ``precision``'s dtype on ``device``; fp32 computes as it is."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])
