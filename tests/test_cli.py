"""The ``clfa`` command's own flags (each subcommand is tested beside the library code it runs)."""

from __future__ import annotations

import json
import logging
from importlib.metadata import version

import pytest
import torch

import clfa
from clfa.cli import main
from clfa.data.records import DataError
from clfa.errors import message
from conftest import write_dataset


def test_version_names_clfa_and_the_libraries_it_depends_on(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    printed = capsys.readouterr().out.strip()
    assert printed == (f"clfa {clfa.__version__} (torch {version('torch')}, transformers {version('transformers')}, "
                       f"accelerate {version('accelerate')})")
    assert clfa.__version__ == version("clfa")  # the package's and the module's versions agree


def test_an_output_file_is_found_writable_before_the_work_and_nothing_is_left_or_opened(tmp_path):
    import os
    import stat
    import threading

    from clfa.cli.checks import make_parent
    from clfa.errors import OptionError

    make_parent(str(tmp_path / "new" / "out.json"))
    assert (tmp_path / "new").is_dir() and not (tmp_path / "new" / "out.json").exists()
    (tmp_path / "kept.json").write_text("earlier results")
    make_parent(str(tmp_path / "kept.json"))
    assert (tmp_path / "kept.json").read_text() == "earlier results"
    (tmp_path / "link.json").symlink_to(tmp_path / "target.json")  # dangling: the write will make the target
    make_parent(str(tmp_path / "link.json"))
    assert (tmp_path / "link.json").is_symlink() and not (tmp_path / "target.json").exists()
    os.mkfifo(tmp_path / "pipe")  # opening it here would block until a reader came
    check = threading.Thread(target=make_parent, args=(str(tmp_path / "pipe"),), daemon=True)
    check.start()
    check.join(timeout=30)
    assert not check.is_alive() and stat.S_ISFIFO((tmp_path / "pipe").stat().st_mode)
    with pytest.raises(OptionError, match="is a folder; give a file name"):
        make_parent(str(tmp_path))


class _BrokenImages(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        raise DataError("unreadable image file 3.png", file="test.jsonl", line=index + 1)


def test_an_error_raised_in_a_loader_worker_is_its_own_one_line_message():
    batches = iter(torch.utils.data.DataLoader(_BrokenImages(), num_workers=1))
    with pytest.raises(DataError) as err:
        next(batches)
    batches._shutdown_workers()  # now, not by the garbage collector in a later test, which waits 5 s a worker
    assert "Traceback" in str(err.value)  # as the DataLoader re-raises it
    assert message(err.value) == "test.jsonl:1: unreadable image file 3.png"
    assert message(DataError("no pairs to predict", file="in.jsonl")) == "in.jsonl: no pairs to predict"


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


@pytest.mark.parametrize("files, split, message", [
    (["--dev-file", "dev.jsonl"], [], "--dev-file would not be read: evaluate reads the --split splits only (test); give --split test dev to evaluate it as well"),
    (["--train-file", "t.jsonl", "--test-file", "x.jsonl"], ["--split", "test"], "--train-file would not be read"),
    (["--test-file", "x.jsonl"], ["--split", "dev"], "--test-file would not be read: evaluate reads the --split splits only (dev)"),
])
def test_evaluate_refuses_a_file_named_for_a_split_it_does_not_evaluate(tmp_path, capsys, files, split, message):
    # Refused before the model is looked for: the figures would otherwise be those of DATA_DIR's own file, or none.
    assert main(["evaluate", "--model", str(tmp_path / "no-model"), "--dataset", "jsonl", "--data-dir", str(tmp_path),
                 *files, *split]) == 2
    assert capsys.readouterr().err.startswith(f"clfa: error: {message}")


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


def launched(argv: list[str], processes: int = 2, first_rank: int = 0, handler: str | None = None) -> list[tuple[int, str, str]]:
    """``clfa ARGV`` run as torchrun runs it on one machine: a process per rank, all at once, each with the environment
    torchrun gives it, its error file in this attempt's log folder included (``first_rank``: that of the machine's first
    process, above 0 on every machine but the first). ``handler``: the body of a function of ``args`` that stands for
    train's work, for what a process meets midway. The exit status, stdout and stderr of each, by local rank."""
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    script = "from clfa.cli import run\nrun()"
    if handler:
        script = ("import os, signal\nimport clfa.cli.parser\nfrom clfa.errors import OptionError\n"
                  f"def work(args):\n    {handler}\nclfa.cli.parser.train_command = work\n{script}")
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(Path(clfa.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
                        "WORLD_SIZE": str(first_rank + processes), "LOCAL_WORLD_SIZE": str(processes), "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": "29511", "TORCHELASTIC_RUN_ID": "none", "TORCHELASTIC_RESTART_COUNT": "0"}
    with tempfile.TemporaryDirectory() as logs:
        for rank in range(processes):
            (Path(logs) / "attempt_0" / str(rank)).mkdir(parents=True)
        runs = [subprocess.Popen([sys.executable, "-c", script, *argv],
                                 env=env | {"RANK": str(first_rank + rank), "LOCAL_RANK": str(rank),
                                            "TORCHELASTIC_ERROR_FILE": str(Path(logs) / "attempt_0" / str(rank) / "error.json")},
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in range(processes)]
        said = [run.communicate(timeout=300) for run in runs]
    return [(run.returncode, out, err) for run, (out, err) in zip(runs, said)]


@pytest.mark.parametrize("argv, said", [
    (["--lerning-rate", "1e-3"], "clfa train: error: unrecognized arguments: --lerning-rate 1e-3 (did you mean --learning-rate?)"),
    (["--data-dir", "{missing}"], "clfa: error: {missing}: no such folder"),
    (["--resume"], "clfa: error: --resume: no checkpoint to resume from in {out}/checkpoints"),
])
def test_under_a_launcher_the_first_process_alone_says_what_every_process_meets_alike(tmp_path, argv, said):
    """The same command line and files give each process the same error: said once, not once a process, while every
    process still ends with a failure status for the launcher to report."""
    data, out, missing = write_dataset(tmp_path / "data", {"train": 8, "test": 4}), tmp_path / "run", tmp_path / "missing"
    argv = [arg.format(missing=missing) for arg in argv]
    (first, _, first_err), (second, _, second_err) = launched(["train", "--dataset", "jsonl", "--data-dir", str(data),
                                                               "--output-dir", str(out), "--report-to", "none", *argv])
    assert (first, second) == (2, 2)
    assert first_err.splitlines()[-1] == said.format(missing=missing, out=out)
    assert second_err == ""


def test_under_a_launcher_an_error_every_process_may_meet_alone_is_said_once_when_all_meet_it(tmp_path):
    """A model is looked up by each process, and a lookup (a download) can fail in one alone, so the error is not one
    every process meets alike by construction: when each meets the same, it is still said once."""
    data = write_dataset(tmp_path / "data", {"train": 8, "dev": 4})
    argv = ["train", "--dataset", "jsonl", "--data-dir", str(data), "--output-dir", str(tmp_path / "run"), "--report-to", "none",
            "--text-model", str(tmp_path / "no-bert")]
    runs = launched(argv)
    assert [status for status, _, _ in runs] == [2, 2]
    assert "".join(err for _, _, err in runs).count(f"clfa: error: --text-model {tmp_path / 'no-bert'}: no such folder") == 1


def test_under_torchrun_an_error_each_process_meets_is_said_once(tmp_path):
    """The processes tell each other what they said in the log folder torchrun gives each attempt on a machine."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    data = write_dataset(tmp_path / "data", {"train": 8, "dev": 4})
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(Path(clfa.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--log-dir",
                str(tmp_path / "logs"), "--monitor-interval", "1"]
    run = subprocess.run([*torchrun, "-m", "clfa.cli", "train", "--dataset", "jsonl", "--data-dir", str(data), "--output-dir",
                          str(tmp_path / "run"), "--report-to", "none", "--text-model", str(tmp_path / "no-bert")],
                         env=env, capture_output=True, text=True, timeout=300)
    # torchrun's report of each process: both met the error (polled each second, neither was stopped for the other's)
    assert run.returncode != 0 and run.stderr.count("exitcode  : 2") == 2
    assert run.stderr.count(f"clfa: error: --text-model {tmp_path / 'no-bert'}: no such folder") == 1


@pytest.mark.parametrize("argv, printed", [(["--help"], "usage: clfa [-h]"), (["--version"], f"clfa {clfa.__version__} (torch ")])
def test_under_a_launcher_help_and_version_are_printed_once_a_machine(argv, printed):
    runs = launched(argv)
    assert [status for status, _, _ in runs] == [0, 0]
    assert runs[0][1].startswith(printed) and runs[1][1] == ""


def test_under_a_launcher_ctrl_c_is_said_once_a_machine_and_ends_every_process_with_the_shells_status():
    # A launcher passes the SIGINT of a Ctrl-C on to each of its processes. Python's own handler is put back first: a
    # shell that starts the tests in the background has them ignore SIGINT, and Python then installs none.
    runs = launched(["train", "--dataset", "jsonl"],
                    handler="signal.signal(signal.SIGINT, signal.default_int_handler); signal.raise_signal(signal.SIGINT)")
    assert [status for status, _, _ in runs] == [130, 130]
    assert "".join(err for _, _, err in runs) == "clfa: interrupted\n"


@pytest.mark.parametrize("error, status, line", [("OptionError", 2, "clfa: error: {}"), ("RuntimeError", 1, "RuntimeError: {}")])
def test_under_a_launcher_an_error_is_said_once_by_the_processes_meeting_it_and_by_each_meeting_its_own(error, status, line):
    """An error the processes meet without its being marked alike (a bug, a message raised outside the checks of the
    command line and files) is said once however many meet it, and one that a single process meets by that process:
    never one message for all."""
    own = "out of memory on GPU {}"
    handler = f"raise {error}({own!r}.format(os.environ['RANK']) if os.environ['LOCAL_RANK'] == '1' else 'a bug each meets')"
    runs = launched(["train", "--dataset", "jsonl"], processes=3, handler=handler)
    assert [code for code, _, _ in runs] == [status] * 3
    said = "".join(err for _, _, err in runs)
    assert said.count(line.format("a bug each meets") + "\n") == 1
    assert line.format(own.format(1)) + "\n" in runs[1][2] and said.count(own.format(1)) == 1
    assert said.count("Traceback (most recent call last)") == (2 if error == "RuntimeError" else 0)


def test_a_rank_without_a_launcher_still_says_what_is_wrong(tmp_path, monkeypatch, capsys):
    """A RANK a job script or a cluster exported (as it may export WORLD_SIZE) is no launcher's: without a LOCAL_RANK
    this process is the only one here, and an error it keeps to itself is said by none."""
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    missing = tmp_path / "missing"
    assert main(["train", "--dataset", "jsonl", "--data-dir", str(missing), "--output-dir", str(tmp_path / "run"),
                 "--report-to", "none"]) == 2
    assert capsys.readouterr().err == f"clfa: error: {missing}: no such folder\n"
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--dataset", "jsonl", "--lerning-rate", "1e-3"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith("error: unrecognized arguments: --lerning-rate 1e-3 (did you "
                                                            "mean --learning-rate?)")
    from clfa.launch import first_process

    assert first_process()  # it speaks for the run: its notes, and the check of the run lock
    monkeypatch.setenv("LOCAL_RANK", "1")  # a launcher's second process on this machine: its first says it
    assert not first_process()
    with pytest.raises(SystemExit):
        main(["train", "--dataset", "jsonl", "--lerning-rate", "1e-3"])
    assert capsys.readouterr().err == ""


def test_under_a_launcher_every_machine_says_a_command_line_error_once():
    """Each machine's log is its own: the first process of each says what every process there finds wrong in the
    command line, as it says the other errors every process meets alike."""
    runs = launched(["train", "--dataset", "jsonl", "--lerning-rate", "1e-3"], processes=2, first_rank=2)  # machine 2 of 2
    assert [status for status, _, _ in runs] == [2, 2]
    assert runs[0][2].splitlines()[-1].endswith("unrecognized arguments: --lerning-rate 1e-3 (did you mean --learning-rate?)")
    assert runs[1][2] == ""


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



def test_heatmaps_option_and_model_errors_do_not_wait_for_matplotlib(tmp_path):
    """Its figure format was checked first, and so every heatmap error waited for matplotlib to import."""
    data, png = ["--dataset", "jsonl", "--data-dir", str(tmp_path)], ["--output", str(tmp_path / "h.png")]
    model = str(tmp_path / "no-model")
    statuses, stderr, imported = run_in_a_new_process([
        ["heatmap", "--model", "m", *data, *png, "--samples", "1"],
        ["heatmap", "--model", model, *data, *png],
        ["heatmap", "--model", "m", *data, *png, "--dev-file", "d.jsonl"],
        ["heatmap", "--model", model, *data, "--output", str(tmp_path / "h.xyz")]], watched=("matplotlib",))
    assert statuses == [2] * 4 and imported == []
    assert stderr.count(f"{model}: no such folder") == 2


def test_a_refused_heatmap_leaves_no_folder_for_its_output(tmp_path, capsys):
    """The output's folder was made first, and stayed when the format or a model was then refused."""
    model = tmp_path / "model"
    model.mkdir()
    data = ["--dataset", "jsonl", "--data-dir", str(tmp_path)]
    assert main(["heatmap", "--model", str(model), *data, "--output", str(tmp_path / "new" / "h.xyz")]) == 2
    assert main(["heatmap", "--model", str(tmp_path / "no-model"), *data, "--output", str(tmp_path / "new" / "h.png")]) == 2
    assert ".xyz is no image format" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()

def test_demo_takes_its_folder_as_output_dir_as_train_and_export_do():
    from clfa.cli import build_parser

    assert build_parser().parse_args(["demo", "--output-dir", "x"]).out == "x"
    assert build_parser().parse_args(["demo", "--out", "y"]).out == "y"
