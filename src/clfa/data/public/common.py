"""Helpers shared by the public-dataset readers: what they report besides records, items of the published JSON
lists, text decoding with a counted fallback, and the image check."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clfa.data.custom import check_image_file
from clfa.data.records import DataError, Record, location


@dataclass
class ReaderNotes:
    """What a reader did besides producing records, for ``clfa data stats``.

    Pass one as ``options["notes"]`` to have a public reader fill it in; readers never need it.
    ``removed[split][reason]`` counts samples dropped by the dataset's standard cleaning -- these are not
    errors; the split is ``"all"`` for cleaning done before splitting (MVSA label aggregation). ``fallback_decoded`` counts texts that were not valid
    UTF-8. ``split_dir``/``split_written`` say where an MVSA split was read from or written to. ``mmsd_filter``: the
    MMSD filter applied (its default depends on the layout read).
    """

    removed: dict[str, Counter] = field(default_factory=dict)
    fallback_decoded: int = 0
    mmsd_filter: str | None = None
    split_dir: Path | None = None
    split_written: bool = False

    def remove(self, split: str, reason: str) -> None:
        self.removed.setdefault(split, Counter())[reason] += 1

    def removed_total(self, split: str) -> int:
        return sum(self.removed.get(split, Counter()).values())


def notes_from(options: dict) -> ReaderNotes:
    notes = options.get("notes")
    return notes if isinstance(notes, ReaderNotes) else ReaderNotes()


def image_error(image: Path, file: Path, line: int, options: dict) -> DataError | None:
    """The error for an unusable image, or None; images are not opened at all when ``check_images`` is False. The
    images the check decodes go to ``options["decoded"]`` (see check_image_file)."""
    if not options.get("check_images", True):
        return None
    problem = check_image_file(image, decode=options.get("check_images") == "decode", decoded=options.get("decoded"))
    return DataError(problem, file=file, line=line) if problem else None


def make_record(sample_id: str, text: str, label: str, image: Path, file: Path, line: int, seen: dict[str, str], options: dict,
                item: int | None = None) -> Record:
    """A record whose id is new to the dataset (``seen`` spans all its splits, and is updated) and whose image
    is usable; otherwise a DataError naming ``file``, ``line`` and the ``item`` of a JSON list."""
    if sample_id in seen:
        raise DataError(f"duplicate id '{sample_id}' (first at {seen[sample_id]})", file=file, line=line, item=item)
    if error := image_error(image, file, line, options):
        raise error.in_item(item)
    seen[sample_id] = location(file.name, line, item)
    return Record(id=sample_id, text=text, image=image, label=label, source=location(file, line, item))


def json_sample(item: Any, id_key: str, label_key: str, labels: tuple[int, ...], file: Path, line: int, number: int) -> tuple[str, str, int]:
    """(id, text, label) of item ``number`` of a published JSON split, ``{id_key: str|int, "text": str, label_key: int}``;
    a DataError naming ``file``, ``line`` and ``number`` for anything else."""
    def fail(problem: str) -> DataError:
        return DataError(f"malformed item: {problem}", file=file, line=line, item=number)

    if isinstance(item, DataError):  # an item iter_json_array could not decode
        raise item

    choices = "|".join(map(str, labels))
    if not isinstance(item, dict) or any(key not in item for key in (id_key, "text", label_key)):
        raise fail(f'expected {{"{id_key}": ..., "text": ..., "{label_key}": {choices}}}')
    sample_id, text, label = item[id_key], item["text"], item[label_key]
    if isinstance(sample_id, bool) or not isinstance(sample_id, (int, str)) or not str(sample_id).strip():
        raise fail(f"bad {id_key} {sample_id!r}")
    if not isinstance(text, str):
        raise fail(f"text is {type(text).__name__}, not a string")
    if label not in labels or isinstance(label, (bool, float)):
        allowed = ", ".join(map(str, labels[:-1])) + f" or {labels[-1]}"
        raise fail(f"{label_key} {label!r} is not {allowed}")
    return str(sample_id).strip(), text, label


# Text in GB2312's two-byte rows (both bytes 0xA1-0xFE) among ASCII: what the release's GBK texts are made of. A
# Windows-1252 text seldom is (its accented letters and curly quotes are followed by ASCII letters), though GB18030
# would decode most of those too, as ideographs. Also GBK's symbols 0xA840-0xA895 (the en dash, box drawing,
# arrows), whose second byte is below 0xA1: in Windows-1252 they would be a lone diaeresis before a letter.
_GB2312_TEXT = re.compile(rb"(?:[\x00-\x7f]|[\xa1-\xfe][\xa1-\xfe]|\xa8[\x40-\x7e\x80-\x95])*")


def decode_text(raw: bytes) -> tuple[str, bool]:
    """Decode a text file of MVSA's release: UTF-8 (a BOM is dropped), else GBK if the bytes are GB2312 text (with
    GBK's en dash and other symbols of 0xA840-0xA895), else Windows-1252, else Latin-1 (which never fails).

    Returns the text and whether a fallback was needed, so callers can count those texts. The release's texts that
    are not UTF-8 were saved in the Chinese Windows code page (GBK): its Cyrillic, its curly quotes; read as
    Windows-1252 they would come out as other letters (the splits others publish show Russian tweets so garbled).
    """
    try:
        return raw.decode("utf-8-sig"), False
    except UnicodeDecodeError:
        pass
    if _GB2312_TEXT.fullmatch(raw):
        try:
            return raw.decode("gb18030"), True
        except UnicodeDecodeError:
            pass
    try:
        return raw.decode("cp1252"), True
    except UnicodeDecodeError:
        return raw.decode("latin-1"), True
