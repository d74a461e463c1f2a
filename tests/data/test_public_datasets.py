"""Public-dataset readers on small fixture trees written in each published format."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from PIL import Image

from clfa.cli import main
from clfa.data.public import ReaderNotes
from clfa.data.json_array import iter_json_array
from clfa.data.public.common import decode_text
from clfa.data.public.mmsd import filter_reason
from clfa.data.public.mvsa import SOURCE_FILE, SPLIT_FOLDER, aggregate, majority, split_8_1_1
from clfa.data.records import DataError
from clfa.data.registry import load_dataset
from clfa.errors import OptionError


def jpeg(path: Path, color=(200, 30, 30), size=(16, 12)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format="JPEG")
    return path


def write_lines(path: Path, lines: list[str | bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join((ln if isinstance(ln, bytes) else ln.encode("utf-8")) + b"\n" for ln in lines))
    return path


def write_mmsd(root: Path, train: list, dev: list, test: list, images: bool = True) -> Path:
    """Each split as lines (str written verbatim, lists written with repr like the release)."""
    for name, rows in (("train.txt", train), ("valid2.txt", dev), ("test2.txt", test)):
        write_lines(root / "text" / name, [r if isinstance(r, (str, bytes)) else repr(r) for r in rows])
        for row in rows:
            if images and isinstance(row, list):
                jpeg(root / "dataset_image" / f"{row[0]}.jpg")
    return root


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


@pytest.mark.parametrize("name,options,refused", [
    ("mmsd", {"labels": ["a", "b"]}, r"--labels does not apply to dataset 'mmsd': the dataset's labels are fixed"),
    ("mmsd", {"train": "x.jsonl", "splits_dir": "s"},
     r"--train-file does not apply to dataset 'mmsd': the public datasets are read from --data-dir.*; "
     r"--splits-dir does not apply to dataset 'mmsd': only MVSA"),
    ("mmsd2", {"mmsd_filter": "none"}, r"--mmsd-filter does not apply to dataset 'mmsd2': only MMSD is cleaned"),
    ("mvsa-single", {"normalize_text": True}, r"--normalize-text does not apply to dataset 'mvsa-single'"),
    ("mvsa-multiple", {"test": "t.json"}, r"--test-file does not apply to dataset 'mvsa-multiple'"),
])
def test_an_option_the_dataset_does_not_read_is_refused_before_reading(tmp_path, name, options, refused):
    """Nothing is read (the folder does not even exist): the flag would otherwise seem to work while doing nothing."""
    with pytest.raises(OptionError, match=refused):
        load_dataset(name, tmp_path / "absent", **options)


def test_the_positive_class_of_a_public_dataset_may_be_named(tmp_path):
    root = write_mmsd(tmp_path / "mmsd", [['1', 'a', 1]], [['2', 'b', 0, 0]], [['3', 'c', 1, 1]])
    assert load_dataset("mmsd", root).positive_label == "sarcastic"
    assert load_dataset("mmsd", root, positive_label="not_sarcastic").positive_label == "not_sarcastic"
    with pytest.raises(OptionError, match="--positive-label 'sarcasm' is not one of the labels"):
        load_dataset("mmsd", root, positive_label="sarcasm")
    write_premade(tmp_path / "mvsa", tmp_path / "mvsa" / "data")
    assert load_dataset("mvsa-single", tmp_path / "mvsa").positive_label is None  # three classes: weighted F1
    with pytest.raises(OptionError, match=r"--positive-label negative: this task has 3 labels \(positive, neutral, negative\); "
                                          r"a positive class is for binary tasks"):
        load_dataset("mvsa-single", tmp_path / "mvsa", positive_label="negative")


# ---------------------------------------------------------------- MMSD2.0


def write_mmsd2(root: Path, splits: dict[str, list], images: bool = True, folder: str = "text_json_final") -> Path:
    folder = root / folder
    folder.mkdir(parents=True, exist_ok=True)
    for name, items in splits.items():
        (folder / f"{name}.json").write_text(json.dumps(items, indent=2))
        for item in items:
            if images and isinstance(item, dict) and "image_id" in item:
                jpeg(root / "dataset_image" / f"{item['image_id']}.jpg")
    return root


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


# ---------------------------------------------------------------- MVSA: aggregation and split


def test_majority():
    assert majority(["positive", "positive", "negative"]) == "positive"
    assert majority(["neutral", "negative", "neutral"]) == "neutral"
    assert majority(["negative", "negative", "negative"]) == "negative"
    assert majority(["positive", "neutral", "negative"]) is None


@pytest.mark.parametrize(
    "pairs,label",
    [
        ([("positive", "positive")], "positive"),
        ([("neutral", "neutral")], "neutral"),
        ([("negative", "negative")], "negative"),
        ([("neutral", "positive")], "positive"),
        ([("positive", "neutral")], "positive"),
        ([("neutral", "negative")], "negative"),
        ([("negative", "neutral")], "negative"),
        ([("positive", "negative")], None),
        ([("negative", "positive")], None),
        # three annotators: majority per modality first, then the same combination
        ([("positive", "neutral"), ("positive", "negative"), ("neutral", "neutral")], "positive"),
        ([("negative", "positive"), ("negative", "positive"), ("neutral", "neutral")], None),
        ([("neutral", "neutral"), ("neutral", "negative"), ("positive", "neutral")], "neutral"),
        ([("positive", "positive"), ("neutral", "positive"), ("negative", "positive")], None),  # no text majority
        ([("positive", "positive"), ("positive", "neutral"), ("positive", "negative")], None),  # no image majority
    ],
)
def test_aggregate_every_branch(pairs, label):
    got, why = aggregate(pairs)
    assert got == label
    assert (why is None) == (label is not None)


def test_aggregate_reasons():
    assert "positive vs negative" in aggregate([("positive", "negative")])[1]
    assert aggregate([("positive", "positive"), ("neutral", "positive"), ("negative", "positive")])[1] == "no majority for the text label"
    assert aggregate([("positive", "positive"), ("positive", "neutral"), ("positive", "negative")])[1] == "no majority for the image label"
    both = [("positive", "positive"), ("neutral", "neutral"), ("negative", "negative")]
    assert aggregate(both)[1] == "no majority for the text and image labels"  # counted once, not under the text alone


def test_split_8_1_1_matches_published_sizes():
    # class sizes of the aggregated MVSA-Single and MVSA-Multiple
    for sizes, expected in (
        ((2683, 470, 1358), {"train": (2147, 376, 1088), "dev": (268, 47, 135), "test": (268, 47, 135)}),
        ((11318, 4408, 1298), {"train": (9056, 3528, 1040), "dev": (1131, 440, 129), "test": (1131, 440, 129)}),
    ):
        samples = [{"id": str(i), "text": "", "emotion_label": c} for i, c in enumerate(c for c, n in enumerate(sizes) for _ in range(n))]
        parts = split_8_1_1(samples)
        for split, counts in expected.items():
            assert tuple(sum(s["emotion_label"] == c for s in parts[split]) for c in range(3)) == counts
        assert sorted(s["id"] for p in parts.values() for s in p) == sorted(s["id"] for s in samples)
        shuffled = samples[:]
        random.Random(1).shuffle(shuffled)
        assert split_8_1_1(shuffled) == parts  # deterministic, whatever the input order
        assert split_8_1_1(samples, seed=7) != parts


# ---------------------------------------------------------------- MVSA: raw release


RAW_SINGLE_LABELS = ["positive,positive"] * 25 + ["neutral,negative"] * 12 + ["neutral,neutral"] * 11 + ["positive,neutral"] * 5 + ["positive,negative"] * 3


def write_mvsa_raw(root: Path, label_fields: list[str], texts: dict[int, bytes] | None = None, images: bool = True) -> Path:
    header = "ID\ttext,image" + "\ttext,image" * (label_fields[0].count("\t"))
    lines = [header] + [f"{i}\t{f}" for i, f in enumerate(label_fields, start=1)]
    write_lines(root / "labelResultAll.txt", lines)
    (root / "data").mkdir(parents=True, exist_ok=True)
    for i in range(1, len(label_fields) + 1):
        raw = (texts or {}).get(i, f"tweet number {i} RT @someone http://t.co/x".encode())
        (root / "data" / f"{i}.txt").write_bytes(raw + b"\r\n")
        if images:
            jpeg(root / "data" / f"{i}.jpg")
    return root


def test_mvsa_single_raw_aggregates_splits_and_writes(tmp_path):
    texts = {1: b"caf\xe9 \x93quoted\x94", 2: b"undefined in cp1252 \x81", 3: "naïve ✓".encode()}
    root = write_mvsa_raw(tmp_path / "single", RAW_SINGLE_LABELS, texts)
    notes = ReaderNotes()
    data = load_dataset("mvsa-single", root, notes=notes)
    assert data.labels == ["positive", "neutral", "negative"] and data.positive_label is None
    # 25+5 positive, 11 neutral, 12 negative kept; 3 positive-vs-negative discarded
    per_class = {"positive": 30, "neutral": 11, "negative": 12}
    for split, share in (("dev", lambda n: n // 10), ("test", lambda n: n // 10), ("train", lambda n: n - 2 * (n // 10))):
        counts = {label: sum(r.label == label for r in data[split]) for label in per_class}
        assert counts == {label: share(n) for label, n in per_class.items()}
    assert notes.removed == {"all": {"text and image disagree (positive vs negative)": 3}}
    assert notes.fallback_decoded == 2  # the UTF-8 text is not counted
    by_id = {r.id: r for split in data.splits.values() for r in split}
    assert by_id["1"].text == "café \u201cquoted\u201d"  # Windows-1252 curly quotes
    assert by_id["2"].text == "undefined in cp1252 \x81"  # Latin-1, the last resort
    assert by_id["3"].text == "naïve ✓"
    assert by_id["7"].text == "tweet number 7 RT @someone http://t.co/x"  # raw tweets are not normalised
    assert by_id["7"].image == root / "data" / "7.jpg"
    assert by_id["7"].source == f"{root / 'labelResultAll.txt'}:8"  # line 1 is the header
    assert "55" not in by_id  # 54..56 are the positive-vs-negative ones

    split_dir = root / SPLIT_FOLDER
    assert notes.split_dir == split_dir and notes.split_written
    written = {s: json.loads((split_dir / f"{s}.json").read_text(encoding="utf-8")) for s in ("train", "dev", "test")}
    assert [item["id"] for item in written["dev"]] == [r.id for r in data["dev"]]
    assert set(written["train"][0]) == {"id", "text", "emotion_label"}
    assert {item["id"]: item["emotion_label"] for item in written["test"]} == {r.id: ["positive", "neutral", "negative"].index(r.label) for r in data["test"]}

    # Reused on the next read: proven by an edit to the written file showing up.
    written["train"][0]["text"] = "edited in the split file"
    (split_dir / "train.json").write_text(json.dumps(written["train"]), encoding="utf-8")
    again_notes = ReaderNotes()
    again = load_dataset("mvsa-single", root, notes=again_notes)
    assert again["train"][0].text == "edited in the split file"
    assert again_notes.split_dir == split_dir and not again_notes.split_written
    assert [r.id for r in again["test"]] == [r.id for r in data["test"]]


def test_mvsa_written_split_reports_its_cleaning_and_is_made_again_when_the_raw_release_changes(tmp_path, capsys):
    root = write_mvsa_raw(tmp_path / "single", RAW_SINGLE_LABELS, {2: b"undefined in cp1252 \x81"})
    first_notes = ReaderNotes()
    first = load_dataset("mvsa-single", root, notes=first_notes)
    assert first_notes.split_written and (root / SPLIT_FOLDER / "source.json").is_file()

    # Reused: the cleaning it recorded is reported again, as if the raw release had been read.
    notes = ReaderNotes()
    load_dataset("mvsa-single", root, notes=notes)
    assert not notes.split_written and notes.split_dir == root / SPLIT_FOLDER
    assert notes.removed == first_notes.removed == {"all": {"text and image disagree (positive vs negative)": 3}}
    assert notes.fallback_decoded == first_notes.fallback_decoded == 1
    assert "changed" not in capsys.readouterr().err

    def label_of(data, sample_id):
        return next(r.label for split in data.splits.values() for r in split if r.id == sample_id)

    # A relabelled sample: the split is made and written again, with the new label.
    assert label_of(first, "1") == "positive"
    lines = (root / "labelResultAll.txt").read_text().splitlines()
    lines[1] = "1\tnegative,negative"
    (root / "labelResultAll.txt").write_text("\n".join(lines) + "\n")
    notes = ReaderNotes()
    relabelled = load_dataset("mvsa-single", root, notes=notes)
    assert notes.split_written and "was made from another labelResultAll.txt" in capsys.readouterr().err
    assert label_of(relabelled, "1") == "negative"
    assert sum(len(split) for split in relabelled.splits.values()) == sum(len(split) for split in first.splits.values())

    # An edited text, then a damaged source.json: made again each time.
    (root / "data" / "9.txt").write_bytes(b"a corrected tweet, longer than before\r\n")
    edited = load_dataset("mvsa-single", root)
    assert next(r.text for split in edited.splits.values() for r in split if r.id == "9") == "a corrected tweet, longer than before"
    assert "was made from another" in capsys.readouterr().err
    (root / SPLIT_FOLDER / "source.json").write_text("{not json")
    notes = ReaderNotes()
    load_dataset("mvsa-single", root, notes=notes)
    assert notes.split_written and json.loads((root / SPLIT_FOLDER / "source.json").read_text())["cleaning"]["fallback_decoded"] == 1
    assert "has no complete source.json" in capsys.readouterr().err


def test_mvsa_written_split_cut_short_or_from_an_earlier_version_is_made_again(tmp_path, monkeypatch, capsys):
    import clfa.data.public.mvsa as mvsa

    root = write_mvsa_raw(tmp_path / "single", RAW_SINGLE_LABELS)
    load_dataset("mvsa-single", root)
    split_dir = root / SPLIT_FOLDER

    # A relabelling whose split write fails after train.json: the old source.json no longer matches, so the next run
    # makes the split again instead of reading new train.json with old dev/test.
    lines = (root / "labelResultAll.txt").read_text().splitlines()
    lines[1:5] = [f"{i}\tnegative,negative" for i in range(1, 5)]
    (root / "labelResultAll.txt").write_text("\n".join(lines) + "\n")
    write = mvsa._atomic_json

    def failing(path, value):
        if path.name == "dev.json":
            raise OSError(28, "No space left on device")
        write(path, value)

    monkeypatch.setattr(mvsa, "_atomic_json", failing)
    cut_short = load_dataset("mvsa-single", root)
    assert "could not write the MVSA split" in capsys.readouterr().err
    monkeypatch.setattr(mvsa, "_atomic_json", write)
    notes = ReaderNotes()
    again = load_dataset("mvsa-single", root, notes=notes)
    assert notes.split_written and "making it again" in capsys.readouterr().err
    for split in ("train", "dev", "test"):
        assert [(r.id, r.label) for r in again[split]] == [(r.id, r.label) for r in cut_short[split]]

    # A split written by an earlier version (no source.json), even an incomplete one, is made again, not trusted.
    (split_dir / "source.json").unlink()
    (split_dir / "test.json").unlink()
    notes = ReaderNotes()
    load_dataset("mvsa-single", root, notes=notes)
    assert notes.split_written and (split_dir / "source.json").is_file() and (split_dir / "test.json").is_file()


@pytest.mark.parametrize("fail_on", ["dev.json", "final source.json"])
def test_mvsa_split_write_cut_short_in_a_splits_dir_is_made_again_not_trusted(tmp_path, monkeypatch, capsys, fail_on):
    import clfa.data.public.mvsa as mvsa

    root = write_mvsa_raw(tmp_path / "single", RAW_SINGLE_LABELS)
    splits_dir = tmp_path / "my_split"
    reference = load_dataset("mvsa-single", root, splits_dir=str(splits_dir))
    original_labels = (root / "labelResultAll.txt").read_text()
    write = mvsa._atomic_json

    def failing(path, value):
        if path.name == fail_on or (fail_on == "final source.json" and path.name == "source.json" and "cleaning" in value):
            raise OSError(28, "No space left on device")
        write(path, value)

    # Relabel, have the rewrite cut short, then put the old label file back (a restore from a backup): the files
    # on disk are now a mix, and must not be read as the split of the restored release.
    lines = original_labels.splitlines()
    lines[1:5] = [f"{i}\tnegative,negative" for i in range(1, 5)]
    (root / "labelResultAll.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(mvsa, "_atomic_json", failing)
    load_dataset("mvsa-single", root, splits_dir=str(splits_dir))
    monkeypatch.setattr(mvsa, "_atomic_json", write)
    (root / "labelResultAll.txt").write_text(original_labels)
    capsys.readouterr()
    notes = ReaderNotes()
    again = load_dataset("mvsa-single", root, splits_dir=str(splits_dir), notes=notes)
    assert notes.split_written and "has no complete source.json" in capsys.readouterr().err
    for split in ("train", "dev", "test"):
        assert [(r.id, r.label) for r in again[split]] == [(r.id, r.label) for r in reference[split]]

    # A first write into an empty --splits-dir cut short is made again on the next run, not an "incomplete split".
    fresh = tmp_path / "fresh_split"
    monkeypatch.setattr(mvsa, "_atomic_json", failing)
    load_dataset("mvsa-single", root, splits_dir=str(fresh))
    monkeypatch.setattr(mvsa, "_atomic_json", write)
    notes = ReaderNotes()
    load_dataset("mvsa-single", root, splits_dir=str(fresh), notes=notes)
    assert notes.split_written and json.loads((fresh / "source.json").read_text())["label_file_sha256"]


def test_mvsa_raw_split_is_deterministic_and_splits_dir_option(tmp_path, capsys):
    a = write_mvsa_raw(tmp_path / "a", RAW_SINGLE_LABELS)
    b = write_mvsa_raw(tmp_path / "b", RAW_SINGLE_LABELS)
    lines = (b / "labelResultAll.txt").read_text().splitlines()
    shuffled = lines[1:]
    random.Random(3).shuffle(shuffled)
    (b / "labelResultAll.txt").write_text("\n".join([lines[0], *shuffled]) + "\n")  # same data, other order
    first = load_dataset("mvsa-single", a)
    capsys.readouterr()
    second = load_dataset("mvsa-single", b, splits_dir=str(tmp_path / "my_split"))
    assert f"note: made the MVSA split from the raw release (8:1:1 per class, seed 42) and wrote it to {tmp_path / 'my_split'}" \
        in capsys.readouterr().err
    load_dataset("mvsa-single", b, splits_dir=str(tmp_path / "my_split"))
    assert "note: made" not in capsys.readouterr().err  # read, not made again
    for split in ("train", "dev", "test"):
        assert [r.id for r in first[split]] == [r.id for r in second[split]]
    assert (tmp_path / "my_split" / "dev.json").is_file() and not (b / SPLIT_FOLDER).exists()
    assert (a / SPLIT_FOLDER / "dev.json").read_text() == (tmp_path / "my_split" / "dev.json").read_text()


def test_mvsa_raw_split_is_written_and_noted_by_the_first_process_of_a_launch_alone(tmp_path, monkeypatch, capsys):
    """Under torchrun every process reads the dataset: each would say it made the split, and one that wrote it first
    would leave the others nothing to say."""
    root = write_mvsa_raw(tmp_path / "single", RAW_SINGLE_LABELS)
    monkeypatch.setenv("WORLD_SIZE", "2")

    def read_as(rank: str) -> tuple[dict[str, list[str]], str]:
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setenv("LOCAL_RANK", rank)
        data = load_dataset("mvsa-single", root)
        return {split: [r.id for r in records] for split, records in data.splits.items()}, capsys.readouterr().err

    second, said = read_as("1")
    assert said == "" and not (root / SPLIT_FOLDER).exists()
    first, said = read_as("0")
    assert said.startswith("note: made the MVSA split from the raw release") and (root / SPLIT_FOLDER / "train.json").is_file()
    assert second == first


def test_mvsa_multiple_raw(tmp_path):
    fields = (
        ["positive,positive\tpositive,neutral\tneutral,positive"] * 20  # text positive, image positive
        + ["negative,neutral\tnegative,neutral\tneutral,neutral"] * 10  # negative + neutral -> negative
        + ["neutral,neutral\tneutral,negative\tpositive,neutral"] * 10  # neutral
        + ["positive,negative\tpositive,negative\tneutral,negative"] * 2  # positive vs negative -> discard
        + ["positive,positive\tneutral,positive\tnegative,positive"] * 3  # no text majority -> discard
        + ["positive,positive\tpositive,neutral\tpositive,negative"]  # no image majority -> discard
    )
    root = write_mvsa_raw(tmp_path, fields)
    notes = ReaderNotes()
    data = load_dataset("mvsa-multiple", root, notes=notes)
    total = {label: sum(r.label == label for s in data.splits.values() for r in s) for label in data.labels}
    assert total == {"positive": 20, "neutral": 10, "negative": 10}
    assert [len(data[s]) for s in ("train", "dev", "test")] == [32, 4, 4]
    assert notes.removed["all"] == {
        "text and image disagree (positive vs negative)": 2,
        "no majority for the text label": 3,
        "no majority for the image label": 1,
    }
    with pytest.raises(DataError, match=r"labelResultAll.txt:1: its header names 3 annotator\(s\), mvsa-single has 1"):
        load_dataset("mvsa-single", root, splits_dir=str(tmp_path / "other"))  # wrong --dataset for this file


def test_mvsa_raw_errors_name_file_and_line(tmp_path):
    root = write_mvsa_raw(tmp_path, RAW_SINGLE_LABELS)
    lines = (root / "labelResultAll.txt").read_text().splitlines()
    lines[4] = "4\tpositive,happy"
    (root / "labelResultAll.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"labelResultAll.txt:5: malformed line: 'positive,happy'"):
        load_dataset("mvsa-single", root)
    assert not (root / SPLIT_FOLDER).exists()
    skipped = load_dataset("mvsa-single", root, skip_invalid=True)
    assert len(skipped.skipped) == 1 and sum(len(s) for s in skipped.splits.values()) == 52
    assert not (root / SPLIT_FOLDER).exists()  # a split missing skipped samples is not kept for reuse
    lines[4] = "4\tpositive,positive"
    (root / "labelResultAll.txt").write_text("\n".join(lines) + "\n")
    (root / "data" / "9.txt").unlink()
    with pytest.raises(DataError, match=r"labelResultAll.txt:10: missing text file .*9.txt"):
        load_dataset("mvsa-single", root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no pre-made splits"):
        load_dataset("mvsa-single", tmp_path / "empty")
    with pytest.raises(DataError, match="nowhere: no such folder"):
        load_dataset("mvsa-single", tmp_path / "nowhere")


def test_mvsa_data_dir_one_folder_too_low_names_the_release_above(tmp_path):
    root = write_mvsa_raw(tmp_path / "MVSA_Single", RAW_SINGLE_LABELS[:3])
    with pytest.raises(DataError, match=r"MVSA_Single/data/labelResultAll.txt: no pre-made splits .*\(labelResultAll.txt \+ data/\); "
                                         r"found one in .*MVSA_Single: give that folder$"):
        load_dataset("mvsa-single", root / "data")


def test_mvsa_data_dir_given_as_the_working_folder_one_too_low_names_the_release_above(tmp_path, monkeypatch):
    """`--data-dir .` from inside the release's data/: the folder above "." read, by its name alone, as "." itself."""
    root = write_mvsa_raw(tmp_path / "MVSA_Single", RAW_SINGLE_LABELS[:3])
    monkeypatch.chdir(root / "data")
    with pytest.raises(DataError, match=r"; found one in .*MVSA_Single: give that folder$"):
        load_dataset("mvsa-single", Path("."))


