"""Progress bars are drawn where stderr is a terminal and left out where it is a file (`clfa train ... > run.log
2>&1`, a batch scheduler's log), where every redraw would stay as carriage returns and cursor moves; --progress,
given or in a --config file, decides over both."""

import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import transformers
from transformers import AutoImageProcessor, AutoTokenizer

import clfa
from clfa import CLFAModel
from clfa.cli import main

REDRAWS = ("\r", "\x1b")  # a bar's redraw, and the cursor moves of bars drawn one above another


def drawn(text: str) -> bool:
    return any(redraw in text for redraw in REDRAWS)


def train_command(tiny_models, data: Path, out: Path) -> list[str]:
    return ["train", "--dataset", "jsonl", "--data-dir", str(data), "--text-model", tiny_models["text"],
            "--image-model", tiny_models["image"], "--teacher", tiny_models["teacher"], "--mapping-hidden-dim", "32",
            "--fusion-layers", "1", "--fusion-heads", "2", "--fusion-ffn-dim", "32", "--epochs", "1", "--num-workers", "0",
            "--report-to", "none", "--output-dir", str(out / "run"), "--cache-dir", str(out / "cache")]


def as_terminal(monkeypatch) -> None:
    """The command's stderr (capsys's, which is set anew between a fixture and the test) taken for a terminal."""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)


@pytest.fixture
def model(tiny_models, tmp_path) -> Path:
    path = tmp_path / "model"
    torch.manual_seed(0)
    CLFAModel.from_encoders(tiny_models["text"], tiny_models["image"], labels=["negative", "positive"], align_dim=24,
                            fusion_heads=2, max_text_length=12).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_models["text"]).save_pretrained(path)
    AutoImageProcessor.from_pretrained(tiny_models["image"]).save_pretrained(path)
    return path


def test_a_training_run_logged_to_a_file_shows_its_progress_as_lines_without_bars(tiny_models, tiny_dataset, tmp_path):
    """The image cache, the teacher's embeddings and the Trainer's steps and evaluations would each draw a bar."""
    log = tmp_path / "run.log"
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(Path(clfa.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    with log.open("w") as file:  # > run.log 2>&1
        run = subprocess.run([sys.executable, "-m", "clfa.cli", *train_command(tiny_models, tiny_dataset, tmp_path)],
                             stdout=file, stderr=subprocess.STDOUT, env=env, timeout=300)
    text = log.read_text()
    assert run.returncode == 0, text[-3000:]
    assert not drawn(text), text[-3000:]
    assert re.search(r"^step 6/6 \(epoch 1\): eval_loss [\d.]+, eval_accuracy", text, re.MULTILINE)
    assert re.search(r"^step 6/6 \(epoch 1\): train_runtime", text, re.MULTILINE)


def test_training_on_a_terminal_draws_bars_unless_its_config_file_says_false(tiny_models, tiny_dataset, tmp_path, capsys,
                                                                             monkeypatch):
    as_terminal(monkeypatch)
    assert main(train_command(tiny_models, tiny_dataset, tmp_path / "shown")) == 0
    err = capsys.readouterr().err
    assert "\r" in err and "caching images" in err and "teacher embeddings" in err
    assert "step 6/6 (epoch 1): eval_loss" in err  # the log lines, written between the bars
    config = tmp_path / "opts.yaml"
    config.write_text("progress: false\n")
    assert main([*train_command(tiny_models, tiny_dataset, tmp_path / "hidden"), "--config", str(config)]) == 0
    err = capsys.readouterr().err
    assert not drawn(err) and re.search(r"^step 6/6 \(epoch 1\): eval_loss", err, re.MULTILINE)


def commands(model: Path, data: Path) -> dict[str, list[str]]:
    return {"evaluate": ["evaluate", "--model", str(model), "--dataset", "jsonl", "--data-dir", str(data)],
            "predict": ["predict", "--model", str(model), "--input", str(data / "test.jsonl"), "--output", str(data / "p.jsonl")],
            "data check": ["data", "check", "--dataset", "jsonl", "--data-dir", str(data)]}


@pytest.mark.parametrize("command", ["evaluate", "predict", "data check"])
def test_a_command_whose_stderr_is_a_file_draws_no_bar_unless_told_to(model, tiny_dataset, capsys, monkeypatch, command):
    monkeypatch.setattr(transformers.utils.logging, "_tqdm_active", True)  # as a new process starts
    argv = commands(model, tiny_dataset)[command]
    # Under -v the weights' loading bars would show as well.
    assert main(["-v", *argv] if command != "data check" else argv) == 0
    assert not drawn(capsys.readouterr().err)
    assert main([*argv, "--progress", "true"]) == 0
    assert "\r" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["evaluate", "predict", "data check"])
def test_a_command_on_a_terminal_draws_its_bar_unless_told_not_to(model, tiny_dataset, capsys, monkeypatch, command):
    as_terminal(monkeypatch)
    argv = commands(model, tiny_dataset)[command]
    assert main(argv) == 0
    assert "\r" in capsys.readouterr().err
    assert main([*argv, "--progress", "false"]) == 0
    assert "\r" not in capsys.readouterr().err  # a terminal may still be given colours (rich's escapes)


def test_a_predictor_from_python_draws_its_bar_where_the_command_would(model, tiny_dataset, capsys, monkeypatch):
    """A script whose stderr is a file (`python score.py 2> score.log`) drew a bar, every redraw kept in its log."""
    from clfa.data.custom import read_custom
    from clfa.options import progress_bars
    from clfa.predict import Predictor

    predictor = Predictor.from_pretrained(model, device="cpu")
    records = read_custom(tiny_dataset / "test.jsonl")
    capsys.readouterr()  # transformers' own bar of the weights' loading
    predictor.run(records, batch_size=4)
    list(predictor.iter_predictions(records, batch_size=4))
    assert not drawn(capsys.readouterr().err)
    predictor.run(records, batch_size=4, progress=True)
    assert "\r" in capsys.readouterr().err
    as_terminal(monkeypatch)
    predictor.run(records, batch_size=4)
    assert "\r" in capsys.readouterr().err
    predictor.run(records, batch_size=4, progress=False)
    assert "\r" not in capsys.readouterr().err
    # In a Jupyter kernel tqdm.auto draws widgets (or, without ipywidgets, text the notebook folds): wanted there too.
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert not progress_bars()
    monkeypatch.setitem(sys.modules, "ipykernel.zmqshell", types.ModuleType("ipykernel.zmqshell"))  # what a kernel loads
    assert progress_bars() and not progress_bars(False)


def test_training_options_made_in_python_draw_bars_where_the_command_would(monkeypatch):
    """TrainOptions() in a script whose stderr is a file drew bars; given, the value is kept either way."""
    from clfa.options import TrainOptions

    assert TrainOptions().progress is False  # pytest's stderr is no terminal
    as_terminal(monkeypatch)
    assert TrainOptions().progress is True
    assert TrainOptions(progress=False).progress is False
