"""Commands run through ``clfa.cli.main`` in a new Python process, to see which libraries they import."""

from __future__ import annotations

import json

import clfa


SLOW_IMPORTS = ("torch", "transformers", "accelerate", "sklearn")


def run_in_a_new_process(commands: list[list[str]], watched: tuple[str, ...] = SLOW_IMPORTS) -> tuple[list[int], str, list[str]]:
    """Each command run through main() in one new Python process: their exit statuses, what they wrote on stderr, and
    those of the ``watched`` modules imported by the end."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = f"""
import json, sys
from clfa.cli import main
statuses = []
for argv in {commands!r}:
    try:
        statuses.append(main(argv))
    except SystemExit as exit_:
        statuses.append(exit_.code)
print(json.dumps([statuses, [name for name in {watched!r} if name in sys.modules]]))
"""
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(Path(clfa.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    statuses, imported = json.loads(run.stdout.splitlines()[-1])
    return statuses, run.stderr, imported
