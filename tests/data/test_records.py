"""The kinds under which skipped records are counted: the problem without its particulars."""

import pytest

from clfa.data.records import reason_kind


@pytest.mark.parametrize("reason, kind", [
    ("missing image file /data/7.jpg", "missing image file"),
    ("unknown label 'sarcstic' (known labels: neg, pos)", "unknown label"),
    ("malformed line: expected ['<id>', '<text>', <label>] in train.txt", "malformed line: expected"),
    ("malformed line: 'positive,happy'", "malformed line"),
    ('malformed item: expected {"id": ..., "text": ..., "label": 0|1}', "malformed item: expected"),
    ("not UTF-8 text (byte 0xe9); save the file as UTF-8", "not UTF-8 text"),
    ("empty text", "empty text"),
])
def test_a_kind_is_the_reason_without_paths_values_or_details(reason, kind):
    assert reason_kind(reason) == kind
