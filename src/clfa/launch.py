"""What torchrun and accelerate launch tell each process they start, read from the environment they set: usable
before the processes are joined, and without importing torch."""

from __future__ import annotations

import os


def first_process() -> bool:
    """Whether this is the first process of a torchrun / accelerate launch run (or the only one), by its RANK."""
    return os.environ.get("RANK", "0") == "0"
