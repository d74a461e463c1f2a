"""The checks the commands make before their work, and the libraries they import quieted and kept out of the garbage
collector's rounds (clfa.cli.checks)."""

from __future__ import annotations

import json

import pytest

from clfa.predict import Predictor
from test_predict import save_model


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


def test_the_command_leaves_what_it_imports_out_of_the_garbage_collectors_rounds(tiny_models, tiny_dataset, tmp_path):
    """torch and transformers make some 400,000 objects on import, alive until the process ends: the collector went
    through them again and again as they were made and at exit, 1.2 s of a 5.5 s `clfa predict`. In a process of its own
    the command freezes them, and answers as before; called in-process, it freezes none of its caller's objects."""
    import gc
    import subprocess
    import sys

    from clfa.cli import main

    save_model(tiny_models, tmp_path / "model")
    text, image = "what a lovely day", tiny_dataset / "images" / "0.png"
    argv = ["predict", "--model", str(tmp_path / "model"), "--text", text, "--image", str(image)]
    script = ("import atexit, gc, runpy, sys\n"
              "atexit.register(lambda: print('frozen at exit:', gc.get_freeze_count(), file=sys.stderr))\n"
              f"sys.argv = ['clfa', *{argv!r}]\n"
              "runpy.run_module('clfa.cli', run_name='__main__')\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert int(run.stderr.splitlines()[-1].removeprefix("frozen at exit: ")) > 100_000
    answer, expected = json.loads(run.stdout), Predictor.from_pretrained(tmp_path / "model", device="cpu").predict(text, image)
    assert answer["label"] == expected["label"]
    assert answer["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-5)

    frozen = gc.get_freeze_count()
    assert main(argv) == 0
    assert gc.get_freeze_count() == frozen and gc.isenabled()


def test_progress_false_hides_the_weight_loading_bars_under_verbose_too(tiny_models, tiny_dataset, tmp_path, monkeypatch, capsys):
    import transformers

    from clfa.cli import main

    monkeypatch.setattr(transformers.utils.logging, "_tqdm_active", True)  # as a new process starts
    save_model(tiny_models, tmp_path / "model")
    capsys.readouterr()
    assert main(["-v", "predict", "--model", str(tmp_path / "model"), "--input", str(tiny_dataset / "test.jsonl"), "--progress", "false"]) == 0
    assert "Loading weights" not in capsys.readouterr().err
