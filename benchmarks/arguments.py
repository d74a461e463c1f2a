"""Command-line pieces the benchmark scripts share. Nothing here imports torch until an option needs it: each script
reads its command line with these before it imports torch and transformers, which take seconds, so that --help and
a refused option answer at once."""

from __future__ import annotations

import argparse
import ast
import math


def positive_number(text: str) -> float:
    """argparse type: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def inductor_setting(text: str) -> tuple[str, object]:
    """KEY=VALUE for torch._inductor.config; VALUE is read as a Python literal (True, 8, 'name'), else kept as text."""
    import torch._inductor.config

    key, sep, value = text.partition("=")
    if not sep or not hasattr(torch._inductor.config, key):
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with KEY one of torch._inductor.config's settings, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device``, None when not given: see :func:`device_or_default`."""
    parser.add_argument("--device", choices=("cpu", "cuda"), help="(default: cuda where there is one, else cpu)")


def device_or_default(parser: argparse.ArgumentParser, device: str | None) -> str:
    """The ``--device`` given, checked, or the GPU where there is one."""
    check_devices(parser, device)
    return device or ("cuda" if cuda_available() else "cpu")


def check_devices(parser: argparse.ArgumentParser, *names: str | None, flag: str = "--device") -> None:
    if "cuda" in names and not cuda_available():
        parser.error(f"{flag} cuda: no CUDA device available")


def check_attention_backends(parser: argparse.ArgumentParser, names: str | None) -> None:
    """``--attention-backends``: a misspelt backend refused as a usage error, before any model is built."""
    from clfa.attention_backends import parse_attention_backends

    try:
        parse_attention_backends(names)
    except ValueError as error:
        parser.error(str(error))
