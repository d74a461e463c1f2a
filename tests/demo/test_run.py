"""``clfa demo --quick`` end to end: the table, the model, the metrics and the heat map, and that the
model it writes serves ``clfa evaluate`` and ``clfa predict``."""

import contextlib
import io
import json
import os
import re
import shutil
import sys

import pytest
import transformers

from clfa.cli import main
from clfa.demo.run import VARIANTS, DemoSize, check_out_folder

# For what a demo shows or writes rather than how well it learns: a few seconds on one CPU.
TINY = DemoSize(n_train=48, n_dev=24, n_test=24, image_size=16, teacher_epochs=1, epochs=1, hidden=16, layers=1)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["demo", "--quick", "--output-dir", str(out)]) == 0
    (out / "printed.txt").write_text(printed.getvalue())
    return out


def test_quick_demo_shows_the_multimodal_models_ahead(demo):
    summary = json.loads((demo / "metrics.json").read_text())
    acc = {name: m["test"]["accuracy"] for name, m in summary["models"].items()}
    unimodal = max(acc["BERT (text only)"], acc["ViT (image only)"])
    # The label is decided by the pair only: one modality alone stays near chance.
    assert unimodal < 0.65
    assert acc["CLFA"] >= 0.85 and acc["CLFA"] >= unimodal + 0.25
    assert acc["BERT+ViT"] >= unimodal + 0.1
    assert (demo / "alignment_heatmap.png").stat().st_size > 10_000
    assert (demo / "model" / "model.safetensors").is_file()


def test_the_command_to_try_next_is_printed_on_one_line_to_paste(demo):
    tried = [line for line in (demo / "printed.txt").read_text().splitlines() if line.startswith("try:")]
    assert tried == [f"try:  clfa predict --model {demo / 'model'} --input {demo / 'data' / 'test.jsonl'} --output predictions.jsonl"]


def test_demo_model_serves_evaluate_and_predict(demo, tmp_path, capsys):
    assert main(["evaluate", "--model", str(demo / "model"), "--dataset", "jsonl", "--data-dir", str(demo / "data"), "--output", str(tmp_path / "eval.json")]) == 0
    summary = json.loads((demo / "metrics.json").read_text())
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["test"]["accuracy"] == pytest.approx(summary["models"]["CLFA"]["test"]["accuracy"])
    assert evaluated["model"] == str(demo / "model") and evaluated["dataset"] == "jsonl" and evaluated["device"] == "cpu"
    assert evaluated["labels"] == ["not_sarcastic", "sarcastic"] and evaluated["positive_label"] == "sarcastic"
    assert evaluated["files"] == {"test": str((demo / "data" / "test.jsonl").resolve())}
    assert evaluated["data_options"] == {"labels": ["not_sarcastic", "sarcastic"]}  # a custom file is read with the model's labels

    first = json.loads((demo / "data" / "test.jsonl").read_text().splitlines()[0])
    capsys.readouterr()
    assert main(["predict", "--model", str(demo / "model"), "--text", first["text"], "--image", str(demo / "data" / first["image"])]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in ("sarcastic", "not_sarcastic")


def test_evaluate_output_is_replaced_whole_or_left_as_it_was(demo, tmp_path, monkeypatch):
    (tmp_path / "eval.json").write_text("earlier results")
    (tmp_path / "link.json").symlink_to("eval.json")
    evaluate = ["evaluate", "--model", str(demo / "model"), "--dataset", "jsonl", "--data-dir", str(demo / "data"),
                "--output", str(tmp_path / "link.json")]

    def power_cut(fd):  # the write stopped before the new file was whole on the disk
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", power_cut)
        assert main(evaluate) == 130
    assert (tmp_path / "eval.json").read_text() == "earlier results"
    assert main(evaluate) == 0
    assert json.loads((tmp_path / "eval.json").read_text())["dataset"] == "jsonl"
    assert (tmp_path / "link.json").is_symlink() and sorted(p.name for p in tmp_path.iterdir()) == ["eval.json", "link.json"]


def test_evaluate_reports_the_positive_label_asked_for_and_refuses_other_labels(demo, tmp_path, capsys):
    data = ["--dataset", "jsonl", "--data-dir", str(demo / "data")]
    out = tmp_path / "new" / "folder" / "eval.json"  # made before the work, not found missing after it
    assert main(["evaluate", "--model", str(demo / "model"), *data, "--positive-label", "not_sarcastic", "--output", str(out)]) == 0
    assert json.loads(out.read_text())["test"]["positive_label"] == "not_sarcastic"
    capsys.readouterr()
    assert main(["evaluate", "--model", str(demo / "model"), *data, "--labels", "foo,bar"]) == 2
    assert "clfa: error: --labels foo,bar: the model was trained on the labels" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(demo / "model"), *data, "--positive-label", "bogus"]) == 2
    assert "clfa: error: --positive-label bogus: not one of the model's labels" in capsys.readouterr().err
    # A public dataset brings its own labels: MVSA's three are not the model's two.
    mvsa = tmp_path / "mvsa"
    mvsa.mkdir()
    for split in ("train", "dev", "test"):
        (mvsa / f"{split}.json").write_text(json.dumps([{"id": "1", "text": "a tweet", "emotion_label": 0}] if split == "test" else []))
    (mvsa / "1.jpg").write_bytes((demo / "data" / first_image(demo)).read_bytes())
    assert main(["evaluate", "--model", str(demo / "model"), "--dataset", "mvsa-single", "--data-dir", str(mvsa), "--split", "test"]) == 2
    assert "clfa: error: dataset 'mvsa-single' has the labels positive, neutral, negative; the model was trained on" in capsys.readouterr().err
    # The model's labels may be restated for a public dataset; its other options are refused before the model loads.
    mmsd = ["--dataset", "mmsd", "--data-dir", str(tmp_path / "nowhere")]
    assert main(["evaluate", "--model", str(demo / "model"), *mmsd, "--labels", "not_sarcastic,sarcastic"]) == 2
    assert "nowhere: no such folder" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(tmp_path / "no-model"), *mmsd, "--splits-dir", "s", "--output", str(tmp_path / "o" / "e.json")]) == 2
    assert "clfa: error: --splits-dir does not apply to dataset 'mmsd': only MVSA" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def first_image(demo) -> str:
    return json.loads((demo / "data" / "test.jsonl").read_text().splitlines()[0])["image"]


