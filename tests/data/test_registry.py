"""The dataset registry (clfa.data.registry): load_dataset's checks of the settings given, the custom format's split
files found or named, the labels and positive class of a task, and what reading reports."""

import json
import re

import pytest
from PIL import Image

from clfa.data.custom import read_custom
from clfa.data.records import DataError
from clfa.data.registry import load_dataset
from clfa.errors import OptionError
from public.releases import write_mmsd, write_premade
from test_custom import GOOD, folder, write_jsonl  # noqa: F401 (folder: the fixture of its records and images)


def test_one_file_as_two_splits_and_an_empty_train_file_are_named(folder):
    from clfa.errors import OptionError

    train = write_jsonl(folder, json.dumps(GOOD | {"id": "3"}))
    with pytest.raises(OptionError, match=r"data.jsonl is the train file and the dev file: each split needs its own"):
        load_dataset("jsonl", None, train=str(train), dev=str(folder / "." / "data.jsonl"))
    train.write_text("\n")
    with pytest.raises(DataError, match=r"data.jsonl: no records: the train file is empty"):
        load_dataset("jsonl", None, train=str(train))
    # A dev or test file of no record is refused as well: taken as a split of none, it read as one not given.
    write_jsonl(folder, json.dumps(GOOD | {"id": "3", "label": "neg"}))
    for text in ("", "\ufeff\r\n", "[]"):
        (folder / "dev.json").write_text(text)
        with pytest.raises(DataError, match=r"dev.json: no records: the dev file is empty"):
            load_dataset("jsonl", None, train=str(train), dev=str(folder / "dev.json"))
    (folder / "test.csv").write_text("id,text,image,label\r\n")
    with pytest.raises(DataError, match=r"test.csv: no records: the test file is empty"):
        load_dataset("csv", None, labels=["neg", "pos"], test=str(folder / "test.csv"), splits=["test"], skip_invalid=True)


def test_dataset_labels_come_from_train_and_bind_dev_and_test(folder):
    (folder / "train.jsonl").write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD | {"id": "2", "label": "neg"}) + "\n")
    (folder / "dev.jsonl").write_text(json.dumps(GOOD | {"label": "meh"}) + "\n")
    with pytest.raises(DataError, match="dev.jsonl:1: unknown label 'meh'"):
        load_dataset("jsonl", folder)
    data = load_dataset("jsonl", folder, skip_invalid=True)
    assert data.labels == ["neg", "pos"] and data.positive_label == "pos"
    assert data["dev"] == [] and len(data.skipped) == 1


def test_a_folder_without_a_train_file_names_the_files_it_holds(folder):
    """"no train file (train.jsonl/.json/.csv) and no --labels given" sent a user whose file was training.jsonl to
    --labels, with which clfa train still has nothing to train on."""
    for name in ("training.jsonl", "dev.jsonl"):
        (folder / name).write_text(json.dumps(GOOD) + "\n")
    with pytest.raises(DataError, match=re.escape(f"{folder}: no train file (train.jsonl/.json/.csv); the folder holds dev.jsonl, "
                                                  "training.jsonl: name the train file with --train-file (or, to read the other "
                                                  "splits without one, give --labels)") + "$"):
        load_dataset("jsonl", folder)
    assert load_dataset("jsonl", folder, train=str(folder / "training.jsonl")).labels == ["pos"]
    with pytest.raises(DataError, match=r"img: no train file \(train.jsonl/.json/.csv\); the folder holds no .jsonl, .json, .csv file"):
        load_dataset("jsonl", folder / "img")


@pytest.mark.parametrize("labels", [["neg", "pos", "pos"], ["neg", "pos", ""]])
def test_a_label_list_names_each_label_once(folder, labels):
    from clfa.errors import OptionError

    with pytest.raises(OptionError, match="each label once, none empty"):
        load_dataset("jsonl", folder, labels=labels)


