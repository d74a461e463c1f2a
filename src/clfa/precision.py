"""The numeric precision a run computes in, shared by training and prediction."""

from __future__ import annotations

import contextlib
import os

import torch

from clfa.errors import OptionError
from clfa.options import PRECISIONS
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: str | torch.device | None = None) -> str:
    """``auto`` -> bf16 on a GPU with bf16 arithmetic (compute capability 8.0 and newer: A100, H100, RTX 30xx and
    later), fp32 elsewhere. Older GPUs (V100, T4) only emulate bf16, more slowly than they compute fp32, so ``auto``
    keeps them in fp32; ask for fp16 there. ``device`` defaults to this process's GPU (:func:`process_gpu`) when
    there is one."""
    if precision not in PRECISIONS:
        raise OptionError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    device = torch.device(device if device is not None else (process_gpu() if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda" or not torch.cuda.is_available():
        return "fp32"
    with torch.cuda.device(device):
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp32"


def process_gpu() -> torch.device:
    """The GPU this process computes on: under torchrun or accelerate launch, the one its LOCAL_RANK picks (modulo the
    GPUs it sees, as accelerate makes it current once the Trainer's arguments are built); else the current one. Asked
    before those arguments exist, the current GPU is still the first, in every process."""
    if "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
    return torch.device("cuda")


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast to the resolved ``precision``'s dtype on ``device``; fp32 computes as it is."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])
