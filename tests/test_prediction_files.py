"""Predictions are written as they are made; a file takes its name only when whole, and a run that stops keeps what
it made, under a name that says so."""

import csv
import json
import os
import re
import stat
import threading

import pytest
import torch
from transformers import AutoImageProcessor, AutoTokenizer

from clfa import CLFAModel
from clfa.cli import main
from clfa.data.records import DataError, Record
from clfa.data.registry import load_dataset
from clfa.prediction_files import EVALUATE_FIELDS, PredictionsCut, evaluation_rows, partial_path, write_predictions
from clfa.predict import Predictor

LABELS = ["negative", "positive"]


def results(count, fail_after=None, error=RuntimeError("the GPU fell over")):
    for i in range(count):
        if i == fail_after:
            raise error
        yield {"id": str(i), "label": LABELS[i % 2], "probabilities": {"negative": 0.25, "positive": 0.75}, "text": f"text {i}",
               "image": f"/images/{i}.png"}


def test_a_whole_run_replaces_the_file_and_keeps_its_permissions(tmp_path):
    out = tmp_path / "pred.jsonl"
    out.write_text("old\n")
    out.chmod(0o640)
    assert write_predictions(results(5), LABELS, out) == 5
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["0", "1", "2", "3", "4"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert not partial_path(out).exists()


@pytest.mark.parametrize("error", [RuntimeError("the GPU fell over"), KeyboardInterrupt()])
def test_a_run_that_stops_keeps_what_it_made_and_leaves_the_old_file_as_it_was(tmp_path, error):
    out = tmp_path / "pred.csv"
    out.write_text("a file from before\n")
    with pytest.raises(PredictionsCut, match=r"^3 prediction\(s\) made before the stop are in .*pred\.csv\.partial$") as cut:
        write_predictions(results(10, fail_after=3, error=error), LABELS, out)
    assert cut.value.__cause__ is error and cut.value.written == 3
    assert out.read_text() == "a file from before\n"
    rows = list(csv.reader(cut.value.path.open(newline="")))
    assert rows == [["id", "label", "p_negative", "p_positive", "text", "image"], ["0", "negative", "0.25", "0.75", "text 0", "/images/0.png"],
                    ["1", "positive", "0.25", "0.75", "text 1", "/images/1.png"], ["2", "negative", "0.25", "0.75", "text 2", "/images/2.png"]]


@pytest.mark.parametrize("stem", ["p" * 245, "é" * 122, "q" * 120 + "é" * 62])
def test_a_name_near_the_file_systems_limit_still_has_a_partial_file_beside_it(tmp_path, stem):
    out, other = tmp_path / f"{stem}.jsonl", tmp_path / f"{stem}.csv"
    assert 255 - len(".partial") < len(os.fsencode(out.name)) <= 255
    with pytest.raises(PredictionsCut) as cut:
        write_predictions(results(10, fail_after=2), LABELS, out)
    partial = cut.value.path
    assert partial.parent == tmp_path and partial.name.startswith("ppp" if stem[0] == "p" else stem[0])
    assert partial.name.endswith(".partial") and len(os.fsencode(partial.name)) <= 255
    assert [json.loads(line)["id"] for line in partial.read_text().splitlines()] == ["0", "1"]
    assert partial_path(other) != partial  # two long names that share their start
    assert write_predictions(results(3), LABELS, out) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]


def test_a_run_that_stops_before_its_first_prediction_leaves_no_file(tmp_path):
    out = tmp_path / "pred.jsonl"
    with pytest.raises(RuntimeError, match="the GPU fell over"):
        write_predictions(results(10, fail_after=0), LABELS, out)
    assert list(tmp_path.iterdir()) == []