def test_a_folder_without_data_files_or_no_folder_at_all_is_an_error(folder, tmp_path):
    with pytest.raises(DataError, match=r"nowhere: no such folder"):
        load_dataset("jsonl", tmp_path / "nowhere", labels=["neg", "pos"])
    with pytest.raises(DataError, match=r"img: no data file: found none of train.jsonl/.json/.csv; "
                                        r"dev.jsonl/.json/.csv \(or valid, validation, val\); test.jsonl/.json/.csv$"):
        load_dataset("jsonl", folder / "img", labels=["neg", "pos"])
    with pytest.raises(DataError, match=r"img: no data file: found none of test.jsonl/.json/.csv$"):
        load_dataset("jsonl", folder / "img", labels=["neg", "pos"], splits=["test"])
    (folder / "test.jsonl").write_text(json.dumps(GOOD) + "\n")
    # Files named one by one need no data folder: a wrong --data-dir matters only where a file is looked up in it.
    data = load_dataset("jsonl", tmp_path / "nowhere", labels=["neg", "pos"], test=str(folder / "test.jsonl"), splits=["test"])
    assert [r.id for r in data["test"]] == ["1"]
    with pytest.raises(DataError, match=r"ok.png: a file, not a folder"):
        load_dataset("csv", folder / "img" / "ok.png")


def test_two_files_for_one_split_are_named_not_one_picked(folder):
    lines = json.dumps(GOOD) + "\n" + json.dumps(GOOD | {"id": "2", "label": "neg"}) + "\n"
    for name in ("train.jsonl", "train.json", "test.jsonl", "valid.jsonl", "dev.csv"):
        (folder / name).write_text(lines if name != "dev.csv" else "id,text,image,label\n")
    with pytest.raises(DataError, match=r"more than one train file \(train.jsonl, train.json\); name the one to read with --train-file"):
        load_dataset("jsonl", folder)
    with pytest.raises(DataError, match=r"more than one dev file \(dev.csv, valid.jsonl\); name the one to read with --dev-file"):
        load_dataset("jsonl", folder, train=str(folder / "train.jsonl"))
    data = load_dataset("jsonl", folder, train=str(folder / "train.jsonl"), dev=str(folder / "valid.jsonl"))
    assert [len(data[split]) for split in ("train", "dev", "test")] == [2, 2, 2]
    # Names are compared without case, and two names of one file are one file.
    (folder / "test.jsonl").rename(folder / "Test.JSONL")
    assert load_dataset("jsonl", folder, train=str(folder / "train.jsonl"), dev=str(folder / "valid.jsonl")).files["test"] \
        == str(folder.resolve() / "Test.JSONL")
    (folder / "train.json").unlink()
    (folder / "dev.csv").unlink()
    (folder / "dev.jsonl").symlink_to("valid.jsonl")
    assert [len(load_dataset("jsonl", folder)[split]) for split in ("train", "dev", "test")] == [2, 2, 2]


def test_without_a_data_folder_only_the_files_named_are_read(folder, monkeypatch):
    from clfa.errors import OptionError

    lines = json.dumps(GOOD) + "\n" + json.dumps(GOOD | {"id": "2", "label": "neg"}) + "\n"
    for name in ("train.jsonl", "dev.jsonl", "test.jsonl"):
        (folder / name).write_text(lines)
    monkeypatch.chdir(folder)  # the working folder holds dev and test files no one named
    data = load_dataset("jsonl", train="train.jsonl")
    assert list(data.splits) == ["train"] and data.data_dir is None
    assert data.files == {"train": str(folder.resolve() / "train.jsonl")}
    with pytest.raises(OptionError, match=r"give --data-dir, or name the files with --train-file/--dev-file/--test-file"):
        load_dataset("jsonl")
    with pytest.raises(OptionError, match=r"dataset 'mmsd' is read from its folder, laid out as published: give --data-dir"):
        load_dataset("mmsd")


def test_a_train_file_without_labels_is_named_not_the_dev_file_after_it(folder):
    (folder / "train.csv").write_text("id,text,image,Label\n1,so sunny,img/ok.png,pos\n")
    (folder / "dev.csv").write_text("id,text,image,label\n2,so sunny,img/ok.png,pos\n")
    with pytest.raises(DataError, match=r"train.csv:1: CSV header: 'Label' is not 'label' \(field names are lower case\)"):
        load_dataset("csv", folder)
    (folder / "train.csv").write_text("id,text,image,label\n1,so sunny,img/ok.png,\n")
    with pytest.raises(DataError, match=r"train.csv: no record has a label, so there are no labels to learn"):
        load_dataset("csv", folder)


def test_a_positive_label_that_is_not_a_label_is_refused_when_reading(folder):
    from clfa.errors import OptionError

    (folder / "train.jsonl").write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD | {"id": "2", "label": "neg"}) + "\n")
    with pytest.raises(OptionError, match=r"--positive-label 'nope' is not one of the labels \(neg, pos\)"):
        load_dataset("jsonl", folder, positive_label="nope")
    with pytest.raises(DataError, match="dataset 'jsonl' has no 'test' split \\(it has train\\)"):
        load_dataset("jsonl", folder)["test"]


