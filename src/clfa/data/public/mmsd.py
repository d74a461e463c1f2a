"""MMSD (Cai et al. 2019) and MMSD2.0 (Qin et al. 2023) readers, from the files exactly as published.

MMSD: ``DATA_DIR/text/{train,valid2,test2}.txt``, one Python-literal list per line
(``['<id>', '<text>', <label>]``; dev/test add the hashtag label before the human one: the LAST element
is the label), or the copy the MMSD2.0 repository publishes already cleaned,
``DATA_DIR/text_json_clean/{train,valid,test}.json``. MMSD2.0: ``DATA_DIR/text_json_final/{train,valid,test}.json``.
All use ``IMAGE_DIR/<id>.jpg`` with IMAGE_DIR defaulting to ``DATA_DIR/dataset_image``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from clfa.data.json_array import iter_json_array
from clfa.data.public.common import json_sample, make_record, notes_from
from clfa.data.records import DataError, Record, SkipReport, not_utf8, raise_or_skip
from clfa.data.registry import register_dataset, wanted_splits
from clfa.data.text_normalization import normalize_tweet

LABELS = ["not_sarcastic", "sarcastic"]  # class ids 0 and 1, as in the release
POSITIVE = "sarcastic"
MMSD_FILES = {"train": "train.txt", "dev": "valid2.txt", "test": "test2.txt"}
MMSD2_FILES = {"train": "train.json", "dev": "valid.json", "test": "test.json"}

# Words whose presence leaks the hashtag used to collect the positive tweets (the standard cleaning).
FILTER_WORDS = ("exgag", "sarcasm", "sarcastic", "reposting", "<url>", "joke", "humour", "humor", "jokes", "irony", "ironic")
_FILTER_SET = frozenset(FILTER_WORDS)
# The reference loader split Python 2 byte strings, i.e. on ASCII whitespace only; splitting the same way
# keeps the published counts exact even where a text holds a non-breaking or other Unicode space.
_ASCII_WS = re.compile(r"[ \t\n\r\x0b\x0c]+")


def filter_reason(text: str, mode: str) -> str | None:
    """Why the MMSD cleaning drops ``text`` (e.g. ``"token 'sarcasm'"``), or None to keep it.

    ``token`` (default): a filter word is a whole whitespace-separated token, compared case-sensitively as
    the reference loader did (the release is lower-cased, so "Sarcasm" never occurs there; a re-cased copy
    keeps such samples, exactly like the reference). ``substring``: the lower-cased text contains a filter
    word anywhere (so "#sarcasmo" and "jokester" are dropped too). ``none``: keep everything.
    """
    if mode == "token":
        hit = next((tok for tok in _ASCII_WS.split(text) if tok in _FILTER_SET), None)
        return f"token '{hit}'" if hit else None
    if mode == "substring":
        lowered = text.lower()
        hit = next((word for word in FILTER_WORDS if word in lowered), None)
        return f"substring '{hit}'" if hit else None
    if mode == "none":
        return None
    raise ValueError(f"unknown MMSD filter '{mode}' (choose token, substring or none)")


def _image_dir(data_dir: Path, options: dict) -> Path:
    return Path(options["image_dir"]) if options.get("image_dir") else data_dir / "dataset_image"


def _parse_mmsd_line(raw: bytes, path: Path, line: int, fields: int) -> tuple[str, str, int]:
    """``fields``: 3 in train.txt (id, text, label), 4 in valid2/test2 (id, text, hashtag label, human label)."""
    text = raw.decode("utf-8-sig" if line == 1 else "utf-8", errors="surrogateescape")
    if error := not_utf8(path, line, text):
        raise error
    try:
        value = ast.literal_eval(text.strip())  # a literal parser: no code in the file is ever run
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise DataError(f"malformed line: not a Python literal list ({exc.__class__.__name__})", file=path, line=line) from exc
    if not isinstance(value, (list, tuple)) or len(value) != fields:
        layout = "['<id>', '<text>', <label>]" if fields == 3 else "['<id>', '<text>', <hashtag_label>, <label>]"
        raise DataError(f"malformed line: expected {layout} in {path.name}", file=path, line=line)
    sample_id, sample_text, label = value[0], value[1], value[-1]
    if not isinstance(sample_id, (str, int)) or isinstance(sample_id, bool) or not str(sample_id).strip():
        raise DataError(f"malformed line: bad id {sample_id!r}", file=path, line=line)
    if not isinstance(sample_text, str):
        raise DataError(f"malformed line: text is {type(sample_text).__name__}, not a string", file=path, line=line)
    # By type, not equality: True, 1.0 and the literal 1+0j all equal 1.
    if type(label) is not int or label not in (0, 1):
        raise DataError(f"malformed line: label {label!r} is not 0 or 1", file=path, line=line)
    return str(sample_id).strip(), sample_text, label


def _make_record(sample_id: str, text: str, label: int, image_dir: Path, options: dict, path: Path, line: int, seen: dict[str, str],
                 item: int | None = None) -> Record:
    if options.get("normalize_text"):
        text = normalize_tweet(text)
    return make_record(sample_id, text, LABELS[label], image_dir / f"{sample_id}.jpg", path, line, seen, options, item)


# Each release's text folder and a file always in it: MMSD's text/train.txt, MMSD2.0's text_json_final/train.json.
_LAYOUTS = {"mmsd": ("text", MMSD_FILES["train"]), "mmsd2": ("text_json_final", MMSD2_FILES["train"])}
# MMSD as the MMSD2.0 repository publishes it beside MMSD2.0 (its data/ folder), cleaned and in MMSD2.0's format.
CLEAN_MMSD = "text_json_clean"


def _require_files(data_dir: Path, dataset: str, files: dict[str, str], splits: list[str], folder_name: str | None = None) -> None:
    folder = data_dir / (folder_name or _LAYOUTS[dataset][0])
    if not folder.is_dir():
        raise DataError(f"no {folder.name}/ folder, where {dataset}'s {', '.join(files.values())} belong"
                        f"{_layout_hint(data_dir, dataset)}", file=data_dir)
    missing = [files[split] for split in splits if not (folder / files[split]).is_file()]
    if missing:
        raise DataError(f"missing {', '.join(missing)}; expected {', '.join(files.values())} there{_layout_hint(data_dir, dataset)}",
                        file=folder)


def _layout_hint(data_dir: Path, dataset: str) -> str:
    """Where the release seems to be instead, for the likely mistakes: the other MMSD, or a folder too low or too high."""
    for other, (text_folder, first) in _LAYOUTS.items():
        if other != dataset and (data_dir / text_folder / first).is_file():
            return f" (this folder holds the other release's {text_folder}/{first}: --dataset {other}?)"
    if dataset == "mmsd2" and (data_dir / CLEAN_MMSD).is_dir():
        return f" (this folder holds {CLEAN_MMSD}/, MMSD as the MMSD2.0 repository publishes it: --dataset mmsd?)"
    text_folder, first = _LAYOUTS[dataset]
    if data_dir.name == text_folder:
        return f" (give the folder above it: --data-dir {data_dir.resolve().parent})"
    if (data_dir / first).is_file():  # the text files unpacked without their folder
        return f" (found {first} in this folder itself: the text files belong in its {text_folder}/ folder)"
    below = sorted(path.parent.parent for path in data_dir.glob(f"*/{text_folder}/{first}"))
    return f" (found {text_folder}/{first} in {below[0]}: give that folder)" if below else ""


@register_dataset("mmsd", options=("image_dir", "mmsd_filter", "normalize_text"))
def read_mmsd(data_dir: Path, options: dict, skip: SkipReport | None):
    """MMSD with the standard cleaning (``options["mmsd_filter"]``: token, substring or none)."""
    notes, wanted = notes_from(options), wanted_splits(options)
    clean = not (data_dir / "text").is_dir() and (data_dir / CLEAN_MMSD).is_dir()
    # The copy in text_json_clean/ is cleaned by its publishers, so it is filtered only when a filter is asked for.
    mode = notes.mmsd_filter = options.get("mmsd_filter") or ("none" if clean else "token")
    filter_reason("", mode)  # reject an unknown mode before reading anything
    if clean:
        _require_files(data_dir, "mmsd", MMSD2_FILES, wanted, CLEAN_MMSD)
        return _read_json_splits(data_dir / CLEAN_MMSD, wanted, options, skip, mode), list(LABELS), POSITIVE
    image_dir, folder = _image_dir(data_dir, options), data_dir / "text"
    _require_files(data_dir, "mmsd", MMSD_FILES, wanted)
    splits: dict[str, list[Record]] = {}
    seen: dict[str, str] = {}  # ids must be unique across the splits read, as the reference loader asserted
    for split in wanted:
        path, records = folder / MMSD_FILES[split], []
        with path.open("rb") as f:
            for line, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                try:
                    sample_id, text, label = _parse_mmsd_line(raw, path, line, 3 if split == "train" else 4)
                    if reason := filter_reason(text, mode):  # on the raw text, before any normalisation
                        notes.remove(split, f"filter: {reason}")
                        continue
                    records.append(_make_record(sample_id, text, label, image_dir, options, path, line, seen))
                except DataError as err:
                    raise_or_skip(err, skip)
        splits[split] = records
    return splits, list(LABELS), POSITIVE


@register_dataset("mmsd2", options=("image_dir", "normalize_text"))
def read_mmsd2(data_dir: Path, options: dict, skip: SkipReport | None):
    """MMSD2.0: the re-annotated MMSD, already cleaned by its authors, so no filter is applied."""
    wanted = wanted_splits(options)
    _require_files(data_dir, "mmsd2", MMSD2_FILES, wanted)
    return _read_json_splits(data_dir / "text_json_final", wanted, options, skip), list(LABELS), POSITIVE


def _read_json_splits(folder: Path, wanted: list[str], options: dict, skip: SkipReport | None, mode: str = "none") -> dict[str, list[Record]]:
    """The splits of MMSD2.0's JSON format (a list of ``{"image_id", "text", "label"}``), with the MMSD filter ``mode``."""
    notes, image_dir = notes_from(options), _image_dir(folder.parent, options)
    splits: dict[str, list[Record]] = {}
    seen: dict[str, str] = {}
    for split in wanted:
        path, records = folder / MMSD2_FILES[split], []
        for line, number, item in iter_json_array(path):
            try:
                sample_id, text, label = json_sample(item, "image_id", "label", (0, 1), path, line, number)
                if reason := filter_reason(text, mode):
                    notes.remove(split, f"filter: {reason}")
                    continue
                records.append(_make_record(sample_id, text, label, image_dir, options, path, line, seen, number))
            except DataError as err:
                raise_or_skip(err, skip)
        splits[split] = records
    return splits
