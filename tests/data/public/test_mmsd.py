"""The MMSD and MMSD2.0 readers (clfa.data.public.mmsd) on small trees in each published format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clfa.cli import main
from clfa.data.public import ReaderNotes
from clfa.data.public.mmsd import filter_reason
from clfa.data.records import DataError
from clfa.data.registry import load_dataset

from .releases import jpeg, write_mmsd, write_mmsd2


# ---------------------------------------------------------------- MMSD


def test_mmsd_parses_published_line_formats(tmp_path):
    root = write_mmsd(
        tmp_path,
        train=[
            ['100', "it 's a \"quoted\" word , isn 't it", 1],
            r"""['101', 'don\'t \\ stop <user> # fun', 0]""",
            ['102', 'line one\nline two', 1],
        ],
        dev=[['200', 'hashtag says yes , human says no', 1, 0]],
        test=[['300', 'both agree', 0, 1]],
    )
    jpeg(root / "dataset_image" / "101.jpg")
    data = load_dataset("mmsd", root)
    train = data["train"]
    assert [r.id for r in train] == ["100", "101", "102"]
    assert train[0].text == "it 's a \"quoted\" word , isn 't it"
    assert train[1].text == "don't \\ stop <user> # fun"
    assert train[2].text == "line one\nline two"
    assert [r.label for r in train] == ["sarcastic", "not_sarcastic", "sarcastic"]
    assert data["dev"][0].label == "not_sarcastic"  # the last element (human label), not the hashtag one
    assert data["test"][0].label == "sarcastic"
    assert train[0].image == root / "dataset_image" / "100.jpg"
    assert train[1].source == f"{root / 'text' / 'train.txt'}:2"
    assert data.labels == ["not_sarcastic", "sarcastic"]
    assert data.positive_label == "sarcastic"


def test_mmsd_image_dir_option(tmp_path):
    root = write_mmsd(tmp_path / "d", [['1', 'a', 1]], [['2', 'b', 0, 0]], [['3', 'c', 1, 1]], images=False)
    for i in "123":
        jpeg(tmp_path / "imgs" / f"{i}.jpg")
    data = load_dataset("mmsd", root, image_dir=str(tmp_path / "imgs"))
    assert data["dev"][0].image == tmp_path / "imgs" / "2.jpg"


MMSD_FILTER_CASES = [
    # text, dropped by token, dropped by substring
    ("what a lovely day sarcasm", True, True),
    ("what a lovely day # sarcasmo", False, True),
    ("the jokester strikes", False, True),
    ("ironically it rained", False, True),
    ("SARCASM in capitals", False, True),
    ("Irony again", False, True),
    ("look at this <url>", True, True),
    ("check<url>", False, True),
    ("best jokes ever", True, True),
    ("exgag reposting", True, True),
    ("tab\tsarcastic\tinside", True, True),
    ("nbsp\u00a0sarcasm glued by a non-ascii space", False, True),
    ("a perfectly plain tweet", False, False),
]


@pytest.mark.parametrize("text,token,substring", MMSD_FILTER_CASES)
def test_mmsd_filter_reason(text, token, substring):
    assert (filter_reason(text, "token") is not None) == token
    assert (filter_reason(text, "substring") is not None) == substring
    assert filter_reason(text, "none") is None


def test_mmsd_filters_drop_and_count(tmp_path):
    train = [[str(i), text, i % 2] for i, (text, _, _) in enumerate(MMSD_FILTER_CASES)]
    root = write_mmsd(tmp_path, train, [['900', 'i love mondays # sarcasm', 1, 1], ['901', 'fine', 0, 0]], [['950', 'ok', 0, 0]])
    expected = {mode: [str(i) for i, case in enumerate(MMSD_FILTER_CASES) if not case[col]] for mode, col in (("token", 1), ("substring", 2))}
    for mode in ("token", "substring"):
        notes = ReaderNotes()
        data = load_dataset("mmsd", root, mmsd_filter=mode, notes=notes)
        assert [r.id for r in data["train"]] == expected[mode]
        assert notes.removed_total("train") == len(MMSD_FILTER_CASES) - len(expected[mode])
        assert [r.id for r in data["dev"]] == ["901"] and notes.removed_total("dev") == 1
        assert notes.removed_total("test") == 0
        # What cleaning removed travels with the dataset, for train and evaluate to report, without notes asked for.
        plain = load_dataset("mmsd", root, mmsd_filter=mode)
        assert plain.removed == {split: dict(reasons) for split, reasons in notes.removed.items() if reasons}
        assert "cleaning removed 1 sample(s) from dev: 1 x filter: " in plain.report()
        assert f"cleaning removed {notes.removed_total('train')} sample(s) from train" in plain.report()
    assert len(load_dataset("mmsd", root, mmsd_filter="none")["train"]) == len(MMSD_FILTER_CASES)
    assert load_dataset("mmsd", root, mmsd_filter="none").report() == ""
    assert load_dataset("mmsd", root)["train"] == load_dataset("mmsd", root, mmsd_filter="token")["train"]  # token is the default
    with pytest.raises(ValueError, match="unknown MMSD filter"):
        load_dataset("mmsd", root, mmsd_filter="regex")


def test_mmsd_filter_runs_on_raw_text_before_normalisation(tmp_path):
    root = write_mmsd(tmp_path, [['1', 'see this <url>', 1], ['2', 'thanks <user> for <num> # great emoji_15 emoji_15', 1]], [['3', 'x', 0, 0]], [['4', 'y', 0, 0]])
    data = load_dataset("mmsd", root, normalize_text=True)
    assert [r.id for r in data["train"]] == ["2"]  # "<url>" is gone after normalising, but the filter saw it
    assert data["train"][0].text == "thanks @user for 0 #great emoji emoji"
    assert load_dataset("mmsd", root)["train"][0].text == "thanks <user> for <num> # great emoji_15 emoji_15"


@pytest.mark.parametrize(
    "bad_line,reason",
    [
        ("['5', 'only two']", "expected"),
        ("this is not a list", "not a Python literal"),
        ("__import__('os').system('touch pwned')", "not a Python literal"),
        ("['5', 'label out of range', 2]", "not 0 or 1"),
        ("['5', 'float label', 1.0]", "not 0 or 1"),
        ("['5', 'complex label', 1+0j]", "not 0 or 1"),  # a literal equal to 1, but no class id
        ("['5', 'complex label', 0j]", "not 0 or 1"),
        ("['5', 42, 1]", "not a string"),
        ("['5', 'unterminated, 1]", "not a Python literal"),
        (b"['5', 'caf\xe9 latin-1', 1]", r"not UTF-8 text \(byte 0xe9\)"),
    ],
)
def test_mmsd_malformed_line_names_file_and_line(tmp_path, bad_line, reason):
    root = write_mmsd(tmp_path, [['1', 'fine', 1], bad_line, ['6', 'fine too', 0]], [['2', 'x', 0, 0]], [['3', 'y', 0, 0]])
    train_file = root / "text" / "train.txt"
    with pytest.raises(DataError, match=reason) as info:
        load_dataset("mmsd", root)
    assert str(info.value).startswith(f"{train_file}:2: ")
    assert (info.value.file, info.value.line) == (str(train_file), 2)
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()
    skipped = load_dataset("mmsd", root, skip_invalid=True)
    assert [r.id for r in skipped["train"]] == ["1", "6"]
    assert [(e.file, e.line) for e in skipped.skipped.skipped] == [(str(train_file), 2)]


def test_mmsd_duplicate_ids_across_splits(tmp_path):
    root = write_mmsd(tmp_path, [['1', 'a', 1]], [['1', 'again', 0, 0]], [['3', 'c', 0, 0]])
    with pytest.raises(DataError, match=r"valid2.txt:1: duplicate id '1' \(first at train.txt:1\)"):
        load_dataset("mmsd", root)


def test_mmsd_missing_files_and_images(tmp_path, broken_png):
    with pytest.raises(DataError, match=r"^\S+: no text/ folder, where mmsd's train.txt, valid2.txt, test2.txt belong$"):
        load_dataset("mmsd", tmp_path)
    (tmp_path / "text").mkdir()
    with pytest.raises(DataError, match=r"text: missing train.txt, valid2.txt, test2.txt"):
        load_dataset("mmsd", tmp_path)
    (tmp_path / "text").rmdir()
    root = write_mmsd(tmp_path / "d", [['1', 'a', 1], ['2', 'b', 0]], [['3', 'c', 0, 0]], [['4', 'd', 1, 1]], images=False)
    for i in "134":
        jpeg(root / "dataset_image" / f"{i}.jpg")
    with pytest.raises(DataError, match=r"train.txt:2: missing image file .*2.jpg"):
        load_dataset("mmsd", root)
    (root / "dataset_image" / "2.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"train.txt:2: empty image file"):
        load_dataset("mmsd", root)
    assert len(load_dataset("mmsd", root, check_images=False)["train"]) == 2  # images are not opened at all
    assert [r.id for r in load_dataset("mmsd", root, skip_invalid=True)["train"]] == ["1"]
    # Pixels that do not decode under intact checksums: read as they are, found when skipping decodes them.
    broken_png.rename(root / "dataset_image" / "2.jpg")
    assert len(load_dataset("mmsd", root)["train"]) == 2
    skipping = load_dataset("mmsd", root, skip_invalid=True)
    assert [r.id for r in skipping["train"]] == ["1"] and "unreadable image file" in skipping.skipped.summary()


# ---------------------------------------------------------------- MMSD2.0


def test_mmsd2_reads_json_without_filter(tmp_path):
    root = write_mmsd2(tmp_path, {
        "train": [{"image_id": 682716753374351360, "text": "so much # sarcasm <url>", "label": 1}, {"image_id": 2, "text": 'say "hi"', "label": 0}],
        "valid": [{"image_id": 3, "text": "dev", "label": 0}],
        "test": [{"image_id": 4, "text": "test <user>", "label": 1}],
    })
    data = load_dataset("mmsd2", root)
    assert [(r.id, r.label) for r in data["train"]] == [("682716753374351360", "sarcastic"), ("2", "not_sarcastic")]
    assert data["train"][0].text == "so much # sarcasm <url>"  # MMSD2.0 is already cleaned: nothing is dropped
    assert data["train"][0].image == root / "dataset_image" / "682716753374351360.jpg"
    assert data["train"][1].text == 'say "hi"'
    assert load_dataset("mmsd2", root, normalize_text=True)["test"][0].text == "test @user"
    assert data.labels == ["not_sarcastic", "sarcastic"] and data.positive_label == "sarcastic"


def test_mmsd_is_read_as_the_mmsd2_repository_publishes_it_cleaned(tmp_path, capsys):
    # The MMSD2.0 repository's data/ folder: MMSD cleaned in text_json_clean/, MMSD2.0 in text_json_final/.
    clean = {"train": [{"image_id": 1, "text": "so # lovely <url>", "label": 1}, {"image_id": 2, "text": "a cat", "label": 0}],
             "valid": [{"image_id": 3, "text": "dev", "label": 0}], "test": [{"image_id": 4, "text": "test", "label": 1}]}
    root = write_mmsd2(tmp_path / "data", clean, folder="text_json_clean")
    write_mmsd2(root, {"train": [{"image_id": 1, "text": "so # lovely", "label": 0}], "valid": [], "test": []})
    notes = ReaderNotes()
    data = load_dataset("mmsd", root, notes=notes)
    assert [(r.id, r.label, r.text) for r in data["train"]] == [("1", "sarcastic", "so # lovely <url>"), ("2", "not_sarcastic", "a cat")]
    assert [r.id for r in data["dev"]] == ["3"] and data["test"][0].image == root / "dataset_image" / "4.jpg"
    assert notes.mmsd_filter == "none" and not notes.removed  # cleaned by its publishers
    filtered = ReaderNotes()
    assert [r.id for r in load_dataset("mmsd", root, mmsd_filter="token", notes=filtered)["train"]] == ["2"]  # asked for
    assert filtered.removed == {"train": {"filter: token '<url>'": 1}}
    assert load_dataset("mmsd2", root)["train"][0].label == "not_sarcastic"  # the other release, beside it
    assert main(["data", "stats", "--dataset", "mmsd", "--data-dir", str(root)]) == 0
    assert "mmsd: samples per split (--mmsd-filter none)" in capsys.readouterr().out
    (root / "text_json_final" / "train.json").unlink()
    with pytest.raises(DataError, match=r"missing train.json.*\(this folder holds text_json_clean/, MMSD as the MMSD2.0 repository "
                                        r"publishes it: --dataset mmsd\?\)"):
        load_dataset("mmsd2", root)
    (root / "text_json_clean" / "test.json").unlink()
    with pytest.raises(DataError, match=r"text_json_clean: missing test.json; expected train.json, valid.json, test.json there"):
        load_dataset("mmsd", root)


def test_mmsd2_bad_item_names_its_line(tmp_path):
    items = [{"image_id": 1, "text": "a", "label": 0}, {"image_id": 2, "text": "b", "label": 2}]
    root = write_mmsd2(tmp_path, {"train": items, "valid": [], "test": []})
    # indent=2: '[' on line 1, the first item spans lines 2-6, the second starts on line 7
    with pytest.raises(DataError, match=r"train.json:7, item 2: malformed item: label 2 is not 0 or 1"):
        load_dataset("mmsd2", root)
    (root / "text_json_final" / "valid.json").write_text('[{"image_id": 5, "text": "x", "label": 0},\n {"image_id": 6 "text"}]')
    with pytest.raises(DataError, match=r"valid.json:2, item 2: malformed JSON"):
        load_dataset("mmsd2", root, skip_invalid=True)
    (root / "text_json_final" / "valid.json").write_bytes('[{"image_id": 5, "text": "x", "label": 0},\n {"image_id": 6, "text": "caf\u00e9", "label": 0}]'.encode("latin-1"))
    (root / "text_json_final" / "train.json").write_text(json.dumps(items[:1]))
    data = load_dataset("mmsd2", root, skip_invalid=True, check_images=False)
    assert [r.id for r in data["dev"]] == ["5"] and [e.line for e in data.skipped.skipped] == [2]


def test_mmsd2_one_line_file_names_the_item(tmp_path):
    # The released files are json.dump'ed on one line: the line alone ("train.json:1") would find nothing.
    items = [{"image_id": 1, "text": "a", "label": 0}, {"image_id": 2, "text": "b", "label": 2},
             {"image_id": 3, "text": "c", "label": 1}, {"image_id": 1, "text": "d", "label": 1}]
    root = write_mmsd2(tmp_path, {"train": [], "valid": [], "test": []})
    (root / "text_json_final" / "train.json").write_text(json.dumps(items))
    for item in items[:3]:
        jpeg(root / "dataset_image" / f"{item['image_id']}.jpg")
    (root / "dataset_image" / "3.jpg").unlink()
    data = load_dataset("mmsd2", root, skip_invalid=True)
    assert [r.id for r in data["train"]] == ["1"]
    assert [str(e).removeprefix(str(root / "text_json_final") + "/") for e in data.skipped.skipped] == [
        "train.json:1, item 2: malformed item: label 2 is not 0 or 1",
        f"train.json:1, item 3: missing image file {root / 'dataset_image' / '3.jpg'}",
        "train.json:1, item 4: duplicate id '1' (first at train.json:1, item 1)",
    ]
    assert [(e["line"], e["item"]) for e in data.skipped.to_json()] == [(1, 2), (1, 3), (1, 4)]
    (root / "text_json_final" / "train.json").write_text(json.dumps(items[:1])[:-1] + ', {"image_id": 2 "text": "b"}]')
    with pytest.raises(DataError, match=r"train.json:1, item 2: malformed JSON at column \d+ \(Expecting ','"):
        load_dataset("mmsd2", root)


# ---------------------------------------------------------------- edge cases of the published formats


def test_mmsd_each_file_has_its_own_line_arity(tmp_path):
    root = write_mmsd(tmp_path / "m", [["1", "a tweet", 0, 1]], [["2", "b", 0, 1]], [["3", "c", 0, 1]])
    with pytest.raises(DataError, match=r"train.txt:1: malformed line: expected \['<id>', '<text>', <label>\]"):
        load_dataset("mmsd", root)
    root = write_mmsd(tmp_path / "n", [["1", "a tweet", 0]], [["2", "b", 1]], [["3", "c", 0, 1]])
    with pytest.raises(DataError, match=r"valid2.txt:1: malformed line: expected .*<hashtag_label>"):
        load_dataset("mmsd", root)


def test_mmsd_byte_order_mark_on_the_first_line(tmp_path):
    root = write_mmsd(tmp_path / "m", [b"\xef\xbb\xbf" + repr(["1", "a tweet", 0]).encode()], [["2", "b", 0, 1]], [["3", "c", 0, 1]])
    jpeg(root / "dataset_image" / "1.jpg")
    assert [r.id for r in load_dataset("mmsd", root)["train"]] == ["1"]


def test_an_mmsd_folder_mistake_gets_a_hint(tmp_path):
    mmsd = write_mmsd(tmp_path / "MMSD", [["1", "a", 0]], [["2", "b", 0, 0]], [["3", "c", 1, 1]])
    mmsd2 = write_mmsd2(tmp_path / "MMSD2", {"train": [], "valid": [], "test": []})
    with pytest.raises(DataError, match=r"MMSD: no text_json_final/ folder, where mmsd2's train.json.*\(this folder holds the other release's text/train.txt: --dataset mmsd\?\)"):
        load_dataset("mmsd2", mmsd)
    with pytest.raises(DataError, match=r"MMSD2: no text/ folder, where mmsd's train.txt.*\(this folder holds the other release's text_json_final/train.json: "
                                         r"--dataset mmsd2\?\)"):
        load_dataset("mmsd", mmsd2)
    with pytest.raises(DataError, match=r"MMSD/text: no text/ folder, where mmsd's train.txt.*\(give the folder above it: --data-dir .*MMSD\)$"):
        load_dataset("mmsd", mmsd / "text")
    with pytest.raises(DataError, match=r"no text/ folder, where mmsd's train.txt.*\(found text/train.txt in .*MMSD: give that folder\)$"):
        load_dataset("mmsd", tmp_path)
    for path in (mmsd / "text").iterdir():  # unpacked without their folder
        path.rename(mmsd / path.name)
    with pytest.raises(DataError, match=r"text: missing train.txt.*\(found train.txt in this folder itself: the text files "
                                         r"belong in its text/ folder\)$"):
        load_dataset("mmsd", mmsd)