def test_mvsa_raw_unreadable_text_names_file_and_line(tmp_path, monkeypatch):
    root = write_mvsa_raw(tmp_path, RAW_SINGLE_LABELS)
    locked = root / "data" / "9.txt"
    read_bytes = Path.read_bytes

    def refuse_locked(path):  # as a file without read permission does (tests may run as root, who reads anything)
        if path == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", refuse_locked)
    with pytest.raises(DataError, match=r"labelResultAll.txt:10: cannot read text file .*9.txt: Permission denied"):
        load_dataset("mvsa-single", root)
    skipped = load_dataset("mvsa-single", root, skip_invalid=True)
    assert len(skipped.skipped) == 1 and sum(len(s) for s in skipped.splits.values()) == 52


def test_mvsa_raw_missing_image(tmp_path):
    root = write_mvsa_raw(tmp_path, RAW_SINGLE_LABELS)
    (root / "data" / "9.jpg").unlink()
    with pytest.raises(DataError, match=r"labelResultAll.txt:10: missing image file"):
        load_dataset("mvsa-single", root)
    assert sum(len(s) for s in load_dataset("mvsa-single", root, check_images=False).splits.values()) == 53


# ---------------------------------------------------------------- MVSA: pre-made splits


def write_premade(folder: Path, image_root: Path | None, n: int = 6) -> dict[str, list]:
    folder.mkdir(parents=True, exist_ok=True)
    splits = {}
    for s, split in enumerate(("train", "dev", "test")):
        items = [{"id": str(100 * s + i), "text": f"{split} text {i} \u00e9", "emotion_label": i % 3} for i in range(n)]
        (folder / f"{split}.json").write_text(json.dumps(items, ensure_ascii=False, indent=1), encoding="utf-8")
        splits[split] = items
        for item in items:
            if image_root is not None:
                jpeg(image_root / f"{item['id']}.jpg")
    return splits


