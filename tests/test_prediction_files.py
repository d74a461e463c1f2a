"""Predictions are written as they are made; a file takes its name only when whole, and a run that stops keeps what
it made, under a name that says so."""

import csv
import json
import os
import stat
import threading

import pytest

from clfa.prediction_files import PredictionsCut, partial_path, write_predictions

LABELS = ["negative", "positive"]


def results(count, fail_after=None, error=RuntimeError("the GPU fell over")):
    for i in range(count):
        if i == fail_after:
            raise error
        yield {"id": str(i), "label": LABELS[i % 2], "probabilities": {"negative": 0.25, "positive": 0.75}}


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
    assert rows == [["id", "label", "p_negative", "p_positive"], ["0", "negative", "0.25", "0.75"],
                    ["1", "positive", "0.25", "0.75"], ["2", "negative", "0.25", "0.75"]]


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
