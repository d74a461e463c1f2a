"""``clfa export`` (clfa.cli.export): a folder that holds what prediction needs, says what the model is and how it
scored, and can leave the trainer's machine; a run that has not finished is not shipped."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clfa.cli import main
from clfa.data.registry import load_dataset
from clfa.errors import OptionError
from clfa.predict import Predictor
from clfa.training import train
from conftest import tiny_options
from test_predict import records_of, save_model


def test_an_exported_run_leaves_the_machine_with_its_card_and_no_local_paths(tiny_models, tiny_dataset, tmp_path):
    """metrics.json and config.json were copied with the trainer's folders (data, students, teacher, cache, run), and
    no README said what the model is, its labels, its scores or how to use it."""
    students = tmp_path / "home" / "alice" / "models"
    shutil.copytree(Path(tiny_models["text"]).parent, students)
    models = {"text": str(students / "bert"), "image": str(students / "vit"), "teacher": str(students / "clip")}
    run = tmp_path / "home" / "alice" / "runs" / "sarcasm"
    train(tiny_options(models, tmp_path / "home" / "alice", epochs=1, output_dir=str(run)), load_dataset("jsonl", tiny_dataset))
    assert main(["export", "--model", str(run), "--output-dir", str(tmp_path / "ship")]) == 0

    moved = tmp_path / "elsewhere" / "sarcasm-model"  # another machine: no students, teacher, run or cache
    shutil.copytree(tmp_path / "ship", moved)
    shutil.rmtree(tmp_path / "home")
    for file in moved.iterdir():
        assert str(tmp_path) not in file.read_text(errors="replace"), file.name
    metrics = json.loads((moved / "metrics.json").read_text())
    assert metrics["data_dir"] == "data" and metrics["files"]["test"] == "data/test.jsonl"
    assert metrics["best_checkpoint"].startswith("sarcasm/checkpoints/checkpoint-")
    assert {key: metrics["options"][key] for key in ("output_dir", "text_model", "teacher")} == {
        "output_dir": "sarcasm", "text_model": "bert", "teacher": "clip"}
    config = json.loads((moved / "config.json").read_text())
    assert (config["text_model_name"], config["image_model_name"], config["teacher_model_name"]) == ("bert", "vit", "clip")

    card = (moved / "README.md").read_text()
    assert card.startswith("---\ntags:\n- clfa\n") and "# ship\n" in card
    assert "| 0 | `negative` |" in card and "| 1 | `positive` (positive class) |" in card
    test = metrics["test"]
    assert f"| test | 16 | {100 * test['accuracy']:.2f} | {100 * test['precision']:.2f} |" in card
    assert "clfa predict --model ship --text " in card and 'Predictor.from_pretrained("ship")' in card

    # Offline, from another folder, as another user would: the same predictions as the run made.
    command = [sys.executable, "-m", "clfa.cli", "predict", "--model", str(moved), "--input", str(tiny_dataset / "test.jsonl"),
               "--progress", "false"]
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "CLFA_CACHE": str(tmp_path / "cache2"),
                        "PYTHONPATH": os.pathsep.join(sys.path)}
    shipped = subprocess.run(command, env=env, cwd=tmp_path / "elsewhere", capture_output=True, text=True, check=True)
    records = load_dataset("jsonl", tiny_dataset)["test"]
    probabilities = Predictor.from_pretrained(moved, device="cpu").run(records, progress=False)["probabilities"]
    predictions = [json.loads(line) for line in shipped.stdout.splitlines()]
    assert [p["id"] for p in predictions] == [r.id for r in records]
    assert [p["label"] for p in predictions] == [["negative", "positive"][i] for i in probabilities.argmax(-1)]
    assert test["accuracy"] == sum(p["label"] == r.label for p, r in zip(predictions, records)) / len(records)


def test_a_run_given_a_relative_output_dir_is_named_from_its_own_folder_down(tiny_models, tiny_dataset, tmp_path, monkeypatch):
    """--output-dir runs/sarcasm, as the README writes it, is recorded as given and its best checkpoint absolute: the
    copy named the checkpoint by its own folder alone (checkpoint-N) and kept the folders above the run (runs/)."""
    monkeypatch.chdir(tmp_path)
    train(tiny_options(tiny_models, tmp_path, epochs=1, output_dir="runs/sarcasm"), load_dataset("jsonl", tiny_dataset))
    assert main(["export", "--model", "runs/sarcasm", "--output-dir", "ship"]) == 0
    metrics = json.loads((tmp_path / "ship" / "metrics.json").read_text())
    assert metrics["best_checkpoint"].startswith("sarcasm/checkpoints/checkpoint-")
    assert metrics["options"]["output_dir"] == "sarcasm"


def test_local_models_given_relative_are_recorded_absolute_and_exported_by_their_names(tiny_models, tiny_dataset, tmp_path,
                                                                                      monkeypatch):
    """--text-model models/bert, a folder beside the command, was recorded as typed: it read as a hub name, the export
    shipped it as one, and the run read from another folder could not find its models."""
    work = tmp_path / "work"
    shutil.copytree(Path(tiny_models["text"]).parent, work / "models")
    monkeypatch.chdir(work)
    assert main(["train", "--dataset", "jsonl", "--data-dir", str(tiny_dataset), "--output-dir", "runs/sarcasm",
                 "--text-model", "models/bert", "--image-model", "models/vit", "--teacher", "./models/clip",
                 "--mapping-hidden-dim", "32", "--fusion-layers", "1", "--fusion-heads", "2", "--fusion-ffn-dim", "32",
                 "--epochs", "1", "--num-workers", "0", "--report-to", "none", "--progress", "false",
                 "--cache-dir", str(tmp_path / "cache")]) == 0

    monkeypatch.chdir(tmp_path)
    run = work / "runs" / "sarcasm"
    options = json.loads((run / "metrics.json").read_text())["options"]
    config = json.loads((run / "config.json").read_text())
    for name, option, key in (("bert", "text_model", "text_model_name"), ("vit", "image_model", "image_model_name"),
                              ("clip", "teacher", "teacher_model_name")):
        assert options[option] == config[key] == str(work / "models" / name) and Path(options[option]).is_dir()

    assert main(["export", "--model", str(run), "--output-dir", "ship"]) == 0
    shipped = {file.name: file.read_text(errors="replace") for file in (tmp_path / "ship").iterdir()}
    assert not [name for name, text in shipped.items() if "models/" in text or str(tmp_path) in text]
    config = json.loads(shipped["config.json"])
    assert (config["text_model_name"], config["image_model_name"], config["teacher_model_name"]) == ("bert", "vit", "clip")
    assert "| text student | `bert` (bert) |" in shipped["README.md"]

    from clfa import training

    # A name that is no folder here is the hub's, and is kept as given.
    hub = "google/vit-base-patch32-224-in21k"
    assert training._model_folders_absolute(tiny_options(tiny_models, tmp_path, image_model=hub)).image_model == hub


def test_a_run_that_has_not_finished_is_not_exported(tiny_models, tmp_path, capsys):
    """A run stopped after writing its model but before its metrics.json was shipped as a model without scores; one
    still training was "not a trained model folder", though it is the folder clfa train wrote."""
    run = tmp_path / "run"
    save_model(tiny_models, run)
    checkpoint = run / "checkpoints" / "checkpoint-6"
    checkpoint.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(run / name, checkpoint / name)
    capsys.readouterr()
    assert main(["export", "--model", str(run), "--output-dir", str(tmp_path / "ship")]) == 2
    assert capsys.readouterr().err == (f"clfa: error: {run}: a run that has not finished (no metrics.json beside its model); "
                                       f"give its last checkpoint, {checkpoint}, or finish the run (clfa train ... --resume)\n")
    assert not (tmp_path / "ship").exists()
    assert main(["export", "--model", str(checkpoint), "--output-dir", str(tmp_path / "ship")]) == 0
    assert "No scores came with this model" in (tmp_path / "ship" / "README.md").read_text()
    for name in ("config.json", "model.safetensors"):  # still training: the tokenizer and image processor only
        (run / name).unlink()
    with pytest.raises(OptionError, match=r"run: a run that has not finished \(no config.json, model.safetensors\); give its "
                                          r"last checkpoint, .*checkpoint-6, or finish the run"):
        Predictor.from_pretrained(run, device="cpu")


def test_export_writes_only_what_prediction_needs_and_predicts_the_same(tiny_models, tiny_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    save_model(tiny_models, run)
    (run / "metrics.json").write_text(json.dumps({"test": {"accuracy": 0.5}}))
    (run / "checkpoints" / "checkpoint-6").mkdir(parents=True)
    (run / "checkpoints" / "checkpoint-6" / "optimizer.pt").write_bytes(b"a pickle")
    (run / "training_args.bin").write_bytes(b"a pickle")
    assert main(["export", "--model", str(run), "--output-dir", str(tmp_path / "ship")]) == 0
    shipped = {path.name for path in (tmp_path / "ship").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json",
            "metrics.json", "README.md"} <= shipped
    assert all(name.endswith((".json", ".safetensors", ".txt", ".md")) for name in shipped), shipped
    # Readable as the config beside them is (safetensors alone would write them for their owner only).
    assert all((tmp_path / "ship" / name).stat().st_mode & 0o777 == (run / "config.json").stat().st_mode & 0o777
               for name in shipped)
    assert f"exported {run} to {tmp_path / 'ship'}" in capsys.readouterr().err
    records = records_of(tiny_dataset)
    before = Predictor.from_pretrained(run, device="cpu").run(records, progress=False)["probabilities"]
    after = Predictor.from_pretrained(tmp_path / "ship", device="cpu").run(records, progress=False)["probabilities"]
    assert (before == after).all()
    assert main(["export", "--model", str(run), "--output-dir", str(tmp_path / "ship")]) == 2
    assert "--output-dir " + str(tmp_path / "ship") + ": not empty; give a new folder" in capsys.readouterr().err
    # A model that does not load leaves no folder.
    assert main(["export", "--model", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "none")]) == 2
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize("fails", ["weights", "card"])
def test_an_export_the_disk_cannot_take_is_named_in_one_line_and_leaves_nothing(tiny_models, tmp_path, capsys, monkeypatch,
                                                                                fails):
    """A full disk was a traceback: safetensors' own SafetensorError for the weights, an OSError for the files after
    them."""
    import safetensors.torch
    from safetensors import SafetensorError

    run = tmp_path / "run"
    save_model(tiny_models, run)
    (run / "metrics.json").write_text(json.dumps({"test": {"accuracy": 0.5}}))
    if fails == "weights":  # as safetensors says it, the system's error in its text
        full = SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        monkeypatch.setattr(safetensors.torch, "serialize_file", lambda *args, **kwargs: (_ for _ in ()).throw(full))
    else:
        monkeypatch.setattr("clfa.export.write_extras", lambda *args: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    (tmp_path / "empty").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    for given, kept in (("empty", "empty"), ("link", "link"), ("new/deeper/ship", "")):
        capsys.readouterr()
        assert main(["export", "--model", str(run), "--output-dir", str(tmp_path / given)]) == 2
        assert capsys.readouterr().err == f"clfa: error: --output-dir {tmp_path / given}: cannot be written (No space left on device)\n"
        assert not (tmp_path / "new").exists()  # the folders it made go too
        assert not list(tmp_path.glob(".*partial*"))
        if kept:
            assert (tmp_path / kept).is_dir() and not any((tmp_path / kept).iterdir())


def test_an_export_killed_half_way_leaves_no_model_and_can_be_run_again(tiny_models, tmp_path, monkeypatch):
    """An export killed (SIGKILL, power loss: no clean-up runs) after the tokenizer and image processor but before
    metrics.json and the check that the copy loads left a folder that passed for a whole export, and refused a rerun."""
    import signal

    run = tmp_path / "run"
    save_model(tiny_models, run)
    (run / "metrics.json").write_text(json.dumps({"test": {"accuracy": 0.5}}))
    ship = tmp_path / "ship"
    killed = ("import os, signal, clfa.export\n"
              "clfa.export.write_extras = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n"
              "from clfa.cli import main\n"
              f"main(['export', '--model', {str(run)!r}, '--output-dir', {str(ship)!r}])\n")
    assert subprocess.run([sys.executable, "-c", killed]).returncode == -signal.SIGKILL
    assert not ship.exists() or not any(ship.iterdir())  # nothing that passes for a model
    with pytest.raises(OptionError, match="not a trained model folder"):
        Predictor.from_pretrained(ship, device="cpu")
    assert main(["export", "--model", str(run), "--output-dir", str(ship)]) == 0
    assert (ship / "metrics.json").is_file() and (ship / "model.safetensors").is_file()


def test_export_into_the_working_folder_or_a_mount_point_writes_in_place(tiny_models, tmp_path, monkeypatch, capsys):
    """`--output-dir .` had no name to stage beside (ValueError), and a mount point cannot be removed and replaced."""
    run = tmp_path / "run"
    save_model(tiny_models, run)
    ship = tmp_path / "ship"
    ship.mkdir()
    monkeypatch.chdir(ship)
    assert main(["export", "--model", str(run), "--output-dir", "."]) == 0
    assert (ship / "model.safetensors").is_file() and not list(tmp_path.glob(".*partial*"))
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    monkeypatch.chdir(tmp_path)
    real_ismount = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda path: Path(path) == mounted or real_ismount(path))
    assert main(["export", "--model", str(run), "--output-dir", str(mounted)]) == 0
    assert (mounted / "model.safetensors").is_file() and not list(tmp_path.glob(".*partial*"))
