"""Reader for the custom task format: JSON Lines (or one JSON list) or CSV with ``id``, ``text``, ``image``, ``label``
(+ ``ocr``, ``caption``).

Image paths are relative to the file that names them. Every problem is reported with the file and line;
under ``skip`` the bad record is counted in the :class:`SkipReport` instead of raising.
"""

from __future__ import annotations

import csv
import errno
import json
import math
import os
import re
from pathlib import Path
from typing import Callable

from PIL import Image, UnidentifiedImageError

from clfa.data.image_files import open_image, why_unreadable
from clfa.data.json_array import iter_json_array
from clfa.data.records import (DataError, Record, SkipReport, blank, label_key, location, not_utf8, raise_or_skip,
                                url_instead_of_file)
from clfa.errors import OptionError

_WHOLE_FLOAT = re.compile(r"-?\d+\.0+")

REQUIRED_FIELDS = ("id", "text", "image")
OPTIONAL_FIELDS = ("label", "ocr", "caption")
FIELDS = REQUIRED_FIELDS + OPTIONAL_FIELDS

Decoded = Callable[[Path, Image.Image], None]  # the hook of check_image_file, and of the readers, for decoded images


def check_image_file(path: Path, decode: bool = False, decoded: Decoded | None = None) -> str | None:
    """Why the image at ``path`` cannot be used, or None. Cheap for the formats datasets use: PNG is verified chunk
    by chunk (its checksums catch a cut file), and a JPEG is decoded only when it does not end with the end-of-image
    marker, which a file cut short lacks (a JPEG with bytes after the marker decodes, and passes). Other formats
    are decoded. ``decode``: every image is decoded, which also finds pixel data broken under intact checksums (a
    few milliseconds an image, where the cheap check takes a tenth of one). ``decoded``: given ``(path, image)`` for
    each image the check decoded and passed, so that the pixels a model reads are made from it, not from a second
    decoding (see clfa.data.kept_pixels)."""
    problem, image = _checked(path, decode)
    if image is not None and decoded is not None:
        decoded(path, image)
    return problem


def decoded_image_file(path: Path) -> Image.Image:
    """The image at ``path``, decoded by ``check_image_file(path, decode=True)``, whose problem it raises as a
    DataError: a caller that checks a file this way reads these pixels instead of decoding the file a second time."""
    problem, image = _checked(path, decode=True)
    if problem:
        raise DataError(problem)
    return image


def _checked(path: Path, decode: bool) -> tuple[str | None, Image.Image | None]:
    """check_image_file's problem, and the image where the check decoded it."""
    if problem := url_instead_of_file(path):
        return problem, None
    if path.is_dir():
        return f"folder instead of an image file {path}", None
    if not path.is_file():
        return f"missing image file {path}" + (" (a loop of symbolic links)" if _loops(path) else ""), None
    if path.stat().st_size == 0:
        return f"empty image file {path}", None
    try:
        with open_image(path) as img:
            image_format = img.format
            img.verify()
        if decode or (image_format != "PNG" and not (image_format == "JPEG" and _ends_with_jpeg_eoi(path))):
            with open_image(path) as img:  # leaving it closes the file only: the decoded pixels stay
                img.load()
            return None, img
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return f"unreadable image file {path} ({why_unreadable(path, exc)})", None
    return None, None


def _loops(path: Path) -> bool:
    try:
        path.stat()
    except OSError as err:
        return err.errno == errno.ELOOP
    return False


def _ends_with_jpeg_eoi(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(-2, 2)
        return f.read(2) == b"\xff\xd9"


def _holds_a_list(path: Path) -> bool:
    """Whether a ``.json`` file is one JSON list of objects rather than JSON Lines (one object per line)."""
    with path.open("rb") as f:
        return f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"[")


