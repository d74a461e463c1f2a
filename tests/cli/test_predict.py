"""``clfa predict`` (clfa.cli.predict): a pair or a file of pairs predicted from the pixels its checks decoded, what it
refuses before the model loads, and what it writes or keeps when the work stops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from transformers import AutoImageProcessor, AutoTokenizer

from clfa import CLFAModel
from clfa.data.records import Record
from clfa.predict import Predictor
from conftest import write_pairs
from test_predict import save_model


NO_LABELS = "no labels (id2label and label2id, which a CLFA model records): its classes would be named LABEL_0, LABEL_1, ..."


@pytest.mark.parametrize("labels, refused", [
    # transformers names the classes of a config without labels LABEL_0, LABEL_1: predictions came with those names.
    ({}, NO_LABELS),
    ({"id2label": {"0": "negative", "1": "positive"}}, NO_LABELS),
    ({"id2label": "negative,positive", "label2id": {}}, NO_LABELS),
    ({"id2label": ["negative", "positive"], "label2id": {"negative": 0, "positive": 1}},
     "id2label and label2id must be objects (class id: name, name: class id), got ['negative', 'positive'] and "
     "{'negative': 0, 'positive': 1}"),
    # Else a KeyError for class 1, or a ValueError for the id "x" that called the model "not a CLFA model".
    ({"id2label": {"0": "negative", "2": "positive"}, "label2id": {"negative": 0, "positive": 2}},
     "id2label must number the classes from 0 to 1, got ids 0, 2"),
    ({"id2label": {"0": "negative", "x": "positive"}, "label2id": {"negative": 0, "positive": 1}},
     "id2label must number the classes from 0 to 1, got ids 0, x"),
    # Two classes of one name would be one probability in a prediction, the other's dropped.
    ({"id2label": {"0": "positive", "1": "positive"}, "label2id": {"positive": 1}},
     "id2label must name each class once, in text, got ['positive', 'positive']"),
    # evaluate reads the records' labels through label2id: swapped, every score would be of the other class.
    ({"id2label": {"0": "negative", "1": "positive"}, "label2id": {"negative": 1, "positive": 0}},
     "label2id {'negative': 1, 'positive': 0} does not match id2label, whose classes are ['negative', 'positive'] in id order"),
    ({"id2label": {"0": "negative", "1": "positive"}, "label2id": {"negative": 0, "positive": 1}, "num_labels": 3},
     "num_labels is 3, but id2label names 2 classes"),
])
def test_a_model_whose_labels_are_missing_or_do_not_number_its_classes_is_refused(tiny_models, tmp_path, capsys, labels,
                                                                                   refused):
    from clfa.cli import main

    save_model(tiny_models, tmp_path / "model")
    config = tmp_path / "model" / "config.json"
    settings = {key: value for key, value in json.loads(config.read_text()).items() if key not in ("id2label", "label2id")}
    config.write_text(json.dumps(settings | labels))
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    capsys.readouterr()
    assert main(["predict", "--model", str(tmp_path / "model"), "--text", "a day", "--image", str(tmp_path / "a.png")]) == 2
    assert capsys.readouterr() == ("", f"clfa: error: {tmp_path / 'model'}: its config.json: {refused}\n")


@pytest.mark.parametrize("output", ["out.jsonl", None])
def test_an_error_in_making_the_predictions_is_not_said_to_be_the_output_s(tmp_path, capsys, output):
    """The rows are made as they are written (images read, a loader's workers started, whose semaphores a read-only
    /dev/shm refuses): an EACCES met there is the input's or the machine's, not a file or stdout that cannot be written."""
    import errno

    from clfa.cli.predict import write_prediction_rows
    from clfa.prediction_files import PREDICT_FIELDS

    def rows():
        yield {"id": "1", "label": "a", "probabilities": {"a": 1.0}, "text": "a day", "image": "1.jpg"}
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "2.jpg"))

    with pytest.raises(PermissionError, match="2.jpg"):
        write_prediction_rows(rows(), ["a"], output and str(tmp_path / output), PREDICT_FIELDS)
    if output:  # the row made is kept, and where said
        assert capsys.readouterr().err == f"clfa: 1 prediction(s) made before the stop are in {tmp_path / output}.partial\n"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="/dev/full, a file that is always full, is Linux's")
def test_predictions_and_metrics_that_the_disk_cannot_take_are_named_in_one_line(tiny_models, tiny_dataset, tmp_path, capsys):
    from clfa.cli import main

    save_model(tiny_models, tmp_path / "model")
    data = ["--dataset", "jsonl", "--data-dir", str(tiny_dataset), "--device", "cpu", "--progress", "false"]
    commands = {("predict", "--input", str(tiny_dataset / "test.jsonl"), "--output", "/dev/full", "--progress", "false"):
                "--output /dev/full: cannot be written (No space left on device)",
                ("evaluate", "--output", "/dev/full", *data): "--output /dev/full: cannot be written (No space left on device)",
                ("evaluate", "--predictions", "/dev/full", *data):
                "--predictions /dev/full: cannot be written (No space left on device)"}
    for argv, said in commands.items():
        capsys.readouterr()
        assert main([argv[0], "--model", str(tmp_path / "model"), *argv[1:]]) == 2
        assert capsys.readouterr().err.splitlines()[-1] == f"clfa: error: {said}"


def test_a_predict_command_stopped_midway_keeps_what_it_made(tiny_models, tiny_dataset, tmp_path, capsys, broken_png):
    from clfa.cli import main

    save_model(tiny_models, tmp_path / "model")
    pairs = tiny_dataset / "pairs.jsonl"  # the broken image passes the check made while reading; its batch fails
    pairs.write_text("".join(json.dumps({"id": str(i), "text": "a day", "image": f"images/{i}.png"}) + "\n" for i in range(4))
                     + json.dumps({"id": "b", "text": "a night", "image": str(broken_png)}) + "\n")
    out = tmp_path / "pred.jsonl"
    out.write_text("earlier predictions\n")
    capsys.readouterr()
    command = ["predict", "--model", str(tmp_path / "model"), "--input", str(pairs), "--output", str(out), "--batch-size", "2",
               "--progress", "false"]
    assert main(command) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"clfa: 4 prediction(s) made before the stop are in {out}.partial"
    assert err[1].startswith(f"clfa: error: {broken_png}: unreadable image file (record {pairs}:5)")
    assert out.read_text() == "earlier predictions\n"
    assert [json.loads(line)["id"] for line in Path(f"{out}.partial").read_text().splitlines()] == ["0", "1", "2", "3"]

    pairs.write_text("".join(pairs.read_text().splitlines(keepends=True)[:4]))
    assert main(command) == 0
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["0", "1", "2", "3"]
    assert not Path(f"{out}.partial").exists()


def test_a_predict_command_whose_reader_stops_early_ends_quietly(tiny_models, tiny_dataset, tmp_path, monkeypatch, capsys):
    import os
    import sys

    from clfa.cli import main

    save_model(tiny_models, tmp_path / "model")
    read, write = os.pipe()
    os.close(read)  # as `| head -1` does once it has its line
    monkeypatch.setattr(sys, "stdout", os.fdopen(write, "w"))
    capsys.readouterr()
    assert main(["predict", "--model", str(tmp_path / "model"), "--input", str(tiny_dataset / "test.jsonl"), "--progress", "false"]) == 141
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("fusion, reads", [("text_only", "text"), ("image_only", "image")])
def test_a_single_modality_baseline_is_given_its_one_input_alone(tiny_models, tiny_dataset, tmp_path, capsys, fusion, reads):
    from clfa.cli import main

    model = CLFAModel.from_encoders(tiny_models["text"], tiny_models["image"], labels=["negative", "positive"], align_dim=24,
                                    fusion_heads=2, max_text_length=12, fusion=fusion, alignment="none", initializer_range=0.5)
    model.save_pretrained(tmp_path / "model")
    AutoTokenizer.from_pretrained(tiny_models["text"]).save_pretrained(tmp_path / "model")
    AutoImageProcessor.from_pretrained(tiny_models["image"]).save_pretrained(tmp_path / "model")
    predictor = Predictor.from_pretrained(tmp_path / "model", device="cpu")
    text, image = "snow storm at night", tiny_dataset / "images" / "1.png"
    alone = predictor.predict(text, None) if reads == "text" else predictor.predict(None, image)
    assert alone == predictor.predict(text, image)
    flag, value = ("--text", text) if reads == "text" else ("--image", str(image))
    capsys.readouterr()
    assert main(["predict", "--model", str(tmp_path / "model"), flag, value]) == 0
    assert json.loads(capsys.readouterr().out) == alone
    # A file for a text-only model is read without its images: they may be gone.
    (tmp_path / "pairs.jsonl").write_text(json.dumps({"id": "1", "text": text, "image": "gone.png"}) + "\n")
    assert main(["predict", "--model", str(tmp_path / "model"), "--input", str(tmp_path / "pairs.jsonl"), "--progress", "false"]) == (
        0 if reads == "text" else 2)
    out, err = capsys.readouterr()
    assert (json.loads(out)["probabilities"] == alone["probabilities"]) if reads == "text" else "gone.png" in err
    # A model that reads both says which one it was not given.
    save_model(tiny_models, tmp_path / "both")
    assert main(["predict", "--model", str(tmp_path / "both"), flag, value]) == 2
    other = "--image" if reads == "text" else "--text"
    assert f"reads the text and the image of a pair; give {other} too" in capsys.readouterr().err
    with pytest.raises(TypeError, match=f"{other[2:]} must be .*, not NoneType: this model reads the text and the image of a pair"):
        Predictor.from_pretrained(tmp_path / "both", device="cpu").predict(*((text, None) if reads == "text" else (None, image)))


def test_each_prediction_decodes_its_image_once(tiny_models, tmp_path, capsys, decodes):
    """clfa predict --image decoded the file to check it, then again to predict it (85 ms more for a 12-megapixel JPEG)."""
    from clfa.cli import main

    save_model(tiny_models, tmp_path / "model")
    photo, text = tmp_path / "photo.jpg", "what a lovely day"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(photo)
    predictor = Predictor.from_pretrained(tmp_path / "model", device="cpu")
    expected = predictor.predict(text, photo)
    assert decodes.taken() == {"photo.jpg": 1}
    with Image.open(photo) as opened:  # as the processor sees it, decoded here
        pixels = np.asarray(opened.convert("RGB"))
    assert decodes.taken() == {"photo.jpg": 1}
    assert predictor.predict(text, pixels) == expected
    capsys.readouterr()
    assert main(["predict", "--model", str(tmp_path / "model"), "--text", text, "--image", str(photo)]) == 0
    assert decodes.taken() == {"photo.jpg": 1}
    assert json.loads(capsys.readouterr().out) == expected
    (tmp_path / "pairs.jsonl").write_text(json.dumps({"id": "1", "text": text, "image": "photo.jpg"}) + "\n")
    assert main(["predict", "--model", str(tmp_path / "model"), "--input", str(tmp_path / "pairs.jsonl"), "--progress", "false"]) == 0
    assert decodes.taken() == {"photo.jpg": 1}
    assert json.loads(capsys.readouterr().out)["probabilities"] == expected["probabilities"]
    assert predictor.predict_records([Record(id="1", text=text, image=photo)], progress=False)[0]["probabilities"] == \
        expected["probabilities"]
    assert decodes.taken() == {"photo.jpg": 1}


def test_a_file_of_pairs_is_predicted_from_the_pixels_its_check_decoded(tiny_models, tmp_path, capsys, decodes, broken_png):
    """clfa predict --input decoded each image to check it (every one under --skip-invalid, and without it those the
    check cannot verify cheaply, neither PNG nor JPEG), then again for its batch."""
    from clfa.cli import main
    from clfa.data.custom import read_custom

    save_model(tiny_models, tmp_path / "model")
    images = ["a.png", "b.jpg", "c.webp", "d.gif"]
    pairs = write_pairs(tmp_path / "pairs.jsonl", images)
    with_broken = write_pairs(tmp_path / "more.jsonl", [*images, broken_png.name])
    predictor = Predictor.from_pretrained(tmp_path / "model", device="cpu")
    records = read_custom(pairs, check_images=False)
    expected = [row["probabilities"] for row in predictor.predict_records(records, progress=False)]  # decoded by its batch
    decodes.taken()
    predict = ["predict", "--model", str(tmp_path / "model"), "--progress", "false", "--input"]
    assert main([*predict, str(pairs)]) == 0
    assert decodes.taken() == {"a.png": 1, "b.jpg": 1, "c.webp": 1, "d.gif": 1}
    assert [json.loads(line)["probabilities"] for line in capsys.readouterr().out.splitlines()] == expected
    for workers in ("0", "1"):  # a loader worker's decodings are its own, not counted here
        assert main([*predict, str(with_broken), "--skip-invalid", "--num-workers", workers]) == 0
        if workers == "0":
            assert decodes.taken() == {"a.png": 1, "b.jpg": 1, "c.webp": 1, "d.gif": 1, "broken_pixels.png": 1}
        out, err = capsys.readouterr()
        assert [json.loads(line)["probabilities"] for line in out.splitlines()] == expected
        skipped, where = err.splitlines()
        assert skipped == "skipped 1 invalid record(s): 1 x unreadable image file"
        assert where.startswith(f"  {with_broken}:5: unreadable image file {broken_png} (")


def test_with_loader_workers_the_pixels_are_made_by_them_not_while_the_file_is_read(tiny_models, tmp_path, capsys,
                                                                                     pixels_made):
    """Made while the file was read, one image after the other in this process, the pixels left the loader workers
    nothing to do side by side: resizing a 600 x 450 JPEG takes some 8 times as long as decoding it (9 ms and 1 ms)."""
    from clfa.cli import main

    save_model(tiny_models, tmp_path / "model")
    pairs = write_pairs(tmp_path / "pairs.jsonl", ["a.png", "b.jpg", "c.webp", "d.gif"])
    predict = ["predict", "--model", str(tmp_path / "model"), "--progress", "false", "--input", str(pairs), "--skip-invalid"]
    found = {}
    for workers in ("0", "2"):
        pixels_made.clear()
        assert main([*predict, "--num-workers", workers]) == 0
        found[workers] = [json.loads(line)["probabilities"] for line in capsys.readouterr().out.splitlines()]
        assert pixels_made == ({"a.png": 1, "b.jpg": 1, "c.webp": 1, "d.gif": 1} if workers == "0" else {})
    assert found["2"] == found["0"]


def test_predict_names_an_image_it_cannot_use_before_the_model_loads(tmp_path, capsys):
    from clfa.cli import main

    Image.effect_noise((64, 48), 60).convert("RGB").save(tmp_path / "whole.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "whole.jpg").read_bytes()[:-200])  # its pixels, not its header
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "page.jpg").write_text("<!doctype html><title>Not Found</title><p>The requested URL was not found.")
    (tmp_path / "photo.jpg").write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(64))  # an iPhone's photo, renamed
    (tmp_path / "folder.png").mkdir()
    for name, message in (("nowhere.png", "missing image file {}"), ("folder.png", "folder instead of an image file {}"),
                          ("empty.png", "empty image file {}"),
                          ("text.png", "unreadable image file {} (UnidentifiedImageError: cannot identify image file '{}')"),
                          ("page.jpg", "unreadable image file {} (an HTML page ('Not Found'), not an image: what a failed "
                                       "download leaves)\n"),
                          ("photo.jpg", "unreadable image file {} (a HEIC/HEIF photo, which Pillow does not read: convert it "
                                        "to JPEG or PNG)\n"),
                          ("cut.jpg", "unreadable image file {} (OSError: image file is truncated")):
        capsys.readouterr()
        image = tmp_path / name  # the model named is none: the image is refused before it is looked for
        assert main(["predict", "--model", str(tmp_path / "no-model"), "--text", "a day", "--image", str(image)]) == 2, name
        assert capsys.readouterr().err.startswith("clfa: error: " + message.format(image, image)), name
