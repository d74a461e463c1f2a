"""The kinds under which skipped records are counted: the problem without its particulars."""

import pytest

from clfa.data.records import DataError, SkipReport, reason_kind


@pytest.mark.parametrize("reason, kind", [
    ("missing image file /data/7.jpg", "missing image file"),
    ("missing image file data/img/7.jpg", "missing image file"),  # --data-dir given as a relative path
    ("missing image file 7.jpg", "missing image file"),
    ("unreadable image file img\\7.png (OSError: truncated)", "unreadable image file"),
    ("missing text file MVSA_Single/data/12.txt", "missing text file"),
    ("unknown label 'sarcstic' (known labels: neg, pos)", "unknown label"),
    ("malformed line: expected ['<id>', '<text>', <label>] in train.txt", "malformed line: expected"),
    ("malformed line: 'positive,happy'", "malformed line"),
    ('malformed item: expected {"id": ..., "text": ..., "label": 0|1}', "malformed item: expected"),
    ("not UTF-8 text (byte 0xe9); save the file as UTF-8", "not UTF-8 text"),
    ("empty text", "empty text"),
])
def test_a_kind_is_the_reason_without_paths_values_or_details(reason, kind):
    assert reason_kind(reason) == kind


def test_skipped_records_are_written_with_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    report = SkipReport()
    report.add(DataError("missing image file img/1.jpg", file="data/train.jsonl", line=3))
    report.add(DataError("missing image file img/2.jpg", file="data/train.json", line=1, item=4))
    report.add(DataError("missing image file img/3.jpg", file="data/train.json", line=1, item=5))
    assert report.to_json() == [
        {"file": str(tmp_path / "data/train.jsonl"), "line": 3, "reason": "missing image file img/1.jpg"},
        {"file": str(tmp_path / "data/train.json"), "line": 1, "item": 4, "reason": "missing image file img/2.jpg"},
        {"file": str(tmp_path / "data/train.json"), "line": 1, "item": 5, "reason": "missing image file img/3.jpg"},
    ]
    assert report.summary().splitlines()[0] == "skipped 3 invalid record(s): 3 x missing image file"


def test_a_long_skip_summary_counts_every_record_and_lists_the_first_ten():
    report = SkipReport()
    for line in range(1, 12):
        report.add(DataError(f"missing image file img/{line}.jpg", file="train.jsonl", line=line))
    report.add(DataError("unknown label 'sarcstic'", file="train.jsonl", line=12))
    lines = report.summary().splitlines()
    assert lines[0] == "skipped 12 invalid record(s): 11 x missing image file, 1 x unknown label"
    assert lines[1:11] == [f"  train.jsonl:{line}: missing image file img/{line}.jpg" for line in range(1, 11)]
    assert lines[11:] == ["  ... and 2 more"]
    assert len(report.to_json()) == 12
