"""``clfa demo``."""

from __future__ import annotations

import argparse
from pathlib import Path

from clfa.cli.checks import progress_of
from clfa.files import make_folder


def demo_command(args: argparse.Namespace) -> int:
    from clfa.demo.folder import check_out_folder

    make_folder(Path(args.out), f"--output-dir {args.out}")
    check_out_folder(Path(args.out))
    progress = progress_of(args)
    from clfa.demo.run import run_demo

    run_demo(Path(args.out), quick=args.quick, seed=args.seed, progress=progress, workers=None)
    return 0