def test_options_of_the_public_datasets_are_refused_for_a_custom_file(folder):
    from clfa.errors import OptionError

    with pytest.raises(OptionError, match=r"--image-dir does not apply to dataset 'jsonl': each record names its own image"):
        load_dataset("jsonl", folder, image_dir=str(folder / "img"))
    with pytest.raises(OptionError, match=r"--mmsd-filter does not apply to dataset 'csv'"):
        load_dataset("csv", folder, mmsd_filter="token")
    # Off is the same as not given.
    (folder / "train.jsonl").write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD | {"id": "2", "label": "neg"}) + "\n")
    assert load_dataset("jsonl", folder, normalize_text=False, image_dir=None).labels == ["neg", "pos"]


def test_skip_invalid_drops_unlabelled_records_and_evaluation_reads_only_its_splits(folder):
    (folder / "train.jsonl").write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD | {"id": "2", "label": "neg"}) + "\n"
                                        + json.dumps(GOOD | {"id": "3", "label": None}) + "\n")
    (folder / "test.jsonl").write_text(json.dumps(GOOD | {"id": "9"}) + "\n")
    data = load_dataset("jsonl", folder)
    data.drop_unlabelled(list(data.splits), "training")
    assert [r.id for r in data["train"]] == ["1", "2"] and len(data.skipped) == 1
    assert data.skipped.skipped[0].line == 3
    assert data.report().splitlines()[0] == "skipped 1 invalid record(s): 1 x missing label"
    # A broken train file does not stop evaluating test once the labels are known.
    (folder / "train.jsonl").write_text("not json\n")
    only_test = load_dataset("jsonl", folder, labels=["neg", "pos"], splits=["test"])
    assert list(only_test.splits) == ["test"] and [r.id for r in only_test["test"]] == ["9"]
    with pytest.raises(DataError, match="train.jsonl:1: malformed line"):
        load_dataset("jsonl", folder, splits=["test"])  # without labels, they come from the train file


def test_a_sample_in_two_splits_is_reported_with_both_places(folder):
    Image.new("RGB", (8, 8), "blue").save(folder / "img" / "other.png")
    train = [GOOD, GOOD | {"id": "2", "text": "so rainy", "label": "neg"}]
    # The same text and image under another id, its spaces written otherwise and its image path spelt otherwise.
    dev = [GOOD | {"id": "d1", "text": " so\n sunny ", "image": "./img/ok.png"}, GOOD | {"id": "d2", "image": "img/other.png"},
           GOOD | {"id": "d3", "text": "so sunny!"}]
    test = [GOOD | {"id": "t1"}, GOOD | {"id": "t2", "text": "so rainy", "label": "neg"}]
    for split, records in (("train", train), ("dev", dev), ("test", test)):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    data = load_dataset("jsonl", folder)
    shared = {pair: [(record.id, other.id) for record, other in pairs] for pair, pairs in data.shared_samples().items()}
    assert shared == {("dev", "train"): [("d1", "1")], ("test", "train"): [("t1", "1"), ("t2", "2")], ("test", "dev"): [("t1", "d1")]}
    assert data.report().splitlines() == [
        f"dev shares 1 sample(s) with train (the same text and image; first {folder / 'dev.jsonl'}:1 and "
        f"{folder / 'train.jsonl'}:1): its scores are partly on train samples",
        f"test shares 2 sample(s) with train (the same text and image; first {folder / 'test.jsonl'}:1 and "
        f"{folder / 'train.jsonl'}:1): its scores are partly on train samples",
        f"test shares 1 sample(s) with dev (the same text and image; first {folder / 'test.jsonl'}:1 and "
        f"{folder / 'dev.jsonl'}:1): its scores are partly on dev samples",
    ]
    assert load_dataset("jsonl", folder, splits=["test"], labels=["neg", "pos"]).report() == ""


def test_skipping_decodes_every_image_and_drops_one_whose_pixels_are_broken(folder):
    lines = [json.dumps(GOOD), json.dumps(GOOD | {"id": "2", "image": "img/broken_pixels.png", "label": "neg"})]
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n")
    # The cheap check reads the chunks, whose checksums are right; decoding the image is what fails.
    assert [r.id for r in read_custom(folder / "train.jsonl")] == ["1", "2"]
    with pytest.raises(OSError):
        Image.open(folder / "img" / "broken_pixels.png").load()
    data = load_dataset("jsonl", folder, skip_invalid=True)
    assert [r.id for r in data["train"]] == ["1"]
    assert data.skipped.skipped[0].line == 2 and "unreadable image file" in data.skipped.summary()
    assert "broken_pixels.png" in data.skipped.summary()


