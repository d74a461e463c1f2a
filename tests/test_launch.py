"""Under torchrun or accelerate launch, which process says what (clfa.launch): an error every process meets is said
once a machine, and each process still ends with the command's status."""

from __future__ import annotations

import pytest

import clfa
from clfa.cli import main
from conftest import write_dataset


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
