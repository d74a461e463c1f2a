"""JSON files that hold one list of objects, read item by item so that an error names the line it is on."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any, Iterator

from clfa.data.records import DataError, not_utf8

_WS = re.compile(r"[ \t\n\r]*")


def iter_json_array(path: Path, object_pairs_hook=None) -> Iterator[tuple[int, int, Any]]:
    """Yield ``(line, number, item)`` for each item of a file holding one JSON list; ``number`` counts from 1.

    Items are decoded one at a time so an error about an item can name the line it starts on, and its number for a
    list written on one line; an item holding bytes
    that are not UTF-8 is yielded as that DataError, for the reader to raise or skip like any bad item. A file that
    is not a JSON list raises DataError with the line of the syntax error: past it, items cannot be told apart.
    ``object_pairs_hook`` builds each object, as it does for ``json.loads``.
    """
    try:
        text = path.read_bytes().decode("utf-8-sig", errors="surrogateescape")
    except OSError as exc:
        raise DataError(f"cannot read file ({exc.strerror})", file=path) from exc
    decoder = json.JSONDecoder(object_pairs_hook=object_pairs_hook)
    line, counted = 1, 0

    def line_at(pos: int) -> int:
        nonlocal line, counted
        line += text.count("\n", counted, pos)
        counted = pos
        return line

    i = _WS.match(text, 0).end()
    if text[i : i + 1] != "[":
        raise DataError("malformed file: expected a JSON list ('[' ... ']')", file=path, line=line_at(i))
    i = _WS.match(text, i + 1).end()
    if text[i : i + 1] != "]":
        for number in itertools.count(1):
            start, begin = line_at(i), i
            try:
                item, i = decoder.raw_decode(text, i)
            except json.JSONDecodeError as exc:
                if number > 1 and text[i : i + 1] == "]":  # as JavaScript and Python write lists, not as JSON does
                    comma = text.count("\n", 0, text.rindex(",", 0, i)) + 1
                    raise DataError("malformed JSON: a comma after the last item", file=path, line=comma, item=number - 1) from exc
                raise DataError(f"malformed JSON at column {exc.colno} ({exc.msg})", file=path, line=exc.lineno, item=number) from exc
            error = not_utf8(path, start, text[begin:i])
            yield start, number, error.in_item(number) if error else item
            i = _WS.match(text, i).end()
            if text[i : i + 1] == ",":
                i = _WS.match(text, i + 1).end()
                continue
            if text[i : i + 1] == "]":
                break
            raise DataError("malformed JSON: expected ',' or ']' after an item", file=path, line=line_at(i), item=number)
    if text[_WS.match(text, i + 1).end() :]:
        raise DataError("malformed JSON: text after the closing ']'", file=path, line=line_at(i))