def _one_object(path: Path) -> dict | None:
    """The one JSON object a ``.json`` file holds whole, where it is no record of JSON Lines (the records under a key of
    it, or one written over several lines), or None. Read line by line, its first line would be named as a record
    without an id, or as no JSON at all."""
    with path.open(encoding="utf-8-sig", errors="surrogateescape") as f:
        first = next((line for line in f if line.strip()), "")
        if not first.lstrip().startswith("{"):
            return None
        try:
            if set(json.loads(first)) & set(FIELDS):  # a record, of a file of one line or more
                return None
        except ValueError:  # an object that goes on past its first line
            pass
        text = first + f.read()
    try:
        whole = json.loads(text)
    except ValueError:
        return None
    return whole if isinstance(whole, dict) else None


def _iter_rows(path: Path):
    """Yield (line_number, item_number, dict | DataError): a malformed line yields the DataError naming it; a file that
    cannot be read at all (no CSV header) raises it. ``item_number`` numbers the items of a JSON list (None for lines)."""
    if path.suffix.lower() not in (".jsonl", ".json", ".csv"):  # a .tsv read as JSON Lines fails on every line
        raise DataError(f"unsupported file type '{path.suffix}': records are read from .jsonl, .json or .csv files", file=path)
    if path.suffix.lower() == ".csv":
        yield from ((line, None, row) for line, row in _iter_csv_rows(path))
        return
    if path.suffix.lower() == ".json" and _holds_a_list(path):
        for line, number, item in iter_json_array(path, object_pairs_hook=_object):
            yield line, number, item if isinstance(item, (dict, DataError)) else DataError("malformed item: expected a JSON object",
                                                                                           file=path, line=line, item=number)
        return
    if path.suffix.lower() == ".json" and (whole := _one_object(path)) is not None:
        keys = ", ".join(map(str, list(whole)[:5])) + (", ..." if len(whole) > 5 else "")
        raise DataError(f"holds one JSON object ({f'keys: {keys}' if whole else 'empty'}), where a list of records "
                        "([{...}, ...]) or JSON Lines (one record a line) is expected", file=path)
    with path.open(encoding="utf-8-sig", errors="surrogateescape") as f:
        for line, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            if error := not_utf8(path, line, raw):
                yield line, None, error
                continue
            try:
                # Stripped so that an error at the line's end has this line's column.
                row = json.loads(raw.rstrip("\r\n"), object_pairs_hook=_object)
            except json.JSONDecodeError as exc:
                yield line, None, DataError(f"malformed line: not valid JSON at column {exc.colno} ({exc.msg})", file=path, line=line)
                continue
            if not isinstance(row, dict):
                yield line, None, DataError("malformed line: expected a JSON object", file=path, line=line)
                continue
            yield line, None, row


def _csv_records(path: Path):
    """(first line, last line, fields) of each non-empty CSV record; a record may run over several lines (a quoted
    newline). A quote never closed would make the rest of the file one field, its records lost: that is an error."""
    # csv's default limit on a field, 128 KiB, would refuse a long text as if a quote were left open; one never closed
    # is found at the file's end instead. The limit is the interpreter's, so it is given back after the read.
    limit = csv.field_size_limit(2**31 - 1)
    try:
        yield from _csv_records_within_limit(path)
    finally:
        csv.field_size_limit(limit)


def _csv_records_within_limit(path: Path):
    # utf-8-sig: spreadsheet programs start "CSV UTF-8" files with a byte-order mark, which is not part of the header.
    with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        at_end = False

        def lines():
            nonlocal at_end
            yield from f
            at_end = True  # the parser asks past the last line only from inside a quoted field, or when done

        # Strict: a quote that closes a field before its end (text after it) is an error, not read on. It is how a
        # quote left open shows when it meets the next quoted text, which would otherwise close it a line later.
        reader = csv.reader(lines(), strict=True)
        while True:
            start = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:  # the parser cannot find where records start again: the file's problem
                if at_end:  # strict parsing ends a field still quoted at the file's end so
                    raise DataError(f"a quote opened in this record is never closed{_swallowed(start, reader.line_num)}",
                                    file=path, line=start) from None
                if "expected after" in str(exc) and reader.line_num == start:
                    # Within one line (the parser goes on at the next): that record alone is malformed.
                    yield start, start, DataError('malformed line: a quote closes a field before its end (a quote inside a '
                                                  'text is written twice: "")', file=path, line=start, kind="malformed line")
                    continue
                hint = ": a quote that is never closed?" if "field limit" in str(exc) else \
                    (f" at line {reader.line_num}: a quote closes a field before its end: is a quote left open above it, or "
                     'one inside a text not doubled ("")?') if "expected after" in str(exc) else ""
                raise DataError(f"malformed CSV from here on ({exc}){hint}", file=path, line=start) from None
            if at_end:
                raise DataError(f"a quote opened in this record is never closed{_swallowed(start, reader.line_num)}",
                                file=path, line=start)
            if fields:
                yield start, reader.line_num, fields