def test_mvsa_premade_splits_in_data_dir(tmp_path):
    items = write_premade(tmp_path, tmp_path / "data")
    (tmp_path / "data" / "1.txt").write_text("the raw text is not used")
    data = load_dataset("mvsa-multiple", tmp_path)
    assert [(r.id, r.text, r.label) for r in data["train"][:3]] == [
        ("0", "train text 0 é", "positive"),
        ("1", "train text 1 é", "neutral"),
        ("2", "train text 2 é", "negative"),
    ]
    assert data["dev"][0].image == tmp_path / "data" / "100.jpg"
    assert [len(data[s]) for s in ("train", "dev", "test")] == [len(v) for v in items.values()]
    assert not (tmp_path / SPLIT_FOLDER).exists()


def test_mvsa_premade_images_directly_in_data_dir(tmp_path):
    write_premade(tmp_path, tmp_path)
    data = load_dataset("mvsa-single", tmp_path)
    assert data["test"][0].image == tmp_path / "200.jpg"


def test_mvsa_premade_splits_dir_option(tmp_path):
    write_premade(tmp_path / "splits", tmp_path / "release" / "data")
    notes = ReaderNotes()
    data = load_dataset("mvsa-single", tmp_path / "release", splits_dir=str(tmp_path / "splits"), notes=notes)
    assert len(data["train"]) == 6 and notes.split_dir == tmp_path / "splits" and not notes.split_written


