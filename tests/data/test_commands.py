"""``clfa data stats`` / ``clfa data check`` run through argparse exactly as the CLI wires them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from PIL import Image

from clfa.data.commands import add_data_parser, inspect_image, split_counts


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="clfa")
    add_data_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def jpeg(path: Path, size=(32, 24)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 120, 200)).save(path, format="JPEG", quality=90)
    return path


def mmsd_tree(root: Path, images: bool) -> Path:
    rows = {
        "train.txt": [['1', 'great , another monday', 1], ['2', 'lovely # sarcasm', 1], ['3', 'nice weather', 0], ['4', 'a cat', 0], ['5', 'bad joke', 0]],
        "valid2.txt": [['6', 'so fun', 1, 1], ['7', 'plain', 0, 0]],
        "test2.txt": [['8', 'sure , whatever', 1, 0], ['9', 'i am ironic', 1, 1]],
    }
    (root / "text").mkdir(parents=True)
    for name, lines in rows.items():
        (root / "text" / name).write_text("".join(repr(line) + "\n" for line in lines))
        for line in lines if images else []:
            jpeg(root / "dataset_image" / f"{line[0]}.jpg")
    return root


def test_stats_json_exact_shape_without_images(tmp_path, capsys):
    root = mmsd_tree(tmp_path, images=False)
    assert run(["data", "stats", "--dataset", "mmsd", "--data-dir", str(root), "--json"]) == 0
    out, err = capsys.readouterr()
    assert out.count("\n") == 1
    assert json.loads(out) == {
        "train": {"total": 3, "labels": {"not_sarcastic": 2, "sarcastic": 1}},
        "dev": {"total": 2, "labels": {"not_sarcastic": 1, "sarcastic": 1}},
        "test": {"total": 1, "labels": {"not_sarcastic": 1, "sarcastic": 0}},
    }
    assert "missing images: train 3, dev 2, test 1" in err
    assert "removed by cleaning: train 2, dev 0, test 1" in err


def test_stats_counts_an_image_url_as_a_missing_image(tmp_path, capsys):
    rows = [{"id": str(i), "text": "t", "image": image, "label": "p"} for i, image in enumerate(["a.png", "https://x.org/b.png"])]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert run(["data", "stats", "--dataset", "jsonl", "--data-dir", str(tmp_path), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["train"]["total"] == 2 and "missing images: train 2" in err


def test_stats_filter_option_and_table(tmp_path, capsys):
    root = mmsd_tree(tmp_path, images=True)
    (root / "dataset_image" / "1.jpg").unlink()
    assert run(["data", "stats", "--dataset", "mmsd", "--data-dir", str(root), "--mmsd-filter", "none", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["train"]["total"] == 5
    assert run(["data", "stats", "--dataset", "mmsd", "--data-dir", str(root)]) == 0
    out = capsys.readouterr().out
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]] for line in out.splitlines() if line.count("│") >= 6}
    header = " ".join(" ".join(line.split("┃")).strip() for line in out.splitlines() if "┃" in line)
    for column in ("split", "samples", "not_sarcastic", "sarcastic", "missing images", "removed by"):
        assert column in header
    assert rows["train"] == ["3", "2", "1", "1", "2"]
    assert rows["total"] == ["6", "4", "2", "1", "3"]
    assert "cleaning removed 2 from train: 1 x filter: token 'sarcasm', 1 x filter: token 'joke'" in out and "token 'joke'" in out and "token 'ironic'" in out


def test_stats_mvsa_reports_split_and_decoding(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    labels = ["positive,positive", "neutral,neutral", "negative,neutral", "positive,negative"] * 10
    (tmp_path / "labelResultAll.txt").write_text("ID\ttext,image\n" + "".join(f"{i}\t{l}\n" for i, l in enumerate(labels, 1)))
    for i in range(1, len(labels) + 1):
        (tmp_path / "data" / f"{i}.txt").write_bytes(b"\x93smart quotes\x94" if i == 1 else b"plain")
    assert run(["data", "stats", "--dataset", "mvsa-single", "--data-dir", str(tmp_path), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {
        "train": {"total": 24, "labels": {"positive": 8, "neutral": 8, "negative": 8}},
        "dev": {"total": 3, "labels": {"positive": 1, "neutral": 1, "negative": 1}},
        "test": {"total": 3, "labels": {"positive": 1, "neutral": 1, "negative": 1}},
    }
    assert "cleaning removed 10 before splitting: 10 x text and image disagree" in err
    assert "removed by cleaning: train 0, dev 0, test 0, before splitting 10" in err
    assert "1 text(s) were not valid UTF-8" in err
    assert f"split written to {tmp_path / 'clfa_splits'}" in err


def test_stats_bad_input_exits_nonzero(tmp_path, capsys):
    assert run(["data", "stats", "--dataset", "mmsd", "--data-dir", str(tmp_path)]) == 2
    assert "no text/ folder, where mmsd's train.txt" in capsys.readouterr().err
    assert run(["data", "stats", "--dataset", "nope", "--data-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("clfa: error: unknown dataset 'nope'")
    with pytest.raises(SystemExit) as exit_:
        run(["data"])  # a sub-command is required
    assert exit_.value.code == 2 and "the following arguments are required" in capsys.readouterr().err


def test_check_clean_dataset_passes(tmp_path, capsys):
    root = mmsd_tree(tmp_path, images=True)
    assert run(["data", "check", "--dataset", "mmsd", "--data-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert "checked 6 records (train 3, dev 2, test 1) and 6 image files" in out and "no problems found" in out
    # The lines the cleaning dropped are not problems, but the count above is not the files' without them.
    assert "cleaning removed 2 from train: 1 x filter: token 'sarcasm', 1 x filter: token 'joke'" in out
    assert "cleaning removed 1 from test: 1 x filter: token 'ironic'" in out


def test_check_finds_every_kind_of_problem(tmp_path, capsys):
    root = mmsd_tree(tmp_path, images=True)
    images = root / "dataset_image"
    good = (images / "1.jpg").read_bytes()
    (images / "1.jpg").write_bytes(good[: len(good) // 2])  # truncated JPEG
    (images / "3.jpg").write_bytes(b"")  # zero bytes
    (images / "4.jpg").write_text("this is text, not a picture")
    jpeg(images / "6.jpg", size=(4, 300))  # absurdly thin
    (images / "7.jpg").unlink()
    with (root / "text" / "test2.txt").open("a") as f:
        f.write("['10', '   ', 0, 0]\n['11', 'broken line'\n")
    jpeg(images / "10.jpg")
    assert run(["data", "check", "--dataset", "mmsd", "--data-dir", str(root), "--workers", "3"]) == 1
    out = capsys.readouterr().out
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in out.splitlines() if line.count("│") == 3}
    assert rows == {
        "truncated or corrupt image": "1",
        "empty image file": "1",
        "not an image": "1",
        "absurd dimensions": "1",
        "missing image": "1",
        "empty text": "1",
        "invalid record": "1",
    }
    # The invalid record is one of the file's lines, and counted with them.
    assert "checked 8 records (train 3, dev 2, test 2, and 1 invalid) and 7 image files" in out
    # Each image is named with the record, file and line that use it.
    assert f"truncated or corrupt image: first 1 of 1\n  {root / 'text' / 'train.txt'}:1: {images / '1.jpg'}: " in out
    assert f"{root / 'text' / 'valid2.txt'}:1: {images / '6.jpg'} is 4x300" in out
    assert f"{root / 'text' / 'valid2.txt'}:2: {images / '7.jpg'} does not exist" in out
    assert f"{root / 'text' / 'test2.txt'}:4: malformed line" in out
    assert f"{root / 'text' / 'test2.txt'}:3: record '10' has an empty text" in out


def test_check_show_limits_listing(tmp_path, capsys):
    root = mmsd_tree(tmp_path, images=False)
    assert run(["data", "check", "--dataset", "mmsd", "--data-dir", str(root), "--show", "2"]) == 1
    out = capsys.readouterr().out
    assert "missing image: first 2 of 6" in out
    assert out.count("does not exist") == 2


def test_check_custom_jsonl(tmp_path, capsys):
    jpeg(tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_bytes(b"GIF89a nonsense")
    lines = [{"id": "1", "text": "hi", "image": "a.jpg", "label": "x"}, {"id": "2", "text": "yo", "image": "b.jpg", "label": "y"},
             {"id": "3", "text": "yo", "image": "b.jpg", "label": "y"}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert run(["data", "check", "--dataset", "jsonl", "--data-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "checked 3 records (train 3) and 2 image files" in out
    assert f"  {tmp_path / 'train.jsonl'}:2: {tmp_path / 'b.jpg'} is not an image file PIL can read (also the image of 1 more record(s))" in out
    assert str(tmp_path / "a.jpg") not in out


def test_check_names_what_a_file_that_is_no_image_holds_and_a_loop_of_links(tmp_path, capsys):
    """A failed download leaves the server's page under the image's name; a loop of links stopped the check with a
    traceback (Python before 3.13 raised resolving it)."""
    jpeg(tmp_path / "a.jpg")
    (tmp_path / "page.jpg").write_text("<html><head><title>403 Forbidden</title></head><body>nginx</body></html>")
    (tmp_path / "drawing.png").write_text('<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>')
    (tmp_path / "loop.jpg").symlink_to("loop.jpg")
    names = ["a.jpg", "page.jpg", "drawing.png", "loop.jpg"]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"id": str(i), "text": "hi", "image": name, "label": "x"}) + "\n"
                                                  for i, name in enumerate(names)))
    assert run(["data", "check", "--dataset", "jsonl", "--data-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    train = tmp_path / "train.jsonl"
    assert (f"  {train}:2: {tmp_path / 'page.jpg'} holds an HTML page ('403 Forbidden'), not an image: what a failed "
            "download leaves") in out
    assert f"  {train}:3: {tmp_path / 'drawing.png'} holds an SVG drawing, which Pillow does not read: convert it to PNG" in out
    assert f"  {train}:4: {tmp_path / 'loop.jpg'}: Too many levels of symbolic links" in out


def test_check_and_stats_name_a_sample_in_two_splits(tmp_path, capsys):
    jpeg(tmp_path / "a.jpg")
    jpeg(tmp_path / "b.jpg")
    (tmp_path / "train.jsonl").write_text(json.dumps({"id": "1", "text": "hi", "image": "a.jpg", "label": "x"}) + "\n"
                                          + json.dumps({"id": "2", "text": "yo", "image": "b.jpg", "label": "y"}) + "\n")
    (tmp_path / "test.jsonl").write_text(json.dumps({"id": "7", "text": "yo", "image": "b.jpg", "label": "y"}) + "\n")
    assert run(["data", "check", "--dataset", "jsonl", "--data-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "sample in two splits │     1 │" in out
    assert (f"  {tmp_path / 'test.jsonl'}:1: the text and image of {tmp_path / 'train.jsonl'}:2 (train split), in the test "
            "split too") in out
    assert run(["data", "stats", "--dataset", "jsonl", "--data-dir", str(tmp_path)]) == 0
    assert (f"test shares 1 sample(s) with train (the same text and image; first {tmp_path / 'test.jsonl'}:1 and "
            f"{tmp_path / 'train.jsonl'}:2): its scores are partly on train samples") in capsys.readouterr().out


def test_inspect_image(tmp_path):
    assert inspect_image(jpeg(tmp_path / "ok.jpg")) is None
    png = tmp_path / "ok.png"
    Image.new("L", (8, 8)).save(png)
    assert inspect_image(png) is None
    assert inspect_image(jpeg(tmp_path / "small.jpg", size=(7, 100)))[0] == "absurd dimensions"
    assert inspect_image(tmp_path / "none.jpg")[0] == "missing image"
    assert inspect_image(tmp_path) == ("folder instead of an image file", f"{tmp_path} is a folder")  # the loader's words


def test_stats_table_shows_unlabelled_records(tmp_path, capsys):
    jpeg(tmp_path / "a.jpg")
    lines = [{"id": "1", "text": "hi", "image": "a.jpg", "label": "x"}, {"id": "2", "text": "yo", "image": "a.jpg"}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert run(["data", "stats", "--dataset", "jsonl", "--data-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if "┃ split" in line)
    train = next(line for line in lines if "│ train" in line)
    cells = [cell.strip() for cell in train.split("│")[1:-1]]
    assert "unlabelled" in header and cells[:4] == ["train", "2", "1", "1"]


def test_stats_count_unlabelled_records_apart(tmp_path):
    from clfa.data.registry import load_dataset

    jpeg(tmp_path / "i.jpg")
    (tmp_path / "train.jsonl").write_text(json.dumps({"id": "1", "text": "t", "image": "i.jpg", "label": "p"}) + "\n")
    (tmp_path / "test.jsonl").write_text(json.dumps({"id": "2", "text": "t", "image": "i.jpg"}) + "\n")
    counts = split_counts(load_dataset("jsonl", tmp_path))
    assert counts["test"] == {"total": 1, "labels": {"p": 0}, "unlabelled": 1}
    assert counts["train"] == {"total": 1, "labels": {"p": 1}}


def test_empty_texts_of_a_public_release_are_counted_where_they_are_kept(tmp_path, capsys):
    from clfa.data.registry import load_dataset

    root = mmsd_tree(tmp_path, images=True)
    with (root / "text" / "train.txt").open("a") as f:
        # the last of zero-width characters alone: empty as the tokenizer sees it, and as a file of one's own is read
        f.write(repr(["10", "", 0]) + "\n" + repr(["11", "  ", 1]) + "\n" + repr(["12", "\u200b\u2060\ufeff", 1]) + "\n")
    for name in ("10", "11", "12"):
        jpeg(root / "dataset_image" / f"{name}.jpg")
    assert run(["data", "stats", "--dataset", "mmsd", "--data-dir", str(root)]) == 0
    assert "3 record(s) have an empty text (train 3): kept, as the release counts them" in capsys.readouterr().out
    # train and evaluate print the report, with the records each split holds
    data = load_dataset("mmsd", root)
    assert data.sizes() == "records: train 6, dev 2, test 1"
    assert data.report().splitlines()[-1] == "3 record(s) have an empty text (train 3): kept, as the release counts them"
    run(["data", "check", "--dataset", "mmsd", "--data-dir", str(root)])
    assert f"{root / 'text' / 'train.txt'}:8: record '12' has an empty text" in capsys.readouterr().out
