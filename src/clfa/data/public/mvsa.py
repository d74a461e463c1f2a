"""MVSA-Single and MVSA-Multiple (Niu et al. 2016) readers.

Two layouts are accepted:

* pre-made splits: ``train.json``, ``dev.json``, ``test.json`` (JSON lists of
  ``{"id": str, "text": str, "emotion_label": 0|1|2}``, 0 positive / 1 neutral / 2 negative) in
  ``--splits-dir`` or in DATA_DIR. Texts come from the JSON.
* the raw release: ``DATA_DIR/labelResultAll.txt`` + ``DATA_DIR/data/<id>.txt``. Labels are aggregated
  the standard way (:func:`aggregate`) and split 8:1:1 per class with a fixed seed (:func:`split_8_1_1`);
  the split is written in the pre-made format to ``--splits-dir`` or ``DATA_DIR/clfa_splits`` and read
  from there on later runs, as long as the label file and the texts it came from are unchanged
  (``source.json`` next to it records them, and what the cleaning removed; see :func:`_reusable_split`).

Images are ``IMAGE_DIR/<id>.jpg``: ``--image-dir`` if given, else ``DATA_DIR/data`` if that folder exists, else
``DATA_DIR/dataset_image`` (the CLMLF layout) if that one does, else DATA_DIR itself.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Callable

from clfa.data.json_array import iter_json_array
from clfa.data.public.common import ReaderNotes, decode_text, json_sample, make_record, notes_from
from clfa.data.records import SPLITS, DataError, Record, SkipReport, raise_or_skip
from clfa.data.registry import register_dataset, wanted_splits
from clfa.launch import first_on_this_machine

LABELS = ["positive", "neutral", "negative"]  # class ids 0, 1, 2 as in the pre-made split files
LABEL_FILE = "labelResultAll.txt"
SPLIT_FOLDER = "clfa_splits"  # where a split made from the raw release is written, inside DATA_DIR
SPLIT_SEED = 42  # the per-class shuffle before the 8:1:1 cut; fixed so every run and user gets one split
SOURCE_FILE = "source.json"  # beside a written split: what it was made from, to notice when that changes
SPLIT_VERSION = 3  # bump when the cleaning or the split changes, so written splits are made again
_DATASET_OF = {1: "mvsa-single", 3: "mvsa-multiple"}  # by the number of annotators

# (text, image) -> the sample's label, or None to discard it (positive vs negative contradict each other).
_COMBINE = {
    frozenset(["positive"]): "positive",
    frozenset(["neutral"]): "neutral",
    frozenset(["negative"]): "negative",
    frozenset(["positive", "neutral"]): "positive",
    frozenset(["negative", "neutral"]): "negative",
    frozenset(["positive", "negative"]): None,
}


def majority(votes: list[str]) -> str | None:
    """The label at least two of the three annotators gave, or None when all three differ."""
    label, count = Counter(votes).most_common(1)[0]
    return label if count >= 2 else None


def aggregate(pairs: list[tuple[str, str]]) -> tuple[str | None, str | None]:
    """One sample's label from its annotators' ``(text_label, image_label)`` pairs: ``(label, why_dropped)``.

    Several annotators (MVSA-Multiple): per modality the majority, dropped when no two agree. Then text and
    image are combined: equal -> that label; one neutral -> the other one; positive vs negative -> dropped.
    """
    if len(pairs) == 1:
        text, image = pairs[0]
    else:
        text, image = majority([p[0] for p in pairs]), majority([p[1] for p in pairs])
        if text is None or image is None:  # each sample counted once, under what it lacks
            lacking = "text and image labels" if text is None and image is None else f"{'text' if text is None else 'image'} label"
            return None, f"no majority for the {lacking}"
    label = _COMBINE[frozenset([text, image])]
    return (label, None) if label else (None, "text and image disagree (positive vs negative)")


def split_8_1_1(samples: list[dict], seed: int = SPLIT_SEED) -> dict[str, list[dict]]:
    """Stratified split: per class, dev and test each get floor(n/10) samples and train the rest.

    Samples are sorted by id before a seeded shuffle, so the split depends on neither file order nor
    platform. floor(n/10) per class reproduces the published sizes (Single 3,611/450/450, Multiple
    13,624/1,700/1,700) and per-class counts exactly.
    """
    rng = random.Random(seed)
    out: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for label in range(len(LABELS)):
        group = sorted((s for s in samples if s["emotion_label"] == label), key=_id_key)
        rng.shuffle(group)
        tenth = len(group) // 10
        out["dev"] += group[:tenth]
        out["test"] += group[tenth : 2 * tenth]
        out["train"] += group[2 * tenth :]
    return {split: sorted(items, key=_id_key) for split, items in out.items()}


def _is_number(text: str) -> bool:
    # ASCII digits only: str.isdigit() also accepts characters such as "²" that int() rejects.
    return text.isascii() and text.isdigit()


def _id_key(sample: dict) -> tuple[int, int | str]:
    sid = sample["id"]
    return (0, int(sid)) if _is_number(sid) else (1, sid)


def _annotator_columns(lines: list[str]) -> int | None:
    """The number of annotators the header ("ID<TAB>text,image"...) names, or None without such a header."""
    header = lines[0].split() if lines else []
    if not header or header[0].lower() != "id" or any(field.lower() != "text,image" for field in header[1:]):
        return None
    return len(header) - 1


def _release_nearby(data_dir: Path, annotators: int) -> str:
    """Where a raw release is, for a --data-dir one folder too high: one of this dataset before one of the other
    MVSA (both often lie side by side), which is named as such; or one folder too low, in the release's data/."""
    # Resolved first: the parent of "." (or of "x/..") by its name alone is "." (or "x"), not the folder above.
    if ((above := data_dir.resolve().parent) / LABEL_FILE).is_file():
        return f"; found one in {above}: give that folder"
    others = []
    for path in sorted(data_dir.glob(f"*/{LABEL_FILE}")):
        try:
            with path.open(encoding="utf-8-sig", errors="replace") as file:
                columns = _annotator_columns([file.readline()])
        except OSError:
            continue
        if columns in (None, annotators):
            return f"; found one in {path.parent}: give that folder"
        others.append(f"{_DATASET_OF.get(columns, f'{columns} annotator(s)')}'s in {path.parent}")
    return f"; found only {others[0]}" if others else ""