def test_mvsa_premade_bad_items(tmp_path):
    write_premade(tmp_path, tmp_path / "data")
    (tmp_path / "dev.json").write_text('[\n {"id": "101", "text": "ok", "emotion_label": 0},\n {"id": "901", "text": "bad", "emotion_label": 3}\n]')
    with pytest.raises(DataError, match=r"dev.json:3, item 2: malformed item: emotion_label 3 is not 0, 1 or 2"):
        load_dataset("mvsa-single", tmp_path)
    (tmp_path / "test.json").unlink()
    (tmp_path / "valid.json").write_text("[]")
    with pytest.raises(DataError, match=r"incomplete split: train.json, dev.json but no test.json \(a split is train.json, "
                                         r"dev.json and test.json; also here: valid.json\)$"):
        load_dataset("mvsa-single", tmp_path)


def test_mvsa_premade_images_in_dataset_image(tmp_path):
    write_premade(tmp_path / "10-flod-1", tmp_path / "dataset_image")  # the layout of the widely used pre-made splits
    data = load_dataset("mvsa-single", tmp_path, splits_dir=str(tmp_path / "10-flod-1"))
    assert data["test"][0].image == tmp_path / "dataset_image" / "200.jpg"


def test_a_written_mvsa_split_copied_without_its_release_is_read_only_as_its_own_dataset(tmp_path, capsys):
    root = write_mvsa_raw(tmp_path / "single", RAW_SINGLE_LABELS)
    single = load_dataset("mvsa-single", root)
    copy = tmp_path / "copy"
    shutil.copytree(root / SPLIT_FOLDER, copy)
    (copy / "data").symlink_to(root / "data")
    assert [r.id for r in load_dataset("mvsa-single", copy, splits_dir=str(copy))["test"]] == [r.id for r in single["test"]]
    with pytest.raises(DataError, match=r"copy: this split was made from mvsa-single \(source.json records 1 annotator\(s\)\), "
                                         r"not mvsa-multiple: give --dataset mvsa-single"):
        load_dataset("mvsa-multiple", copy, splits_dir=str(copy))
    # Beside another raw release too: the split given is left as it is, not overwritten with the other dataset's.
    multiple = write_mvsa_raw(tmp_path / "multiple", ["positive,positive\tpositive,positive\tneutral,positive"] * 20)
    written = {path.name: path.read_bytes() for path in copy.glob("*.json")}
    with pytest.raises(DataError, match=r"copy: this split was made from mvsa-single .*not mvsa-multiple"):
        load_dataset("mvsa-multiple", multiple, splits_dir=str(copy))
    assert {path.name: path.read_bytes() for path in copy.glob("*.json")} == written
    # The split clfa keeps beside a release is its own, made again when the release there changed datasets.
    shutil.copytree(copy, multiple / SPLIT_FOLDER, ignore=shutil.ignore_patterns("data"))
    capsys.readouterr()
    load_dataset("mvsa-multiple", multiple)
    assert f"the MVSA split in {multiple / SPLIT_FOLDER} was made from mvsa-single, not mvsa-multiple; making it again" \
        in capsys.readouterr().err
    assert json.loads((multiple / SPLIT_FOLDER / SOURCE_FILE).read_text())["annotators"] == 3


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