def test_through_a_link_the_file_it_points_to_is_replaced(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "pred.jsonl"
    target.write_text("old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    assert write_predictions(results(2), LABELS, link) == 2
    assert link.is_symlink() and len(target.read_text().splitlines()) == 2
    assert sorted(path.name for path in (tmp_path / "real").iterdir()) == ["pred.jsonl"]


def test_a_pipe_is_written_as_the_predictions_come(tmp_path):
    fifo = tmp_path / "pred.fifo"
    os.mkfifo(fifo)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(fifo.open().read().splitlines()))
    reader.start()
    assert write_predictions(results(4), LABELS, fifo) == 4
    reader.join(timeout=30)
    assert [json.loads(line)["id"] for line in lines] == ["0", "1", "2", "3"]
    assert not partial_path(fifo).exists()


def test_stdout_gets_json_lines(capsys):
    assert write_predictions(results(2), LABELS, None) == 2
    assert [json.loads(line)["label"] for line in capsys.readouterr().out.splitlines()] == ["negative", "positive"]


def test_an_open_pipe_named_as_a_path_is_written_directly(tmp_path):
    """/dev/stdout or a shell's >(...) is /dev/fd/N: through /proc it resolves to a name such as "pipe:[1234]"."""
    read, write = os.pipe()
    got = []
    reader = threading.Thread(target=lambda: got.extend(os.fdopen(read).read().splitlines()))
    reader.start()
    try:
        assert write_predictions(results(3), LABELS, f"/dev/fd/{write}") == 3
    finally:
        os.close(write)
    reader.join(timeout=30)
    assert [json.loads(line)["id"] for line in got] == ["0", "1", "2"]


def test_a_partial_file_left_as_a_link_is_replaced_not_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere.jsonl"
    elsewhere.write_text("not to be touched\n")
    out = tmp_path / "pred.jsonl"
    partial_path(out).symlink_to(elsewhere)
    assert write_predictions(results(2), LABELS, out) == 2
    assert not out.is_symlink() and len(out.read_text().splitlines()) == 2
    assert elsewhere.read_text() == "not to be touched\n" and not partial_path(out).exists()


@pytest.fixture
def model(tiny_models, tmp_path):
    """An untrained model whose wide initial weights tell the samples apart: some of its predictions are right, some wrong."""
    path = tmp_path / "model"
    torch.manual_seed(0)
    CLFAModel.from_encoders(tiny_models["text"], tiny_models["image"], labels=LABELS, align_dim=24, fusion_heads=2,
                            max_text_length=12, initializer_range=0.5).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_models["text"]).save_pretrained(path)
    AutoImageProcessor.from_pretrained(tiny_models["image"]).save_pretrained(path)
    return path


def evaluate(model, data, *flags):
    return main(["evaluate", "--model", str(model), "--dataset", "jsonl", "--data-dir", str(data), "--split", "dev", "test",
                 "--batch-size", "8", "--progress", "false", *flags])