def _read_label_file(data_dir: Path, annotators: int, notes: ReaderNotes, skip: SkipReport | None) -> list[dict]:
    """Aggregated samples ``{"id", "text", "emotion_label", "line"}`` from the raw release."""
    path = data_dir / LABEL_FILE
    if not path.is_file():
        hint = _release_nearby(data_dir, annotators)
        raise DataError(f"no pre-made splits (train/dev/test.json) and no raw release ({LABEL_FILE} + data/){hint}", file=path)
    text_dir = data_dir / "data"
    samples: list[dict] = []
    seen: dict[str, int] = {}
    lines = path.read_bytes().decode("utf-8-sig", errors="replace").splitlines()
    if (columns := _annotator_columns(lines)) not in (None, annotators):
        # The other MVSA's file: every line would be malformed, and --skip-invalid would leave nothing.
        raise DataError(f"its header names {columns} annotator(s), {_DATASET_OF[annotators]} has {annotators}: give "
                        f"--dataset {_DATASET_OF.get(columns, '...')}", file=path, line=1)
    for line, raw in enumerate(lines, start=1):
        fields = raw.split()
        if not fields or (line == 1 and fields[0].lower() == "id"):
            continue  # blank, or the "ID text,image" header
        try:
            sample_id, pairs = _parse_label_line(fields, annotators, path, line)
            if sample_id in seen:
                raise DataError(f"duplicate id '{sample_id}' (first on line {seen[sample_id]})", file=path, line=line)
            seen[sample_id] = line
            label, why = aggregate(pairs)
            if label is None:
                notes.remove("all", why)
                continue
            text_file = text_dir / f"{sample_id}.txt"
            if not text_file.is_file():
                raise DataError(f"missing text file {text_file}", file=path, line=line)
            try:
                raw = text_file.read_bytes()
            except OSError as exc:  # e.g. no permission: a sample like any other bad one, so --skip-invalid can skip it
                raise DataError(f"cannot read text file {text_file}: {exc.strerror or exc}", file=path, line=line) from exc
            text, fallback = decode_text(raw)
            notes.fallback_decoded += fallback
            samples.append({"id": sample_id, "text": text.strip(), "emotion_label": LABELS.index(label), "line": line})
        except DataError as err:
            raise_or_skip(err, skip)
    return samples