# ---------------------------------------------------------------- text normalisation


@pytest.mark.parametrize(
    "raw,normalized",
    [
        ("thanks <user> for <num> hours # fun  emoji_15 emoji_15 <url>", "thanks @user for 0 hours #fun emoji emoji http"),
        ("# # funnyquotes #  4 is the best", "# #funnyquotes #4 is the best"),
        ("link:<url>… and <URL>", "link: http … and http"),
        ("<num>pts by x<User> in got<num>", "0 pts by x @user in got 0"),
        ("#", "#"),
        ("emoji_12x stays, so does myemoji_3", "emoji_12x stays, so does myemoji_3"),
        ("  spaces \t and\nnewlines  ", "spaces and newlines"),
        ("nothing to do", "nothing to do"),
        ("#\u00a0fun and #\nwin", "#fun and #win"),
    ],
)
def test_normalize_tweet(raw, normalized):
    from clfa.data.text_normalization import normalize_tweet

    assert normalize_tweet(raw) == normalized
    assert normalize_tweet(normalized) == normalized  # idempotent: a model trained on rewritten texts rewrites again


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


def test_mvsa_first_line_is_skipped_only_when_it_is_the_header(tmp_path):
    root = write_mvsa_raw(tmp_path / "s", ["positive,positive"] * 3)
    lines = (root / "labelResultAll.txt").read_text().splitlines()
    (root / "labelResultAll.txt").write_text("\n".join(["x1\tpositive,positive"] + lines[1:]) + "\n")
    with pytest.raises(DataError, match=r"labelResultAll.txt:1: malformed line"):
        load_dataset("mvsa-single", root)
    (root / "labelResultAll.txt").write_text("\n".join(lines[:1] + ["\u00b2\tpositive,positive"] + lines[2:]) + "\n")
    with pytest.raises(DataError, match=r"labelResultAll.txt:2: malformed line"):
        load_dataset("mvsa-single", root)