@pytest.mark.parametrize("flags, message", [
    (["--text", "hi"], "--text and --image go together"),
    (["--text", "hi", "--image", "IMAGE", "--input", "INPUT"], "--input, --output and --skip-invalid are for files of pairs"),
    (["--text", " ", "--image", "IMAGE"], "--text is empty"),
    (["--text", "hi", "--image", "nowhere.png"], "missing image file"),
    ([], "give --text and --image, or --input pairs.jsonl"),
    (["--input", "EMPTY"], "empty.jsonl: no pairs to predict"),
    (["--input", "INPUT", "--output", "FOLDER"], "is a folder; give a file name"),
    (["--input", "INPUT", "--output", "INPUT"], "is the --input file: the predictions would replace the pairs"),
    # Found before the model loads, not after the predictions are made.
    (["--input", "INPUT", "--output", "/proc/predictions.jsonl"], "--output /proc/predictions.jsonl: cannot be written (No such file"),
    (["--input", "INPUT", "--output", "/proc/clfa/predictions.jsonl"], "--output /proc/clfa/predictions.jsonl: its folder cannot be made"),
])
def test_predict_refuses_what_it_would_otherwise_ignore_in_one_line(demo, tmp_path, capsys, flags, message):
    first = json.loads((demo / "data" / "test.jsonl").read_text().splitlines()[0])
    (tmp_path / "empty.jsonl").write_text("\n")
    paths = {"IMAGE": str(demo / "data" / first["image"]), "INPUT": str(demo / "data" / "test.jsonl"), "EMPTY": str(tmp_path / "empty.jsonl"),
             "FOLDER": str(tmp_path)}
    capsys.readouterr()
    assert main(["predict", "--model", str(demo / "model"), *(paths.get(flag, flag) for flag in flags)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("clfa: error: ") and message in err


def test_demo_refuses_an_output_folder_that_is_a_file(tmp_path, capsys):
    (tmp_path / "taken").write_text("")
    assert main(["demo", "--quick", "--out", str(tmp_path / "taken")]) == 2
    assert "clfa: error: --output-dir " in capsys.readouterr().err and (tmp_path / "taken").read_text() == ""


def test_demo_refuses_a_folder_of_other_files_it_would_replace(tmp_path, capsys):
    (tmp_path / "mine" / "data").mkdir(parents=True)
    (tmp_path / "mine" / "data" / "train.jsonl").write_text("keep")
    (tmp_path / "mine" / "metrics.json").write_text('{"accuracy": 0.9}')
    assert main(["demo", "--quick", "--out", str(tmp_path / "mine")]) == 2
    assert capsys.readouterr().err.strip() == (f"clfa: error: --output-dir {tmp_path / 'mine'}: holds data, metrics.json, which the demo "
                                               "would replace, and nothing marks it as a demo's folder (the file .clfa-demo); "
                                               "give another folder")
    assert (tmp_path / "mine" / "data" / "train.jsonl").read_text() == "keep"
    # A demo's folder from before the mark was written is known by its summary.
    (tmp_path / "mine" / "metrics.json").write_text('{"size": {}, "seconds": 40.2, "models": {}}')
    check_out_folder(tmp_path / "mine")


def test_the_demo_runs_again_in_its_own_folder(demo, tmp_path, monkeypatch):
    """A second demo makes its runs anew; an earlier demo's checkpoints are not those of an earlier run to resume."""
    assert (demo / ".clfa-demo").is_file()
    again = shutil.copytree(demo, tmp_path / "demo", symlinks=True)  # the fixture's folder stays as the other tests read it
    earlier = {path.relative_to(again) for path in again.glob("**/checkpoints/checkpoint-*")}
    assert len({path.parent for path in earlier}) == 4  # of each model, which the second demo must clear, not resume
    # The folder and its checkpoints are what is under test, not the size of the runs: the second demo is made small.
    monkeypatch.setattr("clfa.demo.run.QUICK", TINY)
    assert main(["demo", "--quick", "--out", str(again)]) == 0
    assert len(list((again / "model" / "checkpoints").glob("checkpoint-*"))) >= 1
    assert not earlier & {path.relative_to(again) for path in again.glob("**/checkpoints/checkpoint-*")}


REDRAWS = ("\r", "\x1b")  # a bar's redraw, and the cursor moves of bars drawn one above another
# Without bars, TINY's run shows the teacher's epoch, and each model's evaluation (48 pairs: 3 steps of 16) and result.
LINES = [r"^teacher \(CLIP\): epoch 1/1, loss [\d.]+ \(\d+ s\)$",
         *(rf"^{re.escape(name)}: epoch 1/1, step 3/3: dev accuracy [\d.]+ \(\d+ s\)$" for name in VARIANTS),
         *(rf"^{re.escape(name)}: 3 steps in [\d.]+ s; dev accuracy [\d.]+, test accuracy [\d.]+$" for name in VARIANTS)]


def shown_lines(err: str) -> list[str]:
    return [line for line in LINES if re.search(line, err, re.MULTILINE)]


def test_a_demo_whose_stderr_is_a_file_shows_its_progress_as_lines_without_bars(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("clfa.demo.run.QUICK", TINY)
    monkeypatch.setattr(transformers.utils.logging, "_tqdm_active", True)  # as a new process starts
    # Under -v the weights' loading bars would show as well.
    assert main(["-v", "demo", "--quick", "--out", str(tmp_path / "demo")]) == 0
    out, err = capsys.readouterr()
    assert not any(redraw in out + err for redraw in REDRAWS), err[-3000:]
    assert shown_lines(err) == LINES, err[-3000:]


def test_a_demo_on_a_terminal_draws_bars_unless_told_not_to(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("clfa.demo.run.QUICK", TINY)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["demo", "--quick", "--out", str(tmp_path / "bars")]) == 0
    err = capsys.readouterr().err
    assert "\r" in err and "teacher (CLIP):" in err and all(f"{name:<17}:" in err for name in VARIANTS)
    assert shown_lines(err) == []  # the bars say it already
    assert main(["demo", "--quick", "--out", str(tmp_path / "lines"), "--progress", "false"]) == 0
    err = capsys.readouterr().err
    assert not any(redraw in err for redraw in REDRAWS), err[-3000:]
    assert shown_lines(err) == LINES, err[-3000:]
