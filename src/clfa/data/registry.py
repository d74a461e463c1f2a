"""Datasets by name: every reader turns its files into train/dev/test lists of :class:`Record`.

A reader is a function ``(data_dir, options, skip) -> (splits, labels, positive_label)`` registered
with :func:`register_dataset`, which also names the reader-specific settings of ``options`` it reads
(``image_dir``, ``mmsd_filter``...). :func:`load_dataset` refuses any other setting given, so that an option never
seems to work while doing nothing. Every reader honours ``splits``: when given, only those splits are read (and
their images checked), so evaluating the test split never stops at a problem in the train split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from clfa.data.custom import check_label_names, read_custom
from clfa.data.records import SPLITS, DataError, Record, SkipReport, blank, label_key, parse_location, unlabelled
from clfa.errors import OptionError

_POSITIVE_NAMES = ("sarcastic", "positive", "pos", "true", "yes", "1")

Reader = Callable[[Path, dict, "SkipReport | None"], "tuple[dict[str, list[Record]], list[str], str | None]"]
DATASETS: dict[str, Reader] = {}
# The reader-specific settings each dataset reads; every reader also takes splits, check_images, decoded (the hook of
# check_image_file) and notes, and load_dataset applies positive_label to any of them.
READER_OPTIONS: dict[str, frozenset[str]] = {}
_INTERNAL_OPTIONS = frozenset({"splits", "check_images", "decoded", "notes"})  # how to read, not what: not recorded with metrics
_COMMON_OPTIONS = _INTERNAL_OPTIONS | {"positive_label"}
PATH_OPTIONS = frozenset({"train", "dev", "test", "image_dir", "splits_dir"})  # recorded absolute, as data_dir is
# Why a setting does not apply, by setting, for the error; the flag is --name-with-dashes unless listed here.
_NOT_FOR = {
    "train": "the public datasets are read from --data-dir, laid out as published",
    "labels": "the dataset's labels are fixed",
    "image_dir": "each record names its own image (relative to its file)",
    "mmsd_filter": "only MMSD is cleaned of hashtag-leaking words",
    "splits_dir": "only MVSA is split by clfa",
    "normalize_text": "only MMSD and MMSD2.0 texts hold placeholders",
}
_FLAGS = {"train": "--train-file", "dev": "--dev-file", "test": "--test-file"}
_FILE_OPTIONS = {f"{split}_file": split for split in ("train", "dev", "test")}


@dataclass
class DatasetSplits:
    """A task's records by split (``"train"``, ``"dev"``, ``"test"``), as :func:`load_dataset` reads them; records made
    in Python go in one directly: ``DatasetSplits("mine", {"train": records, ...}, labels=[...])``. ``labels``: the
    class names in the model's order; ``positive_label``: the class whose P/R/F1 a binary task reports. ``data[split]``
    is a split's list of :class:`Record`; the other fields say what reading skipped or removed, and where from."""

    name: str
    splits: dict[str, list[Record]]
    labels: list[str]
    positive_label: str | None = None
    skipped: SkipReport = field(default_factory=SkipReport)
    # Samples the dataset's standard cleaning removed (MMSD's hashtag-leaking words, MVSA's label aggregation):
    # {split or "all": {reason: count}}. Not errors, but not silent either.
    removed: dict[str, dict[str, int]] = field(default_factory=dict)
    # Where the records came from, for the metrics files: the folder, each split's file (absolute paths) and the
    # reader settings given.
    data_dir: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    options: dict = field(default_factory=dict)

    def drop_unlabelled(self, splits, purpose: str) -> None:
        """Under ``--skip-invalid``: the records of ``splits`` without a label leave them, counted in ``skipped``."""
        for split in splits:
            if split in self.splits:
                for record in self.splits[split]:
                    if record.label is None:
                        self.skipped.add(unlabelled(record, f"{purpose} ({split} split)"))
                self.splits[split] = [record for record in self.splits[split] if record.label is not None]

    def sizes(self) -> str:
        """The records each split holds, for the user: "records: train 3,611, dev 450, test 450"."""
        return "records: " + ", ".join(f"{split} {len(records):,}" for split, records in self.splits.items())

    def empty_texts(self) -> str:
        """A note on records kept with an empty text ('' if none). Only the public datasets keep them: their published
        sizes count them; a custom file's empty text is an error."""
        counts = {split: sum(blank(record.text) for record in records) for split, records in self.splits.items()}
        if not any(counts.values()):
            return ""
        return (f"{sum(counts.values()):,} record(s) have an empty text ("
                + ", ".join(f"{split} {n:,}" for split, n in counts.items() if n) + "): kept, as the release counts them")

    def shared_samples(self) -> dict[tuple[str, str], list[tuple[Record, Record]]]:
        """Records with the text and image of a record of an earlier split, by (split, earlier split), each paired
        with the first such record there: a model picked or scored on them is partly picked or scored on samples
        it trained on, or was picked by."""
        first: dict[str, dict[tuple[str, str], Record]] = {}
        shared: dict[tuple[str, str], list[tuple[Record, Record]]] = {}
        for split in (split for split in SPLITS if split in self.splits):
            seen = first[split] = {}
            for record in self.splits[split]:
                key = (" ".join(record.text.split()), os.path.abspath(record.image))
                for earlier, samples in first.items():
                    if earlier != split and (other := samples.get(key)) is not None:
                        shared.setdefault((split, earlier), []).append((record, other))
                seen.setdefault(key, record)
        return shared

    def report(self) -> str:
        """What reading dropped or kept that deserves a word: skipped invalid records, samples removed by cleaning,
        records with an empty text, samples in two splits ('' if none)."""
        lines = [self.skipped.summary()] if len(self.skipped) else []
        for split, reasons in self.removed.items():
            where = "before splitting" if split == "all" else f"from {split}"
            lines.append(f"cleaning removed {sum(reasons.values()):,} sample(s) {where}: "
                         + ", ".join(f"{n:,} x {reason}" for reason, n in sorted(reasons.items(), key=lambda item: -item[1])))
        if empty := self.empty_texts():
            lines.append(empty)
        return "\n".join(lines + self.shared_notes())

    def shared_notes(self) -> list[str]:
        """One line for each pair of splits that share samples (see :meth:`shared_samples`)."""
        return [f"{split} shares {len(pairs):,} sample(s) with {earlier} (the same text and image; first "
                f"{pairs[0][0].source or pairs[0][0].id} and {pairs[0][1].source or pairs[0][1].id}): its scores are "
                f"partly on {earlier} samples" for (split, earlier), pairs in self.shared_samples().items()]

    def __getitem__(self, split: str) -> list[Record]:
        if split not in self.splits:
            raise DataError(f"dataset '{self.name}' has no '{split}' split (it has {', '.join(self.splits) or 'none'})")
        return self.splits[split]


