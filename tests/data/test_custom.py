"""Every kind of invalid record in the custom format is reported with its file and line, or counted when skipped."""

import json
import re

import pytest
from PIL import Image

from clfa.data.custom import read_custom
from clfa.data.records import DataError, SkipReport, require_labels
from clfa.data.registry import load_dataset


@pytest.fixture
def folder(tmp_path, broken_png):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 8), "red").save(tmp_path / "img" / "ok.png")
    (tmp_path / "img" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg body")
    noise = Image.effect_noise((64, 48), 60).convert("RGB")
    for name in ("whole.jpg", "whole.png"):
        noise.save(tmp_path / "img" / name)
        data = (tmp_path / "img" / name).read_bytes()
        (tmp_path / "img" / name.replace("whole", "cut")).write_bytes(data[: len(data) // 2])  # a download cut short
    (tmp_path / "img" / "trailing.jpg").write_bytes((tmp_path / "img" / "whole.jpg").read_bytes() + b"\0" * 16)
    broken_png.rename(tmp_path / "img" / "broken_pixels.png")
    (tmp_path / "img" / "page.jpg").write_text("<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head></html>\n")
    return tmp_path


GOOD = {"id": "1", "text": "so sunny", "image": "img/ok.png", "label": "pos"}


def write_jsonl(folder, bad_line: str):
    path = folder / "data.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD | {"id": "2"}) + "\n" + bad_line + "\n")
    return path


CASES = {
    "missing image": (json.dumps(GOOD | {"id": "3", "image": "img/nowhere.png"}), "missing image file"),
    "image URL": (json.dumps(GOOD | {"id": "3", "image": "HTTPS://example.com/a.png"}),
                  "URL instead of an image file HTTPS://example.com/a.png (images are read from disk"),
    "corrupt image": (json.dumps(GOOD | {"id": "3", "image": "img/corrupt.jpg"}), "unreadable image file"),
    "truncated jpeg": (json.dumps(GOOD | {"id": "3", "image": "img/cut.jpg"}), "image file is truncated"),
    "truncated png": (json.dumps(GOOD | {"id": "3", "image": "img/cut.png"}), "unreadable image file"),
    # What a failed download saves under the image's name: named for what it is, not as a format Pillow does not know.
    "web page as image": (json.dumps(GOOD | {"id": "3", "image": "img/page.jpg"}),
                          "page.jpg (an HTML page ('404 Not Found'), not an image: what a failed download leaves)"),
    "folder as image": (json.dumps(GOOD | {"id": "3", "image": "img"}), "folder instead of an image file"),
    "empty image field": (json.dumps(GOOD | {"id": "3", "image": " "}), "malformed line: empty image field"),
    "empty text": (json.dumps(GOOD | {"id": "3", "text": "   "}), "empty text"),
    # Zero-width spaces and joiners, a word joiner, a byte-order mark: nothing shows, and tokenizers drop them all.
    "invisible text": (json.dumps(GOOD | {"id": "3", "text": "\u200b \u200d\u2060\ufeff"}), "empty text"),
    "empty id": (json.dumps(GOOD | {"id": " "}), "malformed line: empty id"),
    "unknown label": (json.dumps(GOOD | {"id": "3", "label": "sarcasm"}), "unknown label 'sarcasm'"),
    "malformed line": ('{"id": "3", "text": "broken', "malformed line"),
    "unclosed object": ('{"id": "3", "text": "a", "image": "img/ok.png"', "not valid JSON at column 47 (Expecting ',' delimiter)"),
    "missing field": (json.dumps({"id": "3", "text": "no image"}), "missing field 'image'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_invalid_record_names_file_and_line(folder, case):
    line, message = CASES[case]
    path = write_jsonl(folder, line)
    with pytest.raises(DataError) as err:
        read_custom(path, labels=["neg", "pos"])
    assert f"{path}:3:" in str(err.value)
    assert message in str(err.value)
    assert err.value.line == 3


@pytest.mark.parametrize("case", sorted(CASES))
def test_skip_invalid_counts_and_names_the_dropped_record(folder, case):
    line, message = CASES[case]
    skip = SkipReport()
    records = read_custom(write_jsonl(folder, line), labels=["neg", "pos"], skip=skip)
    assert [r.id for r in records] == ["1", "2"]
    assert len(skip) == 1 and skip.skipped[0].line == 3
    assert "skipped 1 invalid record" in skip.summary() and message in skip.summary()


def test_an_image_path_that_is_a_loop_of_links_is_named_not_a_traceback(folder):
    """Python before 3.13 raised RuntimeError resolving it, which stopped every command that reads the file."""
    try:
        (folder / "img" / "loop.jpg").symlink_to("loop.jpg")
    except OSError:
        pytest.skip("symbolic links cannot be made here")
    path = write_jsonl(folder, json.dumps(GOOD | {"id": "3", "image": "img/loop.jpg"}))
    with pytest.raises(DataError, match=re.escape(f"{path}:3: missing image file {folder / 'img' / 'loop.jpg'} (a loop of "
                                                  "symbolic links)")):
        read_custom(path)
    skip = SkipReport()
    assert [r.id for r in read_custom(path, skip=skip)] == ["1", "2"] and "1 x missing image file" in skip.summary()
    assert [r.image.name for r in read_custom(path, check_images=False)] == ["ok.png", "ok.png", "loop.jpg"]


def test_csv_reader_and_relative_image_paths(folder):
    path = folder / "sub" / "data.csv"
    path.parent.mkdir()
    path.write_text('id,text,image,label\n7,"hello, world",../img/ok.png,pos\n8,"",../img/ok.png,neg\n')
    with pytest.raises(DataError, match=r"data.csv:3: empty text"):
        read_custom(path)
    skip = SkipReport()
    (record,) = read_custom(path, skip=skip)
    assert record.text == "hello, world" and record.image == (folder / "img" / "ok.png").resolve()


@pytest.mark.parametrize("sep, name", [(";", "semicolons"), ("\t", "tabs")])
def test_a_csv_file_separated_by_other_than_commas_is_named_as_such(folder, sep, name):
    path = folder / "data.csv"
    path.write_text(sep.join(["id", "text", "image", "label"]) + "\n" + sep.join(["7", "hello", "img/ok.png", "pos"]) + "\n")
    with pytest.raises(DataError, match=rf"data.csv:1: CSV header lacks column\(s\) \['id', 'text', 'image'\]; it has .*: its "
                                        rf"columns are separated by {name}, and a CSV file's by commas; save it comma-separated$"):
        read_custom(path)
    path.write_text("id;text,label\n")  # two columns: the separator is a comma, and one column is missing
    with pytest.raises(DataError, match=r"lacks column\(s\) \['id', 'text', 'image'\]; it has \['id;text', 'label'\]$"):
        read_custom(path)


def test_duplicate_ids_are_rejected(folder):
    path = write_jsonl(folder, json.dumps(GOOD))
    with pytest.raises(DataError, match="duplicate id '1' \\(first at data.jsonl:1\\)"):
        read_custom(path)


def test_a_record_of_a_json_list_is_named_by_its_item_later_too(folder):
    path = folder / "test.json"
    path.write_text(json.dumps([GOOD, {key: value for key, value in GOOD.items() if key != "label"} | {"id": "2"}]))
    records = read_custom(path)
    assert [record.source for record in records] == [f"{path}:1, item 1", f"{path}:1, item 2"]
    with pytest.raises(DataError, match=r"test.json:1, item 2: record '2' has no label, which evaluation needs"):
        require_labels(records, "evaluation")


def test_a_label_written_another_way_than_the_train_files_says_how_to_write_it(folder):
    """"unknown label 'Red' (known labels: 'blue', 'red')" left the reader to spot the capital; "Sarcastic" beside
    "not_sarcastic" is as easily missed."""
    (folder / "train.jsonl").write_text("".join(json.dumps(GOOD | {"id": str(n), "label": label}) + "\n"
                                                for n, label in enumerate(["red", "not_red", "-1"])))
    for written, known in (("Red", "red"), ("not red", "not_red"), ("Not-Red", "not_red")):
        (folder / "dev.jsonl").write_text(json.dumps(GOOD | {"label": written}) + "\n")
        with pytest.raises(DataError, match=re.escape(f"dev.jsonl:1: unknown label {written!r} (known labels: '-1', 'not_red', "
                                                      f"'red'); it differs from {known!r} only in case, spaces, '_' or '-': "
                                                      f"write it {known!r}") + "$"):
            load_dataset("jsonl", folder)
    for other in ("1", "blue"):  # a sign is no spelling: 1 is not -1
        (folder / "dev.jsonl").write_text(json.dumps(GOOD | {"label": other}) + "\n")
        with pytest.raises(DataError, match=re.escape(f"unknown label {other!r} (known labels: '-1', 'not_red', 'red')") + "$"):
            load_dataset("jsonl", folder)


def test_training_names_an_unlabelled_record(folder, tiny_models, tmp_path):
    from clfa.options import TrainOptions
    from clfa.training import train

    (folder / "train.jsonl").write_text(json.dumps(GOOD) + "\n" + json.dumps({k: v for k, v in GOOD.items() if k != "label"} | {"id": "2"}) + "\n")
    data = load_dataset("jsonl", folder)
    opts = TrainOptions(output_dir=str(tmp_path / "run"), text_model=tiny_models["text"], image_model=tiny_models["image"], teacher=tiny_models["teacher"])
    with pytest.raises(DataError, match=r"train.jsonl:2: record '2' has no label, which training \(train split\) needs"):
        train(opts, data)


def test_the_skip_summary_counts_each_kind_of_problem_once(folder):
    lines = [json.dumps(GOOD | {"id": str(i), "image": f"img/gone{i}.png"}) for i in range(3, 7)]
    lines += [json.dumps(GOOD | {"id": "7", "label": "sarcstic"})]
    path = folder / "data.jsonl"
    path.write_text("\n".join([json.dumps(GOOD), *lines]) + "\n")
    skip = SkipReport()
    read_custom(path, labels=["neg", "pos"], skip=skip)
    first = skip.summary().splitlines()[0]
    assert first == "skipped 5 invalid record(s): 4 x missing image file, 1 x unknown label"


def test_a_csv_with_a_byte_order_mark_reads_and_other_encodings_are_named(folder):
    path = folder / "data.csv"
    path.write_text("id,text,image,label\n7,café au lait,img/ok.png,pos\n", encoding="utf-8-sig")  # Excel's "CSV UTF-8"
    (record,) = read_custom(path)
    assert record.id == "7" and record.text == "café au lait"
    path.write_text("id,text,image,label\n7,café au lait,img/ok.png,pos\n", encoding="latin-1")
    with pytest.raises(DataError, match=r"data.csv:2: not UTF-8 text \(byte 0xe9\); save the file as UTF-8"):
        read_custom(path)
    jsonl = folder / "data.jsonl"
    jsonl.write_text(json.dumps(GOOD) + "\n", encoding="utf-8-sig")
    assert [r.id for r in read_custom(jsonl)] == ["1"]


def test_a_line_that_is_not_utf8_is_one_bad_record_not_a_lost_file(folder):
    """A scraped file with one stray byte: under --skip-invalid that line is counted and the rest is read."""
    good = [json.dumps(GOOD | {"id": str(i), "text": f"caf\u00e9 {i}"}, ensure_ascii=False).encode() for i in range(4)]
    bad = json.dumps(GOOD | {"id": "x", "text": "caf\u00e9"}, ensure_ascii=False).encode("latin-1")
    jsonl = folder / "data.jsonl"
    jsonl.write_bytes(b"\n".join([good[0], good[1], bad, good[2], good[3]]) + b"\n")
    with pytest.raises(DataError, match=r"data.jsonl:3: not UTF-8 text \(byte 0xe9\)"):
        read_custom(jsonl)
    skip = SkipReport()
    records = read_custom(jsonl, skip=skip)
    assert [r.id for r in records] == ["0", "1", "2", "3"] and records[0].text == "caf\u00e9 0"
    assert [(e.line, e.kind) for e in skip.skipped] == [(3, "not UTF-8 text")]

    csv_path = folder / "data.csv"
    rows = [b"id,text,image,label", b'1,"two\nlines",img/ok.png,pos', "2,caf\u00e9,img/ok.png,pos".encode("cp1252"),
            "3,caf\u00e9,img/ok.png,neg".encode()]
    csv_path.write_bytes(b"\n".join(rows) + b"\n")
    skip = SkipReport()
    assert [r.id for r in read_custom(csv_path, skip=skip)] == ["1", "3"]
    assert [e.line for e in skip.skipped] == [4]  # the record on line 4: the first spans lines 2-3
    csv_path.write_bytes("id,t\u00e9xt,image\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"data.csv:1: not UTF-8 text \(byte 0xe9\)"):
        read_custom(csv_path, skip=SkipReport())  # a header that cannot be read is the whole file's problem


def test_csv_records_are_named_by_their_first_line_and_a_quote_never_closed_is_named(folder):
    path = folder / "data.csv"
    path.write_text('id,text,image,label\n\n1,"two\nlines",img/ok.png,pos\n\n2,no label,img/ok.png\n4,short\n3,fine,img/ok.png,neg\n')
    skip = SkipReport()
    records = read_custom(path, skip=skip)
    assert [(r.id, r.label, r.source) for r in records] == [("1", "pos", f"{path}:3"), ("2", None, f"{path}:6"), ("3", "neg", f"{path}:8")]
    assert [(e.line, e.reason) for e in skip.skipped] == [(7, "malformed line: fewer fields than the header (no image)")]
    # A quote never closed would swallow the records after it: the file stops there, even under --skip-invalid.
    for quoted in ('1,"oops,img/ok.png,pos', '1,oops,img/ok.png,"pos'):
        path.write_text(f'id,text,image,label\n{quoted}\n2,fine,img/ok.png,neg\n')
        with pytest.raises(DataError, match=r"data.csv:2: a quote opened in this record is never closed: lines 2-3 would be one field$"):
            read_custom(path, skip=SkipReport())
    # One closed further on takes in the lines between, whose records cannot be told apart: the read stops too.
    path.write_text('id,text,image,label\n1,oops,img/ok.png,"pos\n2,fine,img/ok.png,neg"\n3,"a ""quoted"" word",img/ok.png,neg\n')
    with pytest.raises(DataError, match=r"data.csv:2: a record runs over lines 2-3 with a line break in its label: is a quote closed "
                                        r"on the wrong line, taking in line 3\? The read stops so that no record is lost unseen$"):
        read_custom(path, skip=SkipReport())
    path.write_text('id,text,image,label\n1,"oops,img/ok.png,pos\n2,fine,img/ok.png,neg\n3,x,img/ok.png,neg"\n')
    with pytest.raises(DataError, match=r"data.csv:2: a record runs over lines 2-4 with fewer fields than the header \(no image\): "
                                        r"is a quote closed on the wrong line, taking in lines 3-4\?"):
        read_custom(path, skip=SkipReport())
    # A quote that ends a field early within one line spoils that record only: it is skipped, and the read goes on.
    path.write_text('id,text,image,label\n1,"he said "hi" to me",img/ok.png,pos\n2,fine,img/ok.png,neg\n')
    skip = SkipReport()
    assert [r.id for r in read_custom(path, skip=skip)] == ["2"]
    assert [(e.line, e.reason) for e in skip.skipped] == [
        (2, 'malformed line: a quote closes a field before its end (a quote inside a text is written twice: "")')]
    # The quote opened in one text and closed at the start of the next record's: as many fields as the header.
    path.write_text('id,text,image,label\n1,"oops,img/ok.png,pos\n2,"fine",img/ok.png,neg\n3,last,img/ok.png,neg\n')
    with pytest.raises(DataError, match=r"data.csv:2: malformed CSV from here on \(',' expected after '\"'\) at line 3: a quote "
                                        r"closes a field before its end: is a quote left open above it"):
        read_custom(path, skip=SkipReport())
    # A text over csv's default field limit (128 KiB) is read; a quote never closed in a long file is still found.
    long_text = "rain " * 40_000
    path.write_text(f'id,text,image,label\n1,"{long_text}",img/ok.png,pos\n')
    assert [len(r.text) for r in read_custom(path)] == [len(long_text)]
    path.write_text('id,text,image,label\n1,"oops,img/ok.png,pos\n' + "".join(f"{i},fine text,img/ok.png,neg\n" for i in range(2, 9000)))
    with pytest.raises(DataError, match=r"data.csv:2: a quote opened in this record is never closed: lines 2-9000 would be one field$"):
        read_custom(path, skip=SkipReport())


def test_a_json_file_may_hold_one_list_of_records(folder):
    path = folder / "train.json"
    path.write_text(json.dumps([GOOD, GOOD | {"id": "2", "label": "neg"}, ["not", "an", "object"]], indent=1))
    skip = SkipReport()
    records = read_custom(path, skip=skip)
    assert [(r.id, r.label, r.source) for r in records] == [("1", "pos", f"{path}:2, item 1"), ("2", "neg", f"{path}:8, item 2")]
    assert [(e.line, e.reason) for e in skip.skipped] == [(14, "malformed item: expected a JSON object")]
    path.write_text("\ufeff" + json.dumps(GOOD) + "\n")  # one object per line stays JSON Lines, whatever the suffix
    assert [r.id for r in read_custom(path)] == ["1"]
    path.write_text(json.dumps([GOOD, GOOD | {"id": "2", "label": "neg"}]))
    assert [r.id for r in load_dataset("jsonl", folder)["train"]] == ["1", "2"]  # found as DATA_DIR/train.json
    path.write_text("[\n" + json.dumps(GOOD) + ",\n" + json.dumps(GOOD | {"id": "2"}) + ",\n]\n")  # a comma after the last
    with pytest.raises(DataError, match=r"train.json:3, item 2: malformed JSON: a comma after the last item$"):
        read_custom(path)
    path.write_text('[{"id": "1",\n "text": }]')
    with pytest.raises(DataError, match=r"train.json:2, item 1: malformed JSON"):
        read_custom(path, skip=SkipReport())
    # A list written on one line (json.dump's way): each problem names its item, since every line number is 1.
    path.write_text(json.dumps([GOOD, GOOD | {"label": ["x"]}, 7, GOOD]))
    skip = SkipReport()
    assert [r.id for r in read_custom(path, skip=skip)] == ["1"]
    assert [(e.line, e.item, e.reason) for e in skip.skipped] == [
        (1, 2, "malformed line: label is list, not a string or a number"),
        (1, 3, "malformed item: expected a JSON object"),
        (1, 4, "duplicate id '1' (first at train.json:1, item 1)"),
    ]
    # A byte that is not UTF-8 spoils its item only.
    items = [json.dumps(GOOD).encode(), json.dumps(GOOD | {"id": "2", "text": "caf\u00e9"}, ensure_ascii=False).encode("latin-1"),
             json.dumps(GOOD | {"id": "3"}).encode()]
    path.write_bytes(b"[\n" + b",\n".join(items) + b"\n]\n")
    skip = SkipReport()
    assert [r.id for r in read_custom(path, skip=skip)] == ["1", "3"]
    assert [(e.line, e.reason) for e in skip.skipped] == [(3, "not UTF-8 text (byte 0xe9); save the file as UTF-8")]


def test_a_json_file_of_one_object_is_named_as_such_not_as_a_record_without_an_id(folder):
    """Records kept under a key ({"data": [...]}) or one record written over several lines were named as line 1's
    record without an id, or as line 1 not being JSON: a file that holds no record at all, as the reader sees it."""
    path = folder / "train.json"
    expected = r"where a list of records \(\[\{\.\.\.\}, \.\.\.\]\) or JSON Lines \(one record a line\) is expected$"
    for written, keys in ((json.dumps({"data": [GOOD], "version": 2}), "data, version"),
                          (json.dumps(GOOD, indent=2), "id, text, image, label")):
        path.write_text(written)
        with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: holds one JSON object \(keys: {keys}\), {expected}"):
            read_custom(path, skip=SkipReport())  # the file, not one record to skip
    path.write_text(json.dumps(GOOD | {"id": "2"}))  # one record on its line is a file of JSON Lines
    assert [r.id for r in read_custom(path)] == ["2"]
    path.write_text(json.dumps({"id": "3", "text": "no image"}))  # and one line short of a field is that record's problem
    with pytest.raises(DataError, match=r"train.json:1: malformed line: missing field 'image'$"):
        read_custom(path)


def test_a_folder_given_as_a_file_of_records_is_named(folder):
    with pytest.raises(DataError, match=r"img: a folder, not a file of records"):
        read_custom(folder / "img")
    with pytest.raises(DataError, match=r"nothere.jsonl: file not found"):
        read_custom(folder / "nothere.jsonl")


@pytest.mark.parametrize("field, message", [
    ('"Label": "pos"', r"malformed line: 'Label' is not 'label' \(field names are lower case\)"),
    ('"label": ["pos"]', r"malformed line: label is list, not a string or a number"),
    ('"text": ["so", "sunny"]', r"malformed line: text is list, not a string"),
    # Without their check, read as the id "[7]", and the label "inf"; the text given first, dropped unseen.
    ('"id": [7]', r"malformed line: id is list, not a string or a number"),
    ('"label": Infinity', r"malformed line: label is inf, not a string or a number"),
    # Read as the caption "5" and the image path "['a.png']" before.
    ('"caption": 5', r"malformed line: caption is int, not a string"),
    ('"ocr": {"text": "SALE"}', r"malformed line: ocr is object, not a string"),
    ('"image": ["img/ok.png"]', r"malformed line: image is list, not a string \(a file's path\)"),
    ('"text": "so sunny", "text": "or not"', r"malformed line: 'text' given twice: which one to read is not known"),
])
def test_a_field_that_would_be_ignored_or_mangled_is_named(folder, field, message):
    given = {key.lower() for key in json.loads("{" + field + "}")}
    record = json.dumps({k: v for k, v in GOOD.items() if k not in given})[:-1] + ", " + field + "}"
    with pytest.raises(DataError, match=r"data.jsonl:3: " + message):
        read_custom(write_jsonl(folder, record))
    (folder / "data.json").write_text("[" + json.dumps(GOOD) + ",\n" + record + "]")  # and as an item of a JSON list
    with pytest.raises(DataError, match=r"data.json:2, item 2: " + message):
        read_custom(folder / "data.json")


def test_an_absent_empty_or_nan_caption_is_none(folder):
    """json.dumps writes a pandas gap as NaN, read back as a float: no caption, not the caption "nan"."""
    rows = [GOOD | {"caption": "a dog"}, GOOD | {"id": "2", "caption": ""}, GOOD | {"id": "3", "caption": float("nan"), "ocr": None},
            GOOD | {"id": "4"}]
    (folder / "data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert [(r.caption, r.ocr) for r in read_custom(folder / "data.jsonl")] == [("a dog", None)] + [(None, None)] * 3


def test_a_csv_column_named_twice_is_refused_not_one_of_them_read(folder):
    (folder / "data.csv").write_text("id,text,image,label,label\n1,so sunny,img/ok.png,pos,neg\n")
    with pytest.raises(DataError, match=r"data.csv:1: CSV header: 'label' given twice: which one to read is not known"):
        read_custom(folder / "data.csv", skip=SkipReport())


def test_a_nan_label_is_no_label_not_a_class_named_nan(folder):
    """json.dumps writes the gap of a pandas column as NaN, which Python's json reads back as a float."""
    (folder / "train.jsonl").write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD | {"id": "2", "label": "neg"}) + "\n"
                                        + json.dumps(GOOD | {"id": "3", "label": float("nan")}) + "\n")
    assert [r.label for r in read_custom(folder / "train.jsonl")] == ["pos", "neg", None]
    data = load_dataset("jsonl", folder, skip_invalid=True)
    assert data.labels == ["neg", "pos"]
    data.drop_unlabelled(["train"], "training")
    assert [r.id for r in data["train"]] == ["1", "2"] and "train.jsonl:3: record '3' has no label" in data.skipped.summary()


@pytest.mark.parametrize("written, hint", [
    ("img\\ok.png", r"img\\ok.png \(written with '\\', which is part of a file name here: folders are separated by '/'\)"),
    ("img/ok.png ", r"img/ok.png  \(the path as written, 'img/ok.png ', has spaces around it\)"),
    ("~/ok.png", r"~/ok.png \('~' is not the home folder here: a path is absolute, or relative to the data file's folder\)"),
])
def test_a_missing_image_says_what_its_path_as_written_likely_meant(folder, written, hint):
    """The message names the resolved path, where a Windows path, a space at the end or '~' do not show what went wrong."""
    path = write_jsonl(folder, json.dumps(GOOD | {"id": "3", "image": written}))
    with pytest.raises(DataError, match=r"data.jsonl:3: missing image file .*" + hint + "$"):
        read_custom(path)


def test_labels_are_read_without_surrounding_spaces_and_numbers_as_text(folder):
    (folder / "train.jsonl").write_text(json.dumps(GOOD | {"label": " pos "}) + "\n" + json.dumps(GOOD | {"id": "2", "label": 0}) + "\n")
    assert load_dataset("jsonl", folder).labels == ["0", "pos"]
    assert load_dataset("jsonl", folder, labels=["pos", "0"]).labels == ["pos", "0"]
    with pytest.raises(DataError, match=r"unknown label 'pos' \(known labels: 'neg', ' 0'\)"):
        load_dataset("jsonl", folder, labels=["neg", " 0"])
    (folder / "train.tsv").write_text("id\ttext\n")
    with pytest.raises(DataError, match=r"train.tsv: unsupported file type '.tsv': records are read from .jsonl, .json or .csv"):
        read_custom(folder / "train.tsv")


def test_whole_images_pass_the_check_with_bytes_after_the_jpeg_end_marker(folder):
    lines = [json.dumps(GOOD | {"id": str(i), "image": f"img/{name}"}) for i, name in enumerate(("whole.jpg", "whole.png", "trailing.jpg"))]
    (folder / "data.jsonl").write_text("\n".join(lines) + "\n")
    assert [r.id for r in read_custom(folder / "data.jsonl")] == ["0", "1", "2"]


def test_a_whole_number_written_as_a_float_is_the_same_label(folder):
    lines = [json.dumps(GOOD | {"label": 1}), json.dumps(GOOD | {"id": "2", "label": 1.0}), json.dumps(GOOD | {"id": "3", "label": 0.5})]
    (folder / "data.jsonl").write_text("\n".join(lines) + "\n")
    assert [r.label for r in read_custom(folder / "data.jsonl")] == ["1", "1", "0.5"]
    (folder / "data.csv").write_text("id,text,image,label\n1,a,img/ok.png,1\n2,b,img/ok.png,1.0\n3,c,img/ok.png,-2.00\n4,d,img/ok.png,1.5\n")
    assert [r.label for r in read_custom(folder / "data.csv")] == ["1", "1", "-2", "1.5"]
