"""The MVSA readers (clfa.data.public.mvsa): label aggregation, the 8:1:1 split, the raw release and pre-made splits."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from clfa.data.public import ReaderNotes
from clfa.data.public.mvsa import SOURCE_FILE, SPLIT_FOLDER, aggregate, majority, split_8_1_1
from clfa.data.records import DataError
from clfa.data.registry import load_dataset

from .releases import jpeg, write_lines, write_premade


# ---------------------------------------------------------------- aggregation and split


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


# ---------------------------------------------------------------- raw release


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


# ---------------------------------------------------------------- pre-made splits


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


# ---------------------------------------------------------------- edge cases of the published formats


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