def register_dataset(name: str, options: tuple[str, ...] = ()):
    """Register a reader under ``name``; ``options`` are the reader-specific settings it reads."""
    def wrap(fn: Reader) -> Reader:
        DATASETS[name] = fn
        READER_OPTIONS[name] = frozenset(options)
        return fn

    return wrap


def uses_option(name: str, option: str) -> bool:
    """Whether the dataset ``name`` reads the setting ``option`` (a key of load_dataset's options)."""
    _ensure_public_readers()
    return option in _COMMON_OPTIONS or option in READER_OPTIONS.get(name, ())


def check_options(name: str, options: dict) -> None:
    """An unknown dataset, or a setting given that the dataset does not read, is an OptionError (before any reading)."""
    _ensure_public_readers()
    if name not in DATASETS:
        raise OptionError(f"unknown dataset '{name}'; choose from {', '.join(sorted(DATASETS))}")
    # From Python a misspelt setting (train_file for train) is no flag to blame: named as what it is, whatever its value.
    known = _COMMON_OPTIONS.union(*READER_OPTIONS.values())
    if unknown := sorted(key for key in options if key not in known):
        hints = [f"{key} (a split's file is {_FILE_OPTIONS[key]}=)" for key in unknown if key in _FILE_OPTIONS]
        settings = sorted(known - _INTERNAL_OPTIONS | {"splits"})
        raise OptionError(f"unknown data option(s) {', '.join(unknown)}; the settings are {', '.join(settings)}"
                          + (f": {'; '.join(hints)}" if hints else ""))
    unused = [key for key, value in options.items() if value not in (None, False) and not uses_option(name, key)]
    if unused:
        why = {key: _NOT_FOR.get("train" if key in ("dev", "test") else key, "") for key in unused}
        raise OptionError("; ".join(f"{_FLAGS.get(key, '--' + key.replace('_', '-'))} does not apply to dataset '{name}'"
                                    + (f": {why[key]}" if why[key] else "") for key in unused))


def default_positive_label(labels: list[str]) -> str | None:
    """The class whose P/R/F1 a binary task reports: a conventional name if present, else the last label."""
    if len(labels) != 2:
        return None
    for name in _POSITIVE_NAMES:
        if name in labels:
            return name
    return labels[-1]


def check_positive_label(positive: str | None, labels: list[str]) -> None:
    """A positive class is for binary tasks: with more labels the headline F1 is the weighted F1, and naming one class
    would make "f1" (and the checkpoint picked by it) that class's F1 instead."""
    if positive is not None and len(labels) != 2:
        raise OptionError(f"--positive-label {positive}: this task has {len(labels)} labels ({', '.join(labels)}); a positive "
                          "class is for binary tasks (each class's precision, recall and F1 are in the per_class report)")