def test_labels_spelled_two_ways_in_the_train_file_are_refused_not_made_two_classes(folder):
    rows = [GOOD | {"label": "sarcastic"}, GOOD | {"id": "2", "label": "not_sarcastic"}, GOOD | {"id": "3", "label": "Not Sarcastic"}]
    (folder / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(DataError, match=r"train.jsonl: labels 'not_sarcastic' \(.*train.jsonl:2\) and 'Not Sarcastic' "
                                        r"\(.*train.jsonl:3\) differ only in case, spaces, '_' or '-'"):
        load_dataset("jsonl", folder)
    # Named with --labels, each spelling is a class, as asked; labels that merely look alike are not refused.
    assert load_dataset("jsonl", folder, labels=["Not Sarcastic", "not_sarcastic", "sarcastic"]).labels[0] == "Not Sarcastic"
    (folder / "train.jsonl").write_text(json.dumps(GOOD | {"label": "pos"}) + "\n" + json.dumps(GOOD | {"id": "2", "label": "post"}) + "\n")
    assert load_dataset("jsonl", folder).labels == ["pos", "post"]


def test_signed_numeric_labels_are_not_taken_for_one_label_spelled_two_ways(folder):
    rows = [GOOD | {"id": str(i), "label": label} for i, label in enumerate([-1, 0, 1])]
    (folder / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert load_dataset("jsonl", folder).labels == ["-1", "0", "1"]
    rows = [GOOD | {"label": "not-sarcastic"}, GOOD | {"id": "2", "label": "Not Sarcastic"}]
    (folder / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(DataError, match="differ only in case"):
        load_dataset("jsonl", folder)


def test_settings_given_from_python_in_another_shape_or_name_are_named_not_misread(folder):
    from clfa.errors import OptionError

    (folder / "train.jsonl").write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD | {"id": "2", "label": "neg"}) + "\n")
    # One string of labels: "label in labels" would take any part of it ("po") for a label.
    (folder / "part.jsonl").write_text(json.dumps(GOOD | {"label": "po"}) + "\n")
    with pytest.raises(OptionError, match=r"^labels='neg,pos': a list of label names, not one string$"):
        read_custom(folder / "part.jsonl", labels="neg,pos")
    with pytest.raises(OptionError, match=r"^labels='neg,pos': a list of names, not one string$"):
        load_dataset("jsonl", folder, labels="neg,pos")
    with pytest.raises(OptionError, match=r"^splits='train': a list of names, not one string$"):
        load_dataset("jsonl", folder, splits="train")
    with pytest.raises(OptionError, match=r"^splits: 'valid' is no split; choose from train, dev, test$"):
        load_dataset("jsonl", folder, splits=["valid"])
    # The files are train=, dev=, test=: a train_file is no setting, not "--train-file does not apply".
    with pytest.raises(OptionError, match=r"^unknown data option\(s\) train_file; the settings are .*: train_file \(a split's "
                                          r"file is train=\)$"):
        load_dataset("jsonl", folder, train_file=str(folder / "train.jsonl"))
    assert load_dataset("jsonl", None, train=str(folder / "train.jsonl"), splits=["train"]).sizes() == "records: train 2"
    # Labels 0 and 1 are read from the records as "0" and "1": numbers here would fail deep in the reader.
    with pytest.raises(OptionError, match=r"^labels=\[0, 1\]: label names are text, as the records' labels are read \('0', "
                                          r"not 0\)$"):
        load_dataset("jsonl", folder, labels=[0, 1])
    with pytest.raises(OptionError, match=r"^labels=\['neg', None\]: label names are text"):
        read_custom(folder / "train.jsonl", labels=["neg", None])
    # A set has no order, and the labels' order is the classes' ids: it would differ from one process to another.
    with pytest.raises(OptionError, match=r"^labels=\{.*\}: a list of label names in class-id order, not a set$"):
        load_dataset("jsonl", folder, labels={"neg", "pos"})
    assert load_dataset("jsonl", folder, labels=("neg", "pos")).labels == ["neg", "pos"]


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