def test_evaluate_writes_a_row_per_record_that_gives_the_figures_it_reports(model, tiny_dataset, tmp_path, capsys, monkeypatch):
    batches, forward = [], Predictor._forward
    monkeypatch.setattr(Predictor, "_forward", lambda self, batch: batches.append(len(batch["input_ids"])) or forward(self, batch))
    capsys.readouterr()
    assert evaluate(model, tiny_dataset, "--output", str(tmp_path / "metrics.json"), "--predictions", str(tmp_path / "rows.jsonl")) == 0
    printed, said = capsys.readouterr()
    assert batches == [8, 8, 8, 8]  # 16 records a split: the rows are made from the probabilities the figures came from
    assert f"32 predictions written to {tmp_path / 'rows.jsonl'}" in said
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    records = {(split, record["id"]): record for split in ("dev", "test")
               for record in map(json.loads, (tiny_dataset / f"{split}.jsonl").read_text().splitlines())}
    assert [(row["split"], row["id"]) for row in rows] == list(records)  # each record once, in the files' order
    for row in rows:
        record = records[row["split"], row["id"]]
        assert list(row) == list(EVALUATE_FIELDS)
        assert (row["true_label"], row["text"], row["image"]) == (record["label"], record["text"],
                                                                  str((tiny_dataset / record["image"]).resolve()))
        assert row["label"] == max(row["probabilities"], key=row["probabilities"].get)
        assert row["correct"] == (row["label"] == row["true_label"])
        assert sum(row["probabilities"].values()) == pytest.approx(1, abs=1e-5)
        assert all(round(p, 6) == p for p in row["probabilities"].values())
    assert 0 < sum(row["correct"] for row in rows) < len(rows)  # right and wrong ones, for the figures below to tell apart
    for split in ("dev", "test"):
        of_split = [row for row in rows if row["split"] == split]
        accuracy = sum(row["correct"] for row in of_split) / len(of_split)
        assert accuracy == pytest.approx(metrics[split]["accuracy"])
        assert re.search(rf"^│ {split} +│ +{100 * accuracy:.2f} │", printed, re.MULTILINE)
        assert [[sum((row["true_label"], row["label"]) == (true, predicted) for row in of_split) for predicted in LABELS]
                for true in LABELS] == metrics[split]["confusion_matrix"]["matrix"]

    assert evaluate(model, tiny_dataset, "--predictions", str(tmp_path / "rows.csv")) == 0
    table = list(csv.reader((tmp_path / "rows.csv").open(newline="")))
    assert table[0] == ["split", "id", "true_label", "label", "correct", "p_negative", "p_positive", "text", "image"]
    assert table[1:] == [[row["split"], row["id"], row["true_label"], row["label"], str(row["correct"]),
                          *(str(row["probabilities"][label]) for label in LABELS), row["text"], row["image"]] for row in rows]

    # From Python: the same rows, from the probabilities a Predictor computes.
    predictor, test = Predictor.from_pretrained(model, device="cpu"), load_dataset("jsonl", tiny_dataset, labels=LABELS)["test"]
    probabilities = predictor.run(test, progress=False)["probabilities"]
    assert list(evaluation_rows(test, probabilities, predictor.labels, "test")) == [row for row in rows if row["split"] == "test"]


def test_evaluate_writes_its_rows_over_neither_its_metrics_nor_its_data(model, tiny_dataset, tmp_path, capsys):
    test_file, metrics = tiny_dataset / "test.jsonl", str(tmp_path / "metrics.json")
    data = test_file.read_text()
    (tmp_path / "link.jsonl").symlink_to(test_file)
    refused = {
        ("--output", metrics, "--predictions", metrics): f"--predictions {metrics} is the --output file: the predictions would "
                                                         "replace the metrics",
        ("--predictions", str(test_file)): f"--predictions {test_file} is the test file: it would be replaced by what evaluate "
                                           "writes",
        ("--predictions", str(tmp_path / "link.jsonl")): f"--predictions {tmp_path / 'link.jsonl'} is the test file",
        ("--output", str(test_file)): f"--output {test_file} is the test file",
        ("--predictions", str(tmp_path)): f"--predictions {tmp_path} is a folder; give a file name",
    }
    capsys.readouterr()
    for flags, message in refused.items():
        assert evaluate(model, tiny_dataset, *flags) == 2
        assert message in capsys.readouterr().err
    # A file named on the command line is refused before the model is looked for.
    assert main(["evaluate", "--model", str(tmp_path / "no-model"), "--dataset", "jsonl", "--test-file", str(test_file),
                 "--predictions", str(test_file)]) == 2
    assert capsys.readouterr().err == f"clfa: error: --predictions {test_file} is the test file: it would be replaced by what evaluate writes\n"
    assert test_file.read_text() == data and sorted(path.name for path in tmp_path.iterdir()) == ["data", "link.jsonl", "model"]


def test_an_unlabelled_record_has_no_evaluation_row_rather_than_a_wrong_one():
    records = [Record("1", "a day", "1.png", label="positive"), Record("2", "a night", "2.png")]
    rows = evaluation_rows(records, [[0.25, 0.75], [0.75, 0.25]], LABELS, "test")
    assert next(rows)["correct"] is True
    with pytest.raises(DataError, match="record '2' has no label, which evaluation needs"):
        next(rows)