def test_the_other_mvsa_or_a_folder_too_high_is_named(tmp_path):
    multiple = write_mvsa_raw(tmp_path / "MVSA", ["positive,positive\tpositive,positive\tneutral,positive"] * 12)
    with pytest.raises(DataError, match=r"labelResultAll.txt:1: its header names 3 annotator\(s\), mvsa-single has 1: "
                                         r"give --dataset mvsa-multiple"):
        load_dataset("mvsa-single", multiple, skip_invalid=True)
    with pytest.raises(DataError, match=r"no raw release \(labelResultAll.txt \+ data/\); found one in .*MVSA: give that folder"):
        load_dataset("mvsa-multiple", tmp_path)
    # Beside the other MVSA, sorted first: the one of the dataset asked for is named, and without it, the other as such.
    single = write_mvsa_raw(tmp_path / "A-single", RAW_SINGLE_LABELS)
    with pytest.raises(DataError, match=r"found one in .*/MVSA: give that folder"):
        load_dataset("mvsa-multiple", tmp_path)
    with pytest.raises(DataError, match=r"found one in .*/A-single: give that folder"):
        load_dataset("mvsa-single", tmp_path)
    shutil.rmtree(single)
    with pytest.raises(DataError, match=r"data/\); found only mvsa-multiple's in .*/MVSA$"):
        load_dataset("mvsa-single", tmp_path)
    label_file = multiple / "labelResultAll.txt"
    label_file.write_text("\n".join(label_file.read_text().splitlines()[1:]))  # no header: each line says it
    with pytest.raises(DataError, match=r"labelResultAll.txt:1: malformed line: expected ID<TAB>text,image \(1 annotator\(s\)\), "
                                         r"got 4 field\(s\) \(the layout of mvsa-multiple: --dataset mvsa-multiple\?\)"):
        load_dataset("mvsa-single", multiple)


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