def wanted_splits(options: dict) -> list[str]:
    """The splits to build records for, in order: ``options["splits"]`` (evaluating the test split need not
    read, nor open the images of, the train split), else all three."""
    wanted = options.get("splits") or SPLITS
    return [split for split in SPLITS if split in wanted]


_STEMS = {"train": ("train",), "dev": ("dev", "valid", "validation", "val"), "test": ("test",)}
_SUFFIXES = (".jsonl", ".json", ".csv")


def _split_file_names(split: str) -> str:
    """How a split's file may be named, for messages: "dev.jsonl/.json/.csv (or valid, validation, val)"."""
    stem, *others = _STEMS[split]
    return f"{stem}{'/'.join(_SUFFIXES)}" + (f" (or {', '.join(others)})" if others else "")


def _find_split_file(data_dir: Path, split: str) -> Path | None:
    # Names compared without case: Test.jsonl or DEV.CSV are not to be passed over for want of a lower-case name.
    names = [f"{stem}{ext}" for stem in _STEMS[split] for ext in _SUFFIXES]
    found = sorted((path for path in data_dir.iterdir() if path.name.lower() in names and path.is_file()),
                   key=lambda path: (names.index(path.name.lower()), path.name))
    unique: dict[Path, Path] = {}
    for path in found:  # a link and its target are one file
        unique.setdefault(path.resolve(), path)
    found = list(unique.values())
    if len(found) > 1:  # picking one would leave the other unread without a word
        raise DataError(f"more than one {split} file ({', '.join(path.name for path in found)}); name the one to read "
                        f"with --{split}-file", file=data_dir)
    return found[0] if found else None


def _require_folder(data_dir: Path) -> None:
    if not data_dir.is_dir():
        raise DataError("no such folder" if not data_dir.exists() else "a file, not a folder (give the dataset's folder)", file=data_dir)


def _no_train_file(data_dir: Path | None) -> str:
    """Why there are no labels to read, and the way on: the files the folder holds are named, since a train file
    called otherwise ("training.jsonl", "train_set.csv") is the most common reason."""
    if data_dir is None:
        return "no --train-file, and no --labels given (the labels are read from the train file)"
    held = sorted(path.name for path in data_dir.iterdir() if path.suffix.lower() in _SUFFIXES and path.is_file())
    return (f"no train file ({_split_file_names('train')}); the folder holds "
            + (", ".join(held) if held else f"no {', '.join(_SUFFIXES)} file")
            + ": name the train file with --train-file (or, to read the other splits without one, give --labels)")


def _read_custom_splits(data_dir: Path | None, options: dict, skip: SkipReport | None):
    labels = options.get("labels")
    # Evaluating a split reads no other once the labels are known (without them, they come from the train file).
    wanted = set(wanted_splits(options)) | ({"train"} if labels is None else set())
    if data_dir is None:  # only the files named: none is looked for in the working folder
        if not any(options.get(split) for split in wanted):
            raise OptionError("give --data-dir, or name the files with --train-file/--dev-file/--test-file")
    elif any(not options.get(split) for split in wanted):
        _require_folder(data_dir)
    find = (lambda split: None) if data_dir is None else (lambda split: _find_split_file(data_dir, split))
    files = {split: (options.get(split) or find(split)) if split in wanted else None for split in SPLITS}
    if files["train"] is None and labels is None:
        raise DataError(_no_train_file(data_dir), file=data_dir)
    if not any(files.values()):
        names = "; ".join(_split_file_names(split) for split in SPLITS if split in wanted)
        raise DataError(f"no data file: found none of {names}", file=data_dir)
    # One file as two splits would pick the checkpoint, or score the model, on the data it trained on.
    split_of: dict[Path, str] = {}
    for split, file in files.items():
        if file is not None and (first := split_of.setdefault(Path(file).resolve(), split)) != split:
            raise OptionError(f"{file} is the {first} file and the {split} file: each split needs its own")
    splits: dict[str, list[Record]] = {}
    for split in SPLITS:
        if files[split] is None:
            continue
        skipped_before = len(skip) if skip is not None else 0
        splits[split] = read_custom(files[split], labels=labels, skip=skip, check_images=options.get("check_images", True),
                                    decoded=options.get("decoded"))
        # A file of no record at all (empty, a CSV header alone, []) is most often one saved before its data: taken as
        # a split of none, a dev or test file would read as one not given, and the run would go on without it.
        if not splits[split] and (skip is None or len(skip) == skipped_before):
            raise DataError(f"no records: the {split} file is empty", file=files[split])
        if labels is None and split == "train":
            labels = sorted({r.label for r in splits["train"] if r.label is not None})
            if not labels:  # else every later split's labels would be "unknown", which blames the wrong file
                raise DataError('no record has a label, so there are no labels to learn: each record needs a "label" '
                                "(a CSV file a label column), or name the labels with --labels", file=files["train"])
            if clash := _labels_spelled_two_ways(splits["train"]):
                raise DataError(clash, file=files["train"])
    return splits, labels, default_positive_label(labels)


