"""One training run at a time in an output folder, and what the other commands say of a run still training."""

import errno
import threading

import pytest
from transformers import TrainerCallback

from clfa.cli import main
from clfa.data.registry import load_dataset
from clfa.errors import OptionError
from clfa.predict import Predictor
from clfa import run_lock
from clfa.run_lock import hold, training_now
from clfa.training import train
from conftest import Interrupt, tiny_options


class PauseAtFirstSave(TrainerCallback):
    """Holds the run at its first checkpoint until ``go`` is set, as a run on a real dataset is for hours."""

    def __init__(self):
        self.saved, self.go = threading.Event(), threading.Event()

    def on_save(self, args, state, control, **kwargs):
        if not self.saved.is_set():
            self.saved.set()
            self.go.wait(timeout=120)


def test_a_run_still_training_is_neither_joined_by_a_second_run_nor_sent_one(tiny_models, tiny_dataset, tmp_path, capsys):
    """A --resume started while the run was going (as "finish the run (clfa train ... --resume)" told a user who asked
    predict for the folder) trained beside it in the same folder, each saving and rotating checkpoints."""
    opts, data, out = tiny_options(tiny_models, tmp_path, epochs=2), load_dataset("jsonl", tiny_dataset), tmp_path / "run"
    pause, results = PauseAtFirstSave(), {}
    first = threading.Thread(target=lambda: results.update(train(opts, data, callbacks=[pause], quiet=True)))
    first.start()
    try:
        assert pause.saved.wait(timeout=120)
        assert training_now(out)
        for resume in (True, False):
            with pytest.raises(OptionError, match="a run is training there now; wait for it to end, or give another --output-dir"):
                train(opts, data, resume=resume, quiet=True)
        checkpoint = out / "checkpoints" / "checkpoint-6"
        with pytest.raises(OptionError) as err:
            Predictor.from_pretrained(out, device="cpu")
        assert f"it is still training: give its last checkpoint, {checkpoint}" in str(err.value)
        assert "--resume" not in str(err.value)
        assert main(["predict", "--model", str(checkpoint), "--text", "a sunny day", "--image", str(tiny_dataset / "images" / "0.png")]) == 0
    finally:
        pause.go.set()
        first.join(timeout=300)
    assert results["train"]["steps"] == 12 and not training_now(out)
    assert sorted(path.name for path in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-12", "checkpoint-6"]
    Predictor.from_pretrained(out, device="cpu")


def test_a_run_that_stopped_holds_no_lock_and_is_resumed(tiny_models, tiny_dataset, tmp_path):
    opts, data, out = tiny_options(tiny_models, tmp_path, epochs=2), load_dataset("jsonl", tiny_dataset), tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(opts, data, callbacks=[Interrupt()], quiet=True)
    assert not training_now(out)
    with pytest.raises(OptionError, match=r"a run that has not finished .* or finish the run \(clfa train ... --resume\)"):
        Predictor.from_pretrained(out, device="cpu")
    assert train(opts, data, resume=True, quiet=True)["train"]["steps"] == 12


def test_a_folder_where_no_run_trained_is_not_written_by_asking(tmp_path):
    assert not training_now(tmp_path / "nowhere") and not (tmp_path / "nowhere").exists()
    assert not training_now(tmp_path) and not list(tmp_path.iterdir())


def test_a_run_that_has_saved_no_checkpoint_yet_is_named_as_training(tmp_path):
    run = tmp_path / "run"
    with hold(run):  # as a run holds it from its first write, before its first checkpoint
        with pytest.raises(OptionError, match="run: a run that is still training, and has saved no checkpoint yet$"):
            Predictor.from_pretrained(run, device="cpu")
    with pytest.raises(OptionError, match=r"run: not a trained model folder \(no config.json"):
        Predictor.from_pretrained(run, device="cpu")


def test_a_folder_that_cannot_be_locked_trains_unguarded_and_says_so(tmp_path, monkeypatch, caplog):
    """Some cluster file systems have no file locks (flock fails with ENOSYS): the run must go on, not stop there."""

    class NoLocks(run_lock.FileLock):
        def acquire(self, *args, **kwargs):
            raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(run_lock, "FileLock", NoLocks)
    ran = False
    with caplog.at_level("WARNING", logger="clfa"), hold(tmp_path / "run"):
        ran = True
    assert ran and "cannot be locked (Function not implemented)" in caplog.text