def _swallowed(start: int, end: int) -> str:
    return f": lines {start}-{end} would be one field" if end > start else ""


def _iter_csv_rows(path: Path):
    records = _csv_records(path)
    header_line, _, header = next(records, (None, None, None))
    if header is None:
        raise DataError("empty CSV file (no header)", file=path)
    if isinstance(header, DataError):
        raise DataError(f"CSV header: {header.reason}", file=path, line=header_line)
    if error := not_utf8(path, header_line, *header):
        raise error
    if near := _near_field_names(header):
        raise DataError(f"CSV header: {near}", file=path, line=header_line)
    if twice := _named_twice(header):
        raise DataError(f"CSV header: {twice}", file=path, line=header_line)
    if missing := [k for k in REQUIRED_FIELDS if k not in header]:
        # A spreadsheet saved with another separator (";" in many locales, or tabs) reads as one column.
        other = next((name for sep, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "'|'"))
                      if len(header) == 1 and sep in header[0]), None)
        hint = f": its columns are separated by {other}, and a CSV file's by commas; save it comma-separated" if other else ""
        raise DataError(f"CSV header lacks column(s) {missing}; it has {header}{hint}", file=path, line=header_line)
    required = {key: header.index(key) for key in REQUIRED_FIELDS}
    # A text may hold a line break (quoted); an id, an image path or a label cannot.
    one_line = {key: header.index(key) for key in ("id", "image", "label") if key in header}
    for start, end, fields in records:
        if isinstance(fields, DataError):
            yield start, fields
            continue
        if len(fields) > len(header):
            problem = "more fields than the header"
        elif lacking := [key for key, column in required.items() if column >= len(fields)]:
            problem = f"fewer fields than the header (no {', '.join(lacking)})"
        elif end > start and (broken := [key for key, column in one_line.items() if column < len(fields) and "\n" in fields[column]]):
            problem = f"a line break in its {' and '.join(broken)}"
        else:  # optional fields that a short row leaves out are empty, as they are in csv.DictReader
            yield start, not_utf8(path, start, *fields) or dict(zip(header, fields))
            continue
        if end > start:
            # Most often a quote closed on a later line than it opened, which made one record of lines that held others:
            # they cannot be told apart, and skipping it would lose them unseen, so the read stops, as it does for a
            # quote never closed.
            taken = f"line {end}" if end == start + 1 else f"lines {start + 1}-{end}"
            raise DataError(f"a record runs over lines {start}-{end} with {problem}: is a quote closed on the wrong line, "
                            f"taking in {taken}? The read stops so that no record is lost unseen", file=path, line=start)
        yield start, DataError(f"malformed line: {problem}", file=path, line=start, kind="malformed line")


def _near_field_names(names) -> str:
    """'Label' for 'label', ' text' for 'text': a field that would otherwise be ignored, leaving its record without one."""
    near = [f"'{name}' is not '{name.strip().lower()}'" for name in names
            if name not in FIELDS and name.strip().lower() in FIELDS and name.strip().lower() not in names]
    return "; ".join(near) + " (field names are lower case)" if near else ""


def _named_twice(names) -> str:
    """A field named twice ('label' in two columns, or two keys of one object): one value would be read and the other
    dropped without a word."""
    twice = sorted({name for name in names if name in FIELDS and list(names).count(name) > 1})
    return f"{', '.join(map(repr, twice))} given twice: which one to read is not known" if twice else ""


