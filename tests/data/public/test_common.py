"""What the public-dataset readers share (clfa.data.public.common): text decoding, and reading only the splits asked
for."""

from __future__ import annotations

import pytest

from clfa.data.public.common import decode_text
from clfa.data.records import DataError
from clfa.data.registry import load_dataset

from .releases import write_lines, write_mmsd, write_mmsd2, write_premade


def test_decode_text_fallbacks():
    assert decode_text("ok ✓".encode()) == ("ok ✓", False)
    assert decode_text(b"\xef\xbb\xbfbom") == ("bom", False)
    assert decode_text(b"\x93hi\x94") == ("\u201chi\u201d", True)
    # The release's texts that are not UTF-8 are GBK: its Cyrillic and curly quotes are read as written.
    gbk = "RT @KiM_96I: Не могу \u201cвалентин\u201d #snow"
    assert decode_text(gbk.encode("gbk")) == (gbk, True)
    # Windows-1252's curly quotes and accented letters before ASCII letters would be GB18030 pairs too.
    for text in ("It\u2019s sunny", "r\u00e9sum\u00e9s", "na\u00efve \u201cquoted\u201d"):
        assert decode_text(text.encode("cp1252")) == (text, True)
    assert decode_text(b"\x8d \x81") == ("\x8d \x81", True)  # neither GB18030 nor Windows-1252: Latin-1


def test_decode_text_reads_gbk_dashes_and_box_drawing():
    # GBK writes the en dash, box drawing and arrows outside GB2312's rows, as 0xA8 and a byte below 0xA1; Windows-1252
    # would make the whole text mojibake ("¨C" for the dash, "¡°" for each curly quote).
    for text in ("Photo \u2013 by @jo", "\u201cBest day\u201d \u2013 \u041f\u0440\u0438\u0432\u0435\u0442", "\u2554\u2550\u2557 \u2196 \u2500\u2013"):
        assert decode_text(text.encode("gbk")) == (text, True)


def test_reading_only_the_splits_asked_for_leaves_the_others_unread(tmp_path):
    """Evaluating on test must not stop at (or spend time checking the images of) the train split."""
    root = write_mmsd(tmp_path / "mmsd", [['1', 'a', 1]], [['2', 'b', 0, 0]], [['3', 'c', 1, 1]])
    write_lines(root / "text" / "train.txt", ["not a literal list"])
    (root / "dataset_image" / "1.jpg").unlink()
    with pytest.raises(DataError, match=r"train.txt:1: malformed line"):
        load_dataset("mmsd", root)
    data = load_dataset("mmsd", root, splits=["test"])
    assert list(data.splits) == ["test"] and [r.id for r in data["test"]] == ["3"]
    (root / "text" / "train.txt").unlink()
    assert [r.id for r in load_dataset("mmsd", root, splits=["test"])["test"]] == ["3"]
    assert [r.id for r in load_dataset("mmsd", root, splits=["dev", "test"])["dev"]] == ["2"]
    (root / "text" / "valid2.txt").unlink()
    with pytest.raises(DataError, match="missing valid2.txt;"):
        load_dataset("mmsd", root, splits=["dev", "test"])
    with pytest.raises(DataError, match="has no 'train' split"):
        data["train"]

    root = write_mmsd2(tmp_path / "mmsd2", {"train": [{"image_id": 1, "text": "a", "label": 0}],
                                            "valid": [{"image_id": 2, "text": "b", "label": 0}],
                                            "test": [{"image_id": 3, "text": "c", "label": 1}]})
    (root / "dataset_image" / "1.jpg").unlink()
    assert [r.id for r in load_dataset("mmsd2", root, splits=["dev"])["dev"]] == ["2"]

    write_premade(tmp_path / "mvsa", tmp_path / "mvsa" / "data")
    (tmp_path / "mvsa" / "data" / "0.jpg").unlink()  # a train image
    assert len(load_dataset("mvsa-single", tmp_path / "mvsa", splits=["test"])["test"]) == 6
    with pytest.raises(DataError, match=r"train.json:\d+, item 1: missing image file"):
        load_dataset("mvsa-single", tmp_path / "mvsa")
