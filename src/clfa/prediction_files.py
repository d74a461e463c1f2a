"""Predictions written as they are made: JSON Lines or CSV (a ``p_LABEL`` column per class where the JSON has
``probabilities``), to a file or to stdout. ``clfa predict`` writes :data:`PREDICT_FIELDS`; ``clfa evaluate
--predictions`` writes :data:`EVALUATE_FIELDS`, predict's with the split, the true label and whether it was predicted.

A file is written under a ``.partial`` name beside it and takes its own name only once every prediction is in it, so
that a file of that name is always whole; a run that stops half-way leaves what it made in the ``.partial`` file."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

import numpy as np

from clfa.data.records import Record, unlabelled
from clfa.files import regular_file_or_none

# The text and the image are in each row so that a row reads on its own: an error found in it is seen without a look-up
# in the data files (evaluate's rows come from several).
PREDICT_FIELDS = ("id", "label", "probabilities", "text", "image")
EVALUATE_FIELDS = ("split", "id", "true_label", "label", "correct", "probabilities", "text", "image")


def labelled(probabilities, labels: list[str]) -> dict:
    """``{"label", "probabilities"}`` of one record's class probabilities: the label of the highest (the first of equal
    ones, as ``argmax`` takes it to score a split), and each class's probability to 6 decimals."""
    probabilities = np.asarray(probabilities)
    return {"label": labels[int(probabilities.argmax())],
            "probabilities": {name: round(float(p), 6) for name, p in zip(labels, probabilities)}}


def prediction_row(record: Record, result: dict) -> dict:
    """predict's row of ``record``, of which ``result`` is the prediction (:func:`labelled`)."""
    return {"id": str(record.id), **result, "text": record.text, "image": str(record.image)}


def evaluation_rows(records: Iterable[Record], probabilities, labels: list[str], split: str) -> Iterator[dict]:
    """evaluate's row of each of ``records`` (labelled, of ``split``), given their probabilities (N, C) in ``labels``
    order, as ``Predictor.run`` computes them. An unlabelled record is a DataError: it would count as a wrong one."""
    for record, probs in zip(records, probabilities, strict=True):
        if record.label is None:
            raise unlabelled(record, "evaluation")
        row = prediction_row(record, labelled(probs, labels)) | {"split": split, "true_label": record.label}
        row["correct"] = row["label"] == record.label
        yield {field: row[field] for field in EVALUATE_FIELDS}


class PredictionsCut(Exception):
    """The predictions stopped before the last (the cause is ``__cause__``) with ``written`` of them in ``path``."""

    def __init__(self, written: int, path: Path):
        super().__init__(f"{written} prediction(s) made before the stop are in {path}")
        self.written, self.path = written, path


def partial_path(output: str | Path) -> Path:
    """Where the predictions for ``output`` go until they are all made: beside the file a link points to, as that
    file is what is replaced."""
    target = Path(output).resolve()
    name, longest = target.name + _PARTIAL, _longest_name(target.parent)
    if len(os.fsencode(name)) > longest:
        # A name near the file system's limit: its start, then a digest of the whole so that two such names still differ.
        digest = hashlib.sha256(os.fsencode(target.name)).hexdigest()[:12]
        start = target.name
        while len(os.fsencode(f"{start}-{digest}{_PARTIAL}")) > longest:
            start = start[:-1]
        name = f"{start}-{digest}{_PARTIAL}"
    return target.with_name(name)


_PARTIAL = ".partial"


def _longest_name(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # no such folder yet, or no pathconf (Windows)
        return 255


def write_predictions(results: Iterable[dict], labels: list[str], output: str | Path | None,
                      fields: tuple[str, ...] = PREDICT_FIELDS) -> int:
    """Write the ``fields`` of each result as it comes, in that order, CSV for an ``output`` ending in ``.csv``, and
    return how many were written. ``output`` None is stdout. A path that is not a file (a pipe, /dev/stdout) is written
    directly."""
    as_csv = output is not None and Path(output).suffix.lower() == ".csv"
    counter = _Counter(results)
    if output is None:
        _write(counter, labels, fields, sys.stdout, as_csv)
        return counter.count
    if not regular_file_or_none(output):
        # A pipe, /dev/stdout, /dev/fd/N: what reads it reads as it comes, and it cannot be replaced.
        with open(output, "w", encoding="utf-8", newline="" if as_csv else None) as stream:
            _write(counter, labels, fields, stream, as_csv)
        return counter.count
    target, partial = Path(output).resolve(), partial_path(output)
    partial.unlink(missing_ok=True)  # an earlier run's, or a link that open() would follow
    try:
        with open(partial, "w", encoding="utf-8", newline="" if as_csv else None) as stream:
            _write(counter, labels, fields, stream, as_csv)
    except BaseException as err:  # an interrupt too: what was made is kept, and said where
        if not counter.count:
            partial.unlink(missing_ok=True)
            raise
        raise PredictionsCut(counter.count, partial) from err
    if target.exists():  # a file replaced keeps its permissions
        shutil.copymode(target, partial)
    os.replace(partial, target)
    return counter.count


class _Counter:
    """The results, counted as they are taken: how many were written, or had reached the file when the run stopped."""

    def __init__(self, results: Iterable[dict]):
        self.results, self.count = results, 0

    def __iter__(self):
        for result in self.results:
            yield result
            self.count += 1


def _write(results: Iterable[dict], labels: list[str], fields: tuple[str, ...], stream: TextIO, as_csv: bool) -> None:
    if as_csv:
        writer = csv.writer(stream)
        writer.writerow([name for field in fields for name in
                         ([f"p_{label}" for label in labels] if field == "probabilities" else [field])])
    for result in results:
        if as_csv:
            writer.writerow([value for field in fields for value in
                             ([result[field][label] for label in labels] if field == "probabilities" else [result[field]])])
        else:
            stream.write(json.dumps({field: result[field] for field in fields}) + "\n")
    stream.flush()
