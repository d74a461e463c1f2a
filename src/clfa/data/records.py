"""The one record type every dataset reader produces, and the errors readers raise."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Record:
    """One image+text sample. ``label`` is the label *name* (e.g. ``"sarcastic"``), or None when unlabelled."""

    id: str
    text: str
    image: Path
    label: str | None = None
    ocr: str | None = None
    caption: str | None = None
    source: str = ""  # where the record came from, for error messages: "file:line" or "file:line, item N" (see location)


SPLITS = ("train", "dev", "test")


class DataError(ValueError):
    """Bad input data; the message always names the file and, where there is one, the line.

    ``item`` is the 1-based number of an item of a JSON list: files written by ``json.dump`` (MMSD2.0's among them)
    hold the whole list on line 1, where the line alone finds nothing.
    """

    def __init__(self, message: str, *, file: str | Path | None = None, line: int | None = None, kind: str | None = None,
                 item: int | None = None):
        self.file = str(file) if file is not None else None
        self.kind = kind or reason_kind(message)  # what the skip summary counts it under
        self.line = line
        self.item = item
        super().__init__((location(file, line, item) + ": " if file is not None else "") + message)
        self.reason = message

    def in_item(self, item: int | None) -> "DataError":
        """This error, located at ``item`` of its file's JSON list too (unchanged if it already is, or item is None)."""
        if item is None or self.item is not None:
            return self
        return DataError(self.reason, file=self.file, line=self.line, kind=self.kind, item=item)


def location(file: str | Path, line: int | None = None, item: int | None = None) -> str:
    """Where a record is, as messages and ``Record.source`` name it: "file", "file:line" or "file:line, item N"."""
    return f"{file}" + (f":{line}" if line is not None else "") + (f", item {item}" if item is not None else "")


_LOCATION = re.compile(r"(?P<file>.*?)(?::(?P<line>\d+))?(?:, item (?P<item>\d+))?", re.DOTALL)


def parse_location(source: str) -> tuple[str | None, int | None, int | None]:
    """(file, line, item) of a :func:`location` string; (None, None, None) for ''."""
    file, line, item = _LOCATION.fullmatch(source).group("file", "line", "item")
    return file or None, int(line) if line else None, int(item) if item else None


# Bytes that are not UTF-8, read with errors="surrogateescape", become lone surrogates: found in a line or an item,
# they make that one record bad -- named, and skippable under --skip-invalid -- rather than the whole file.
_UNDECODED = re.compile("[\udc80-\udcff]")


def not_utf8(file: str | Path, line: int, *texts) -> DataError | None:
    """The error for the first of ``texts`` (decoded with ``surrogateescape``) that held bytes not UTF-8, or None."""
    for text in texts:
        if isinstance(text, str) and (bad := _UNDECODED.search(text)):
            return DataError(f"not UTF-8 text (byte {ord(bad.group()) - 0xDC00:#04x}); save the file as UTF-8", file=file, line=line)
    return None


# "https://host/x.jpg" as a path: the "//" is one "/" once it is a Path, and in a data file it follows the file's folder.
_URL = re.compile(r"(?:^|[/\\])(?:https?|ftp|s3|gs):[/\\]", re.IGNORECASE)


def url_instead_of_file(path: str | Path) -> str | None:
    """The problem with an image "path" that is a web address, or None: images are read from disk, never fetched."""
    return f"URL instead of an image file {path} (images are read from disk: download it first)" if _URL.search(str(path)) else None


def blank(text: str) -> bool:
    """Whether ``text`` shows nothing: spaces, or invisible format characters alone (zero-width spaces and joiners, a
    word joiner, a byte-order mark), which BERT's tokenizer drops as well. A model given one would label no text."""
    return all(char.isspace() or unicodedata.category(char) == "Cf" for char in text)


def label_key(label: str) -> str:
    """``label`` without case, spaces, '_' or a '-' that joins words: labels of one key are one class written two ways
    ("Sarcastic", "not sarcastic" beside "sarcastic", "not_sarcastic"). A '-' before a number is its sign: -1, 0 and 1
    are three classes."""
    return re.sub(r"[\s_]+|(?<=[^\W_])-(?=[^\W_])", "", label.casefold())


def reason_kind(reason: str) -> str:
    """What a reason says without its particulars (a path, a quoted value, details in brackets), so that the same
    problem on many records counts as one kind: "missing image file /data/7.jpg" -> "missing image file";
    "malformed line: expected ['<id>', ...]" -> "malformed line: expected"; "malformed line: 'a,b'" -> "malformed line".
    A path may be relative ("img/7.jpg", "7.jpg"): a word holding a slash, or ending in a file suffix, starts one."""
    return _PARTICULARS.split(reason, maxsplit=1)[0].rstrip(":")


_PARTICULARS = re.compile(r" (?=['\"/(\[{]|[^\s/\\]*[/\\]|\S+\.[A-Za-z][A-Za-z0-9]{0,4}(?:\s|$))")


@dataclass
class SkipReport:
    """What a reader dropped under ``--skip-invalid``: nothing is dropped without being counted here."""

    skipped: list[DataError] = field(default_factory=list)

    def add(self, error: DataError) -> None:
        self.skipped.append(error)

    def __len__(self) -> int:
        return len(self.skipped)

    def summary(self, limit: int = 10) -> str:
        if not self.skipped:
            return "no records skipped"
        reasons = Counter(e.kind for e in self.skipped)
        lines = [f"skipped {len(self.skipped)} invalid record(s): " + ", ".join(f"{n} x {r}" for r, n in reasons.most_common())]
        lines += [f"  {e}" for e in self.skipped[:limit]]
        if len(self.skipped) > limit:
            lines.append(f"  ... and {len(self.skipped) - limit} more")
        return "\n".join(lines)

    def to_json(self) -> list[dict]:
        # Absolute, like the metrics' data_dir and files: a relative path means nothing once the folder is left.
        return [{"file": str(Path(e.file).absolute()) if e.file else None, "line": e.line}
                | ({"item": e.item} if e.item is not None else {}) | {"reason": e.reason} for e in self.skipped]


def raise_or_skip(error: DataError, skip: "SkipReport | None") -> None:
    """Raise ``error``, or count it in ``skip`` under ``--skip-invalid``."""
    if skip is None:
        raise error
    skip.add(error)


def record_error(record: Record, message: str, kind: str | None = None) -> DataError:
    """An error about ``record``, located where it came from."""
    file, line, item = parse_location(record.source)
    return DataError(message, file=file, line=line, item=item, kind=kind)


def unlabelled(record: Record, purpose: str) -> DataError:
    return record_error(record, f"record '{record.id}' has no label, which {purpose} needs", kind="missing label")


def require_labels(records: list[Record], purpose: str) -> None:
    """Training and evaluation need a label on every record: name the first one without."""
    for record in records:
        if record.label is None:
            raise unlabelled(record, purpose)
