"""``clfa export``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clfa.cli.checks import quiet_libraries


def export_command(args: argparse.Namespace) -> int:
    from clfa.export import check_export, export_model

    out = Path(args.output_dir)
    check_export(args.model, out)  # before the seconds of importing torch; export_model checks again, for Python callers
    quiet_libraries(args.verbose)
    files = export_model(args.model, out)
    for file in files:
        print(f"{file.stat().st_size:>12,}  {file}")
    print(f"exported {args.model} to {out}: {len(files)} files, {sum(f.stat().st_size for f in files):,} bytes", file=sys.stderr)
    return 0