def _parse_label_line(fields: list[str], annotators: int, path: Path, line: int) -> tuple[str, list[tuple[str, str]]]:
    if len(fields) != 1 + annotators or not _is_number(fields[0]):
        layout = "ID<TAB>text,image" + "<TAB>text,image" * (annotators - 1)
        other = _DATASET_OF.get(len(fields) - 1) if len(fields) - 1 != annotators else None
        hint = f" (the layout of {other}: --dataset {other}?)" if other else ""
        raise DataError(f"malformed line: expected {layout} ({annotators} annotator(s)), got {len(fields)} field(s){hint}",
                        file=path, line=line)
    pairs = []
    for field in fields[1:]:
        pair = tuple(field.lower().split(","))
        if len(pair) != 2 or any(p not in LABELS for p in pair):
            raise DataError(f"malformed line: '{field}' is not text,image with labels {'/'.join(LABELS)}", file=path, line=line)
        pairs.append(pair)
    return fields[0], pairs


def _source(data_dir: Path, annotators: int) -> dict:
    """What a split made from the raw release depends on: the label file's bytes, every text file's size and
    modification time (a stat, not a read: the point of reusing a split is not to read 20,000 files), the
    number of annotators, the seed and the version of the cleaning rules."""
    texts = hashlib.sha256()
    text_dir = data_dir / "data"
    if text_dir.is_dir():
        for entry in sorted((e for e in os.scandir(text_dir) if e.name.endswith(".txt")), key=lambda e: e.name):
            stat = entry.stat()
            texts.update(f"{entry.name}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return {
        "version": SPLIT_VERSION,
        "seed": SPLIT_SEED,
        "annotators": annotators,
        "label_file_sha256": hashlib.sha256((data_dir / LABEL_FILE).read_bytes()).hexdigest(),
        "texts": texts.hexdigest(),
    }


