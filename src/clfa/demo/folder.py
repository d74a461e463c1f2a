"""The demo's output folder: its own, or one whose files it may not replace. Kept apart from :mod:`clfa.demo.run`, which
imports torch and transformers: ``clfa demo`` refuses a folder before it waits for them."""

from __future__ import annotations

import json
from pathlib import Path

from clfa.errors import OptionError

# Written into the output folder first: a folder the demo made, which a later demo may make again.
MARK = ".clfa-demo"
# What the demo writes into its folder, replacing what is there.
WRITES = ("data", "models", "model", "runs", "cache", "metrics.json", "alignment_heatmap.png")


def check_out_folder(out: Path) -> None:
    """The demo replaces its own files only: a folder holding others of the same names is refused."""
    if (out / MARK).exists() or _older_demo(out):
        return
    if taken := [name for name in WRITES if (out / name).exists()]:
        raise OptionError(f"--output-dir {out}: holds {', '.join(taken)}, which the demo would replace, and nothing marks it as a "
                          f"demo's folder (the file {MARK}); give another folder")


def _older_demo(out: Path) -> bool:
    """A folder made by a demo from before the mark: its summary says so."""
    try:
        return set(json.loads((out / "metrics.json").read_text())) == {"size", "seconds", "models"}
    except (OSError, ValueError, TypeError):
        return False