def _path_hint(written: str) -> str:
    """What an image path that names no file was most likely meant to say, or '': the path in the message is the
    resolved one, where spaces at its end do not show and a Windows path reads as a file name."""
    if written != written.strip():
        return f" (the path as written, {written!r}, has spaces around it)"
    if "\\" in written and os.sep == "/":
        return " (written with '\\', which is part of a file name here: folders are separated by '/')"
    if written.startswith("~"):
        return " ('~' is not the home folder here: a path is absolute, or relative to the data file's folder)"
    return ""


def _not_a_name(value) -> str | None:
    """What a JSON value that cannot name an id or a label is ("list", "inf"), or None for a string or a finite
    number. Python's json reads NaN and Infinity, which are not JSON, as floats."""
    if isinstance(value, (list, dict, bool)):
        return _json_type(value)
    return repr(value) if isinstance(value, float) and not math.isfinite(value) else None


def _json_type(value) -> str:
    return "object" if isinstance(value, dict) else type(value).__name__  # a dict may be a _Repeats


class _Repeats(dict):
    """A JSON object that named a key twice, with its keys as written, so that the key can be named (dict keeps one)."""

    def __init__(self, pairs):
        super().__init__(pairs)
        self.keys_written = [key for key, _ in pairs]


def _object(pairs: list) -> dict:
    """Each JSON object of a record file: a dict, unless it names a key twice."""
    built = dict(pairs)
    return built if len(built) == len(pairs) else _Repeats(pairs)


def _to_record(row: dict, path: Path, line: int, labels: list[str] | None, check_images: bool, item: int | None,
               decoded: Decoded | None) -> Record:
    if near := _near_field_names(row):
        raise DataError(f"malformed line: {near}", file=path, line=line)
    if twice := _named_twice(getattr(row, "keys_written", ())):
        raise DataError(f"malformed line: {twice}", file=path, line=line)
    for key in REQUIRED_FIELDS:
        if row.get(key) is None:
            raise DataError(f"malformed line: missing field '{key}'", file=path, line=line)
    if kind := _not_a_name(row["id"]):  # else read as "[1]", "True" or "nan"
        raise DataError(f"malformed line: id is {kind}, not a string or a number", file=path, line=line)
    if not str(row["id"]).strip():  # else two would be "duplicate id ''", and one would pass unnamed
        raise DataError("malformed line: empty id", file=path, line=line)
    if not str(row["image"]).strip():  # else it names the data file's own folder
        raise DataError("malformed line: empty image field", file=path, line=line, kind="empty image field")
    if not isinstance(row["text"], str):
        raise DataError(f"malformed line: text is {_json_type(row['text'])}, not a string", file=path, line=line)
    if not isinstance(row["image"], str):  # a list or a number would be read as a path "[...]" or "5"
        raise DataError(f"malformed line: image is {_json_type(row['image'])}, not a string (a file's path)", file=path,
                        line=line)
    extras = {key: _optional_text(row, key, path, line) for key in ("ocr", "caption")}
    text = row["text"]
    if blank(text):
        raise DataError("empty text", file=path, line=line)
    label = row.get("label")
    # NaN is the gap of a pandas column as json.dumps writes it (to_json writes null): no label, not a class "nan".
    if isinstance(label, float) and math.isnan(label):
        label = None
    if kind := _not_a_name(label):  # numbers are fine: labels 0/1 are common, and read as "0"/"1"
        raise DataError(f"malformed line: label is {kind}, not a string or a number", file=path, line=line)
    # 1.0 is 1: pandas writes a column of whole numbers with a gap as floats, in JSON and in CSV.
    if isinstance(label, float) and label.is_integer():
        label = int(label)
    elif isinstance(label, str) and _WHOLE_FLOAT.fullmatch(label.strip()):
        label = label.strip().split(".")[0]
    # Spaces around a label are not part of it: "rain " from "rain, snow" must not be a class of its own.
    label = None if label is None or str(label).strip() == "" else str(label).strip()
    if label is not None and ("\n" in label or "\r" in label):  # a label is one line; more is a quote left open
        raise DataError(f"label {label[:20]!r}... runs over several lines: is a quote never closed?", file=path, line=line,
                        kind="label over several lines")
    if label is not None and labels is not None and label not in labels:
        # "Red" in the dev file beside "red" in the train file: the one to write is known, and said.
        same = next((known for known in labels if label_key(known) == label_key(label)), None)
        hint = f"; it differs from {same!r} only in case, spaces, '_' or '-': write it {same!r}" if same else ""
        raise DataError(f"unknown label {label!r} (known labels: {', '.join(map(repr, labels))}){hint}", file=path, line=line)
    # Named as written: as a path, "https://" reads "https:/". Without image checks (`clfa data stats`), it is one
    # more missing image.
    if check_images and (problem := url_instead_of_file(str(row["image"]))):
        raise DataError(problem, file=path, line=line)
    try:
        image = (path.parent / str(row["image"])).resolve()
    except RuntimeError:  # a loop of links, which Python before 3.13 raises for: the check below names it
        image = Path(os.path.abspath(path.parent / str(row["image"])))
    if check_images and (problem := check_image_file(image, decode=check_images == "decode", decoded=decoded)):
        raise DataError(problem + (_path_hint(str(row["image"])) if not image.exists() else ""), file=path, line=line)
    return Record(
        id=str(row["id"]),
        text=text,
        image=image,
        label=label,
        ocr=extras["ocr"],
        caption=extras["caption"],
        source=location(path, line, item),
    )


