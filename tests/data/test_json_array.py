"""Reading a JSON list item by item with each item's line (clfa.data.json_array)."""

from __future__ import annotations

import pytest

from clfa.data.json_array import iter_json_array
from clfa.data.records import DataError


def test_iter_json_array_line_numbers(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('\n[\n  {"a": 1},\n\n  {"b":\n 2}, 3\n]\n')
    assert list(iter_json_array(path)) == [(3, 1, {"a": 1}), (5, 2, {"b": 2}), (6, 3, 3)]
    path.write_text("[]")
    assert list(iter_json_array(path)) == []
    path.write_text('{"not": "a list"}')
    with pytest.raises(DataError, match="expected a JSON list"):
        list(iter_json_array(path))
    path.write_text("[1, 2]\n[3]")
    with pytest.raises(DataError, match=r"a.json:1: malformed JSON: text after"):
        list(iter_json_array(path))
