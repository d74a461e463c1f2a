"""The ``clfa`` command's own flags (each subcommand is tested beside the library code it runs)."""

from __future__ import annotations

from importlib.metadata import version

import pytest

import clfa
from clfa.cli import main


def test_version_names_clfa_and_the_libraries_it_depends_on(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    printed = capsys.readouterr().out.strip()
    assert printed == (f"clfa {clfa.__version__} (torch {version('torch')}, transformers {version('transformers')}, "
                       f"accelerate {version('accelerate')})")
    assert clfa.__version__ == version("clfa")  # the package's and the module's versions agree