def _optional_text(row, key: str, path: Path, line: int) -> str | None:
    """An optional text field (ocr, caption): a string, or none when absent, empty or NaN (a pandas gap)."""
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if not isinstance(value, str):  # read as text it would be "5" or "['a', 'b']", which no model should read
        raise DataError(f"malformed line: {key} is {_json_type(value)}, not a string", file=path, line=line)
    return value or None


def check_label_names(labels) -> None:
    """``labels`` as the readers take them: None, or the label names in class-id order; else an OptionError."""
    if labels is None:
        return
    if isinstance(labels, (set, frozenset)):  # its order, the classes' ids, would differ from one process to another
        raise OptionError(f"labels={labels!r}: a list of label names in class-id order, not a set")
    if odd := [label for label in labels if not isinstance(label, str)]:
        as_read = f" ({str(odd[0])!r}, not {odd[0]!r})" if isinstance(odd[0], int) and not isinstance(odd[0], bool) else ""
        raise OptionError(f"labels={labels!r}: label names are text, as the records' labels are read{as_read}")


def read_custom(
    path: str | Path,
    labels: list[str] | None = None,
    skip: SkipReport | None = None,
    check_images: bool | str = True,
    decoded: Decoded | None = None,
) -> list[Record]:
    """Read a file of records: JSON Lines (``.jsonl`` or ``.json``), a ``.json`` file holding one list of objects, or
    ``.csv``.

    ``labels``: the allowed label names (anything else is an "unknown label"); None accepts any label.
    ``skip``: collect bad records there instead of raising on the first one.
    ``check_images``: False reads no image; True checks each cheaply (:func:`check_image_file`); "decode" decodes each.
    ``decoded``: :func:`check_image_file`'s hook for the images it decodes.
    """
    if isinstance(labels, str):  # "label in labels" would then match any part of it
        raise OptionError(f"labels={labels!r}: a list of label names, not one string")
    check_label_names(labels)
    path = Path(path)
    if not path.is_file():
        raise DataError("a folder, not a file of records" if path.is_dir() else "file not found", file=path)
    records: list[Record] = []
    seen: dict[str, str] = {}
    for line, number, row in _iter_rows(path):
        try:
            if isinstance(row, DataError):
                raise row
            record = _to_record(row, path, line, labels, check_images, number, decoded)
            if record.id in seen:
                raise DataError(f"duplicate id '{record.id}' (first at {seen[record.id]})", file=path, line=line)
        except DataError as err:
            raise_or_skip(err.in_item(number), skip)
            continue
        seen[record.id] = location(path.name, line, number)
        records.append(record)
    return records