def _labels_spelled_two_ways(records: list[Record]) -> str:
    """A message naming two labels read from the train file that differ only in case, spaces, '_' or '-' ("Sarcastic",
    "not sarcastic" beside "sarcastic", "not_sarcastic"), or ''. Each would silently be a class of its own."""
    first: dict[str, Record] = {}
    for record in records:
        if record.label is not None:
            first.setdefault(record.label, record)
    spelled: dict[str, str] = {}
    for label in first:
        if (other := spelled.setdefault(label_key(label), label)) != label:
            return (f"labels {other!r} ({first[other].source}) and {label!r} ({first[label].source}) differ only in case, "
                    "spaces, '_' or '-', and would be two classes: write each label one way, or name every class with "
                    "--labels")
    return ""


for _name in ("jsonl", "csv"):
    register_dataset(_name, options=("train", "dev", "test", "labels"))(_read_custom_splits)


def labels_read_from_data(data: DatasetSplits) -> bool:
    """Whether the task's labels are whatever its records hold (a custom dataset without ``--labels``), rather than
    a set fixed beforehand, against which a record's unknown label is an error."""
    return DATASETS.get(data.name) is _read_custom_splits and not data.options.get("labels")


def load_dataset(name: str, data_dir: str | Path | None = None, *, skip_invalid: bool = False, **options) -> DatasetSplits:
    """Read the named dataset (``jsonl``, ``csv``, ``mmsd``, ``mmsd2``, ``mvsa-single``, ``mvsa-multiple``) from
    ``data_dir``, its folder, into a :class:`DatasetSplits`.

    ``skip_invalid`` counts bad records in ``.skipped`` instead of raising a :class:`DataError`. ``options`` are the
    data flags of ``clfa train``, named without ``--`` and with underscores, except that the custom formats' files are
    ``train``, ``dev`` and ``test`` (paths, for ``--train-file`` ...); ``labels`` is a list of names and ``splits`` a list
    of the splits to read (default: all). A setting the dataset does not read is an :class:`OptionError`.
    """
    check_options(name, options)
    for key in ("labels", "splits"):  # a string would be read as its characters, or matched as a substring
        if isinstance(options.get(key), str):
            raise OptionError(f"{key}={options[key]!r}: a list of names, not one string")
    if unknown := [split for split in options.get("splits") or () if split not in SPLITS]:
        raise OptionError(f"splits: {', '.join(map(repr, unknown))} is no split; choose from {', '.join(SPLITS)}")
    check_label_names(options.get("labels"))
    if (labels := options.get("labels")) is not None and (len(set(labels)) != len(labels) or not all(label.strip() for label in labels)):
        raise OptionError(f"--labels {','.join(labels)}: each label once, none empty")
    data_dir = Path(data_dir) if data_dir is not None else None
    if DATASETS[name] is not _read_custom_splits:  # the custom formats need the folder only for files not named
        if data_dir is None:
            raise OptionError(f"dataset '{name}' is read from its folder, laid out as published: give --data-dir")
        _require_folder(data_dir)
    skip = SkipReport() if skip_invalid else None
    if skip_invalid and options.get("check_images", True) is True:
        # An image the cheap check passes but cannot decode would stop the run once it is read: skipping means
        # finding it now.
        options["check_images"] = "decode"
    from clfa.data.public.common import ReaderNotes

    notes = options.setdefault("notes", ReaderNotes())
    splits, labels, positive = DATASETS[name](data_dir, options, skip)
    positive = options.get("positive_label") or positive  # a public dataset's default class may be overridden too
    if positive is not None and positive not in labels:
        raise OptionError(f"--positive-label '{positive}' is not one of the labels ({', '.join(labels)})")
    check_positive_label(options.get("positive_label"), labels)
    removed = {split: dict(reasons) for split, reasons in notes.removed.items() if reasons}
    # Each split's records come from one file, which their sources name.
    files = {split: str(Path(parse_location(records[0].source)[0]).resolve()) for split, records in splits.items()
             if records and records[0].source}
    given = {key: str(Path(value).resolve()) if key in PATH_OPTIONS else value for key, value in options.items()
             if key not in _INTERNAL_OPTIONS and value not in (None, False)}
    return DatasetSplits(name=name, splits=splits, labels=list(labels), positive_label=positive, skipped=skip or SkipReport(),
                         removed=removed, data_dir=str(data_dir.resolve()) if data_dir is not None else None, files=files,
                         options=given)


def _ensure_public_readers() -> None:
    # The public-dataset readers register themselves on import; importing here keeps `clfa.data` light.
    import clfa.data.public  # noqa: F401
