"""The ``clfa`` command line as clfa.cli.parser reads it: --version, and the options it does not know."""

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


@pytest.mark.parametrize("argv, usage", [
    (["train", "--dataset", "jsonl", "--device", "cpu"], "usage: clfa train "),
    (["data", "check", "--dataset", "jsonl", "--num-workers", "2"], "usage: clfa data check "),
    (["demo", "--quick", "--bogus"], "usage: clfa demo "),
])
def test_an_unknown_option_is_named_with_its_commands_usage(capsys, argv, usage):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith(usage)
    assert f"clfa {argv[0]}{' ' + argv[1] if argv[0] == 'data' else ''}: error: unrecognized arguments: {' '.join(argv[-2:] if argv[-1] != '--bogus' else argv[-1:])}" in err


@pytest.mark.parametrize("argv, said", [
    (["train", "--dataset", "jsonl", "--lerning-rate", "1e-3"], "--lerning-rate 1e-3 (did you mean --learning-rate?)"),
    (["train", "--dataset", "jsonl", "--learning_rate=1e-3"], "--learning_rate=1e-3 (did you mean --learning-rate?)"),
    (["data", "check", "--dataset", "jsonl", "--num-workers", "2"], "--num-workers 2 (did you mean --workers?)"),
    (["predict", "--model", "m", "--imge", "x.jpg"], "--imge x.jpg (did you mean --image?)"),
    (["train", "--dataset", "jsonl", "--device", "cpu"], "--device cpu"),  # nothing near enough: no guess
])
def test_a_mistyped_option_is_answered_with_the_nearest_one(capsys, argv, said):
    """Under a usage of some forty flags, "unrecognized arguments: --learning_rate=1e-3" left the reader to find that
    flags take '-' where a --config file's keys take '_'."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"error: unrecognized arguments: {said}")


@pytest.mark.parametrize("argv, said", [
    (["data", "stats", "--dataset", "jsonl", "--data-dir", "d", "--splits", "s"], "--splits s (did you mean --splits-dir?)"),
    (["train", "--dataset", "jsonl", "--learning", "1e-3"], "--learning 1e-3 (did you mean --learning-rate?)"),
    (["train", "--dataset", "jsonl", "--batch=4"], "--batch=4 (did you mean --batch-size?)"),
    (["evaluate", "--model", "m", "--dataset", "jsonl", "--spl", "dev"], "--spl dev (did you mean --split or --splits-dir?)"),
    (["predict", "--model", "m", "--te", "a day"], "--te a day (did you mean --text?)"),
])
def test_a_prefix_of_a_flag_is_refused_with_the_flags_it_begins(capsys, argv, said):
    """argparse would take a prefix for the one flag it begins: --splits ran as --splits-dir, --spl as --split."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"error: unrecognized arguments: {said}")


def test_demo_takes_its_folder_as_output_dir_as_train_and_export_do():
    from clfa.cli import build_parser

    assert build_parser().parse_args(["demo", "--output-dir", "x"]).out == "x"
    assert build_parser().parse_args(["demo", "--out", "y"]).out == "y"
