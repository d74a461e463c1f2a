"""``clfa train`` end to end on small trees in the published MMSD and MVSA formats, with tiny models."""

import json

import numpy as np
from PIL import Image

from clfa.cli import main

WORDS = "what a lovely sunny rainy day love this weather great night".split()


def _jpeg(path, rng):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(path, format="JPEG")


def _text(rng) -> str:
    return " ".join(rng.choice(WORDS, size=6))


def _train_args(tiny_models, tmp_path, dataset, data_dir):
    return ["train", "--dataset", dataset, "--data-dir", str(data_dir), "--output-dir", str(tmp_path / "run"),
            "--text-model", tiny_models["text"], "--image-model", tiny_models["image"], "--teacher", tiny_models["teacher"],
            "--mapping-hidden-dim", "32", "--fusion-layers", "1", "--fusion-heads", "2", "--fusion-ffn-dim", "32",
            "--epochs", "1", "--num-workers", "0", "--report-to", "none", "--progress", "false", "--cache-dir", str(tmp_path / "cache")]


def test_train_on_mmsd_release_format(tiny_models, tmp_path, capsys):
    rng = np.random.default_rng(0)
    root = tmp_path / "MMSD"
    (root / "text").mkdir(parents=True)
    n = 0
    for name, size in (("train.txt", 24), ("valid2.txt", 8), ("test2.txt", 8)):
        lines = []
        for _ in range(size):
            label = int(rng.integers(2))
            row = [str(800000 + n), _text(rng), label] if name == "train.txt" else [str(800000 + n), _text(rng), 1 - label, label]
            lines.append(repr(row))
            _jpeg(root / "dataset_image" / f"{800000 + n}.jpg", rng)
            n += 1
        dropped = [str(800000 + n), "yeah right sarcasm", 1] + ([] if name == "train.txt" else [1])
        lines.append(repr(dropped))  # dropped by the standard cleaning
        n += 1
        (root / "text" / name).write_text("\n".join(lines) + "\n")
    assert main(_train_args(tiny_models, tmp_path, "mmsd", root)) == 0
    out, err = capsys.readouterr()
    assert "cleaning removed 1 sample(s) from test: 1 x filter: token 'sarcasm'" in err and "records: train 24, dev 8, test 8" in out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["removed_by_cleaning"] == {split: {"filter: token 'sarcasm'": 1} for split in ("train", "dev", "test")}
    assert metrics["labels"] == ["not_sarcastic", "sarcastic"]
    assert metrics["train"]["samples"] == 24 and metrics["test"]["num_samples"] == 8
    assert metrics["test"]["positive_label"] == "sarcastic" and "f1" in metrics["test"]


def test_train_on_mvsa_single_raw_release_three_classes(tiny_models, tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "MVSA_Single"
    (root / "data").mkdir(parents=True)
    pairs = ["positive,positive", "neutral,neutral", "negative,negative", "neutral,negative", "positive,neutral"]
    lines = ["ID\ttext,image"]
    for i in range(1, 61):
        lines.append(f"{i}\t{pairs[i % len(pairs)]}")
        (root / "data" / f"{i}.txt").write_text(_text(rng) + "\n")
        _jpeg(root / "data" / f"{i}.jpg", rng)
    (root / "labelResultAll.txt").write_text("\n".join(lines) + "\n")
    assert main(_train_args(tiny_models, tmp_path, "mvsa-single", root) + ["--metric", "weighted_f1"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["labels"] == ["positive", "neutral", "negative"]
    assert len(metrics["test"]["confusion_matrix"]["matrix"]) == 3
    assert metrics["train"]["samples"] + metrics["dev"]["num_samples"] + metrics["test"]["num_samples"] == 60
    assert (root / "clfa_splits" / "train.json").is_file()  # the split is written for reuse


def test_normalized_texts_are_recorded_with_the_model_and_evaluation_follows_them(tiny_models, tmp_path, capsys, caplog):
    rng = np.random.default_rng(2)
    root = tmp_path / "MMSD2"
    (root / "text_json_final").mkdir(parents=True)
    for first, (name, size) in enumerate((("train", 16), ("valid", 8), ("test", 8))):
        items = [{"image_id": 900000 + 100 * first + i, "text": f"<user> {_text(rng)} # fun <url>", "label": int(rng.integers(2))}
                 for i in range(size)]
        for item in items:
            _jpeg(root / "dataset_image" / f"{item['image_id']}.jpg", rng)
        (root / "text_json_final" / f"{name}.json").write_text(json.dumps(items))
    plain, rewriting = tmp_path / "run", tmp_path / "rewriting"
    assert main(_train_args(tiny_models, tmp_path, "mmsd2", root)) == 0
    assert main(_train_args(tiny_models, tmp_path, "mmsd2", root) + ["--output-dir", str(rewriting), "--normalize-text"]) == 0
    assert json.loads((plain / "config.json").read_text())["normalize_text"] is False
    assert json.loads((rewriting / "config.json").read_text())["normalize_text"] is True
    capsys.readouterr()
    evaluate = ["evaluate", "--dataset", "mmsd2", "--data-dir", str(root), "--split", "test"]
    assert main(evaluate + ["--model", str(plain), "--normalize-text"]) == 2
    assert "--normalize-text: " + str(plain) + " was trained on the texts as released" in capsys.readouterr().err
    # The model trained on rewritten texts rewrites them itself: the option changes nothing, and training's figures return.
    results = []
    for extra in ([], ["--normalize-text"]):
        assert main(evaluate + ["--model", str(rewriting), "--output", str(tmp_path / "ev.json")] + extra) == 0
        assert "records: test 8" in capsys.readouterr().err
        results.append(json.loads((tmp_path / "ev.json").read_text())["test"])
    assert results[0] == results[1]
    trained = json.loads((rewriting / "metrics.json").read_text())["test"]
    assert results[0]["accuracy"] == trained["accuracy"] and results[0]["f1"] == trained["f1"]
    # A config.json saved before it recorded the option: the run's metrics.json still tells that texts were rewritten.
    config = json.loads((rewriting / "config.json").read_text())
    del config["normalize_text"]
    (rewriting / "config.json").write_text(json.dumps(config))
    assert main(evaluate + ["--model", str(rewriting), "--output", str(tmp_path / "ev.json")]) == 0
    assert json.loads((tmp_path / "ev.json").read_text())["test"] == results[0]
    # Without it nothing tells: the texts go in as given, and the option is not refused.
    (rewriting / "metrics.json").unlink()
    assert main(evaluate + ["--model", str(rewriting), "--output", str(tmp_path / "ev.json"), "--normalize-text"]) == 0
    assert "neither its config.json nor its run's metrics.json records" in caplog.text
    assert json.loads((tmp_path / "ev.json").read_text())["test"] == results[0]