def _atomic_json(path: Path, value) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(value, f, ensure_ascii=False, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


WRITING = {"writing": "a split is being written here; until it is complete, it is made again on every read"}


def _write_splits(folder: Path, splits: dict[str, list[dict]], source: dict, notes: ReaderNotes) -> None:
    """Write the split in the pre-made format: first a ``source.json`` that matches no release (so that a write cut
    short, or read half-way by another process, is made again rather than read), then each file atomically, then
    the real ``source.json``: what the split was made from and what the cleaning removed."""
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_json(folder / SOURCE_FILE, WRITING)
    for split in SPLITS:
        _atomic_json(folder / f"{split}.json", [{"id": s["id"], "text": s["text"], "emotion_label": s["emotion_label"]} for s in splits[split]])
    cleaning = {"removed": dict(notes.removed.get("all", {})), "fallback_decoded": notes.fallback_decoded}
    _atomic_json(folder / SOURCE_FILE, {**source, "cleaning": cleaning})


def _reusable_split(folder: Path, data_dir: Path, current: Callable[[], dict], notes: ReaderNotes,
                    annotators: int) -> tuple[dict[str, Path] | None, str | None]:
    """The split files in ``folder`` to read (or None to look further and, at the end, split the raw release), and
    why a split clfa wrote there is not reused. ``current()`` is the :func:`_source` of the raw release.

    A folder with ``source.json`` (and ``DATA_DIR/clfa_splits``) holds a split clfa wrote: it is reused only while
    the raw release beside it is the one ``source.json`` records, and then the cleaning counts recorded there are
    reported again; without a valid ``source.json`` (an earlier clfa, or a write cut short) or after any change it is
    made again. Without the raw release there is nothing to compare, and it is used as it is. Wherever it is, a split
    clfa wrote for the other MVSA (``source.json`` records its ``annotators``) is refused, never overwritten, except
    in ``DATA_DIR/clfa_splits`` beside a raw release, where it is made again. Any other folder holds a split made
    elsewhere, used as it is."""
    source_path = folder / SOURCE_FILE
    own_folder = folder.resolve() == (data_dir / SPLIT_FOLDER).resolve()
    if not source_path.is_file() and not own_folder:
        return _split_files(folder), None
    if not source_path.is_file() and not any((folder / f"{split}.json").is_file() for split in SPLITS):
        return None, None
    try:
        recorded = json.loads(source_path.read_text(encoding="utf-8"))
        cleaning = recorded.pop("cleaning")
        removed = {str(reason): int(count) for reason, count in cleaning["removed"].items()}
        fallback_decoded = int(cleaning["fallback_decoded"])
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        recorded, removed, fallback_decoded = None, {}, 0
    made_for = recorded.get("annotators") if recorded is not None else None
    has_release = (data_dir / LABEL_FILE).is_file()
    made_from = _DATASET_OF.get(made_for, f"{made_for} annotator(s)")
    # Another dataset's split is that dataset's to keep, wherever it was copied: only the split clfa keeps beside a
    # release is made again from it.
    if made_for is not None and made_for != annotators and not (has_release and own_folder):
        raise DataError(f"this split was made from {made_from} ({SOURCE_FILE} records {made_for} annotator(s)), not "
                        f"{_DATASET_OF[annotators]}: give --dataset {_DATASET_OF.get(made_for, '...')}, or the right "
                        "--splits-dir", file=folder)
    if not has_release:
        if recorded is None:
            return _split_files(folder), None
    elif recorded != current():
        if recorded is None:
            return None, "has no complete source.json"
        if made_for is not None and made_for != annotators:
            return None, f"was made from {made_from}, not {_DATASET_OF[annotators]}"
        return None, f"was made from another {LABEL_FILE}, other texts or other cleaning rules"
    for reason, count in removed.items():
        notes.removed.setdefault("all", Counter())[reason] += count
    notes.fallback_decoded += fallback_decoded
    return _split_files(folder), None


def _split_files(folder: Path) -> dict[str, Path] | None:
    """The three split files in ``folder``; None when there are none; DataError when only some exist."""
    files = {split: folder / f"{split}.json" for split in SPLITS}
    present = [s for s, f in files.items() if f.is_file()]
    if not present:
        return None
    if len(present) < len(SPLITS):
        # Only named, never "remove the others": they may be a published split, and there may be no raw release.
        missing = ", ".join(f"{s}.json" for s in SPLITS if s not in present)
        found = ", ".join(f"{s}.json" for s in present)
        others = sorted(p.name for p in folder.glob("*.json") if p.stem not in SPLITS and p.name != SOURCE_FILE)
        raise DataError(f"incomplete split: {found} but no {missing} (a split is train.json, dev.json and test.json"
                        + (f"; also here: {', '.join(others[:5])}" if others else "") + ")", file=folder)
    return files


def _read_split_file(path: Path, image_dir: Path, options: dict, skip: SkipReport | None, seen: dict) -> list[Record]:
    records = []
    for line, number, item in iter_json_array(path):
        try:
            sample_id, text, label = json_sample(item, "id", "emotion_label", (0, 1, 2), path, line, number)
            records.append(_record(sample_id, text, label, image_dir, options, path, line, seen, number))
        except DataError as err:
            raise_or_skip(err, skip)
    return records


def _record(sample_id: str, text: str, label: int, image_dir: Path, options: dict, path: Path, line: int, seen: dict,
            item: int | None = None) -> Record:
    return make_record(sample_id, text, LABELS[label], image_dir / f"{sample_id}.jpg", path, line, seen, options, item)


def _image_dir(data_dir: Path, options: dict) -> Path:
    if options.get("image_dir"):
        return Path(options["image_dir"])
    # data/ is the raw release's; dataset_image/ is where the widely used pre-made splits (CLMLF's) put the images.
    for name in ("data", "dataset_image"):
        if (data_dir / name).is_dir():
            return data_dir / name
    return data_dir


def _read_mvsa(data_dir: Path, options: dict, skip: SkipReport | None, annotators: int):
    notes, image_dir = notes_from(options), _image_dir(data_dir, options)
    splits_dir = Path(options["splits_dir"]) if options.get("splits_dir") else None
    seen: dict[str, str] = {}
    # Pre-made splits: --splits-dir, else DATA_DIR itself, else a split this reader wrote before.
    # What the raw release is now, computed once if at all (it reads the label file and stats every text).
    current = functools.cache(lambda: _source(data_dir, annotators))
    stale = []
    for folder in [splits_dir] if splits_dir else [data_dir, data_dir / SPLIT_FOLDER]:
        files, why = _reusable_split(folder, data_dir, current, notes, annotators)
        if files:
            notes.split_dir = folder
            splits = {s: _read_split_file(files[s], image_dir, options, skip, seen) for s in wanted_splits(options)}
            return splits, list(LABELS), None
        if why:
            stale.append(f"note: the MVSA split in {folder} {why}; making it again from the raw release")
    # The raw release: aggregate, split, write the split for reuse, then build the records.
    # Under torchrun / accelerate launch every process reads the dataset, and the first of each machine speaks and
    # writes for the others there: the split each makes is the same, and a note that the split was written is never
    # lost to another process that wrote it first.
    speaks = first_on_this_machine()
    for note in stale if speaks else []:
        print(note, file=sys.stderr)
    skipped_before = len(skip) if skip is not None else 0
    source = current() if (data_dir / LABEL_FILE).is_file() else None
    samples = _read_label_file(data_dir, annotators, notes, skip)  # discarded samples count under "all"
    parts = split_8_1_1(samples)
    target = splits_dir or data_dir / SPLIT_FOLDER
    if speaks and skip is not None and len(skip) > skipped_before:
        # A split made without the skipped samples must not be reused once the data is fixed.
        print(f"warning: invalid samples were skipped, so the MVSA split is not written to {target}", file=sys.stderr)
    elif speaks:
        try:
            _write_splits(target, parts, source, notes)
            notes.split_dir, notes.split_written = target, True
            # Said aloud: a mistyped --splits-dir would otherwise swap a published split for this one unnoticed.
            print(f"note: made the MVSA split from the raw release (8:1:1 per class, seed {SPLIT_SEED}) and wrote it to "
                  f"{target}; later runs read it from there", file=sys.stderr)
        except OSError as exc:  # e.g. a read-only dataset folder: the split is deterministic, so go on without it
            print(f"warning: could not write the MVSA split to {target} ({exc}); use --splits-dir to keep it", file=sys.stderr)
    label_path = data_dir / LABEL_FILE
    splits: dict[str, list[Record]] = {split: [] for split in wanted_splits(options)}
    for split in splits:
        for s in parts[split]:
            try:
                splits[split].append(_record(s["id"], s["text"], s["emotion_label"], image_dir, options, label_path, s["line"], seen))
            except DataError as err:
                raise_or_skip(err, skip)
    return splits, list(LABELS), None


@register_dataset("mvsa-single", options=("image_dir", "splits_dir"))
def read_mvsa_single(data_dir: Path, options: dict, skip: SkipReport | None):
    """MVSA-Single: one annotator, ``ID<TAB>text_label,image_label``."""
    return _read_mvsa(data_dir, options, skip, annotators=1)


@register_dataset("mvsa-multiple", options=("image_dir", "splits_dir"))
def read_mvsa_multiple(data_dir: Path, options: dict, skip: SkipReport | None):
    """MVSA-Multiple: three annotators, ``ID<TAB>t,i<TAB>t,i<TAB>t,i``."""
    return _read_mvsa(data_dir, options, skip, annotators=3)
