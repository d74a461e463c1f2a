"""``clfa`` itself (clfa.cli: main): its statuses, the commands it refuses under a launcher, and the slow libraries it
leaves unimported until a command's work begins (each subcommand is tested in its own module here, test_predict.py for
clfa.cli.predict)."""

from __future__ import annotations

import logging

import pytest

from clfa.cli import main
from conftest import write_dataset

from .new_process import run_in_a_new_process


def test_ctrl_c_ends_the_command_in_one_line_with_the_shells_status(monkeypatch, capsys):
    import clfa.cli.parser

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(clfa.cli.parser, "demo_command", interrupted)  # the command as a Ctrl-C finds it, midway
    assert main(["demo", "--quick"]) == 130
    assert capsys.readouterr().err == "clfa: interrupted\n"


@pytest.mark.parametrize("command", [
    ["predict", "--model", "MODEL", "--input", "pairs.jsonl", "--output", "predictions.jsonl"],
    ["evaluate", "--model", "MODEL", "--dataset", "jsonl", "--data-dir", "data", "--output", "metrics.json"],
    ["export", "--model", "MODEL", "--output-dir", "exported"],
])
def test_commands_other_than_train_are_refused_under_a_multi_process_launcher(command, tmp_path, monkeypatch, capsys):
    """Under torchrun every process runs the command: evaluate, predict and export would each do the whole work and
    write the same files (two predictors taking one NAME.partial from each other end in a FileNotFoundError)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("LOCAL_RANK", raising=False)  # a WORLD_SIZE a job script exported, no launcher: a plain run
    assert "runs in one process" not in (main(command), capsys.readouterr().err)[1]
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"clfa: error: clfa {command[0]} runs in one process, not in each of the 2") and err.count("\n") == 1
    monkeypatch.setenv("RANK", "1")  # the other processes say nothing more
    assert main(command) == 2
    assert capsys.readouterr().err == ""
    assert not list(tmp_path.iterdir())  # refused before any work
    assert logging.getLogger("clfa").level == logging.NOTSET  # nor set up the logging of a process that would run it
    monkeypatch.setenv("WORLD_SIZE", "1")  # a launcher's single process is a plain run
    monkeypatch.setenv("RANK", "0")
    assert "runs in one process" not in (main(command), capsys.readouterr().err)[1]


def test_help_and_usage_errors_import_neither_torch_nor_transformers_nor_scikit_learn():
    # They would take seconds to load, for a command that only prints its help or names a mistyped option.
    statuses, _, imported = run_in_a_new_process([
        ["--help"], ["--version"], ["train", "--help"], ["evaluate", "--help"], ["predict", "--help"], ["export", "--help"],
        ["demo", "--help"], ["data", "stats", "--help"], ["data", "check", "--help"], ["heatmap", "--help"], ["train", "--bogus"],
        ["predict"], ["predict", "--model", "m", "--attention-backends", "flash,fast"], ["evaluate", "--model", "m", "--split", "all"],
        ["predict", "--model", "m", "--attention-backends", "flash,math", "--bogus"], ["heatmap", "--model", "m", "--output", "h.png"]])
    assert imported == []
    assert statuses == [0] * 10 + [2] * 6


def test_errors_found_before_the_work_import_neither_torch_nor_transformers_nor_scikit_learn(tmp_path, tmp_path_factory):
    # Options, data folders, output folders and --model are checked before the libraries that take seconds to load.
    (tmp_path / "a-file").write_text("")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "kept").write_text("")
    (tmp_path / "full" / "metrics.json").write_text("{}")
    missing, model, data = str(tmp_path / "missing"), str(tmp_path / "no-model"), ["--dataset", "jsonl", "--data-dir", str(tmp_path)]
    sixteen = ["--dataset", "jsonl", "--data-dir", str(write_dataset(tmp_path_factory.mktemp("data"), {"train": 16, "test": 16}))]
    png = ["--output", str(tmp_path / "h.png")]
    errors = {
        ("train", *data, "--batch-size", "0"): "--batch-size must be at least 1, got 0",
        ("train", *data, "--fusion", "nope"): "--fusion nope: unknown; choose from cross_attention, concat, co_attention, text_only, image_only",
        ("train", "--dataset", "jsonl", "--data-dir", missing, "--fusion", "concat"): f"{missing}: no such folder",
        ("train", *data, "--config", str(tmp_path / "run.yaml")): f"{tmp_path / 'run.yaml'}: cannot read options",
        ("predict", "--model", "m"): "give --text and --image, or --input pairs.jsonl",
        ("predict", "--model", "m", "--text", " "): "--text is empty",
        ("predict", "--model", model, "--text", "a day"): f"{model}: no such folder in {tmp_path}",
        ("predict", "--model", str(tmp_path / "a-file"), "--input", "pairs.jsonl"): f"{tmp_path / 'a-file'}: a file, not a folder",
        ("evaluate", "--model", "m", *data, "--train-file", "t.jsonl"): "--train-file would not be read",
        ("evaluate", "--model", model, *data): f"{model}: no such folder in {tmp_path}",
        ("evaluate", "--model", "m", *data, "--output", str(tmp_path)): f"--output {tmp_path} is a folder",
        ("export", "--model", model, "--output-dir", str(tmp_path / "ship")): f"{model}: no such folder in {tmp_path}",
        ("export", "--model", model, "--output-dir", str(tmp_path / "full")): f"--output-dir {tmp_path / 'full'}: not empty",
        ("heatmap", "--model", "m", *data, *png, "--samples", "1"): "--samples 1: a heat map compares at least 2 pairs",
        ("heatmap", "--model", model, *data, *png): f"{model}: no such folder in {tmp_path}",
        ("heatmap", "--model", "m", *data, *png, "--dev-file", "d.jsonl"): "--dev-file would not be read",
        ("heatmap", "--model", "m", "--model", "x/m", *data, *png): "--model x/m: a second panel titled 'm'",
        ("heatmap", "--model", str(tmp_path / "full"), *data, "--output", str(tmp_path)): f"--output {tmp_path} is a folder",
        ("heatmap", "--model", str(tmp_path / "full"), *data, "--output", str(tmp_path / "h.xyz")):
            f"--output {tmp_path / 'h.xyz'}: .xyz is no image",
        ("heatmap", "--model", str(tmp_path / "full"), *sixteen, *png, "--samples", "17"):
            "--samples 17: the test split of 'jsonl' has 16 pairs",
        ("data", "check", "--dataset", "jsonl", "--data-dir", missing): f"{missing}: no such folder",
        ("data", "stats", "--dataset", "jsonl", "--data-dir", missing): f"{missing}: no such folder",
        ("demo", "--output-dir", str(tmp_path / "a-file")): f"--output-dir {tmp_path / 'a-file'}: a file stands where",
        ("demo", "--output-dir", str(tmp_path / "full")): f"--output-dir {tmp_path / 'full'}: holds metrics.json, which the demo",
    }
    statuses, stderr, imported = run_in_a_new_process([list(command) for command in errors])
    assert imported == []
    assert statuses == [2] * len(errors)
    lines = stderr.splitlines()
    assert len(lines) == len(errors)
    for line, error in zip(lines, errors.values()):
        assert line.startswith(f"clfa: error: {error}")
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["a-file", "full", "kept", "metrics.json"]  # nothing written
