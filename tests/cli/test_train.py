"""``clfa train`` (clfa.cli.train): its notes and summary, options that cannot run refused in one line, and the models
it trains evaluated and predicted with by the other commands."""

from __future__ import annotations

import csv
import json
import re

import pytest

from clfa.cli import main
from clfa.options import TrainOptions


def test_cli_train_without_dev_and_test_prints_the_notes_and_no_empty_table(tiny_models, tiny_dataset, tmp_path, capsys,
                                                                             monkeypatch):
    monkeypatch.chdir(tiny_dataset)
    command = ["train", "--dataset", "jsonl", "--train-file", "train.jsonl", "--text-model",
               tiny_models["text"], "--image-model", tiny_models["image"], "--teacher", tiny_models["teacher"],
               "--mapping-hidden-dim", "32", "--fusion-layers", "1", "--fusion-heads", "2", "--fusion-ffn-dim", "32",
               "--epochs", "1", "--num-workers", "0", "--report-to", "none", "--progress", "false",
               "--output-dir", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")]
    assert main(command) == 0
    out, err = capsys.readouterr()
    assert "no dev split: no checkpoint is picked" in err and "no test split: the model is not scored" in err
    assert "records: train 48" in out and "split" not in out and (tmp_path / "run" / "model.safetensors").is_file()
    # Where the data came from, as paths that still hold from another folder.
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["data_options"]["train"] == str(tiny_dataset / "train.jsonl")
    assert main(command + ["--resume"]) == 0  # its one epoch of 6 steps is done
    assert ("note: the checkpoint's step, 6, is the last of the run or past it (by the --epochs or --max-steps given): "
            "nothing was trained") in capsys.readouterr().err


def test_cli_train_says_a_test_split_whose_records_were_all_skipped_was_skipped_not_absent(tiny_models, tiny_dataset,
                                                                                           tmp_path, capsys):
    test = tiny_dataset / "test.jsonl"
    test.write_text("".join(json.dumps(json.loads(line) | {"image": "images/none.png"}) + "\n"
                            for line in test.read_text().splitlines()))
    assert main(["train", "--dataset", "jsonl", "--data-dir", str(tiny_dataset), "--skip-invalid", "--text-model",
                 tiny_models["text"], "--image-model", tiny_models["image"], "--teacher", tiny_models["teacher"],
                 "--mapping-hidden-dim", "32", "--fusion-layers", "1", "--fusion-heads", "2", "--fusion-ffn-dim", "32",
                 "--max-steps", "1", "--batch-size", "16", "--num-workers", "0", "--report-to", "none", "--progress", "false",
                 "--output-dir", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")]) == 0
    out, err = capsys.readouterr()
    assert "skipped 16 invalid record(s): 16 x missing image file" in err
    assert ("the test split's records were all skipped: the model is not scored on held-out data after training"
            in err.splitlines())
    assert "no test split" not in err and "records: train 48, dev 16, test 0" in out


def test_cli_train_evaluate_predict(tiny_models, tiny_dataset, tmp_path, capsys, broken_png):
    config = tmp_path / "opts.yaml"
    config.write_text(f"text_model: {tiny_models['text']}\nimage_model: {tiny_models['image']}\nteacher: {tiny_models['teacher']}\n"
                      "mapping_hidden_dim: 32\nfusion_layers: 1\nfusion_heads: 2\nfusion_ffn_dim: 32\nepochs: 1\nlearning_rate: 0.001\n"
                      "num_workers: 0\nreport_to: none\nprogress: false\n")
    out = tmp_path / "cli-run"
    code = main(["train", "--dataset", "jsonl", "--data-dir", str(tiny_dataset), "--config", str(config),
                 "--epochs", "2", "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    # The Trainer's log lines are messages, on stderr: stdout holds the command's results only.
    printed = capsys.readouterr()
    assert "{'" not in printed.err  # lines to read, not the dicts the Trainer logs
    assert re.search(r"^step 6/12 \(epoch 1\): eval_loss [\d.]+, eval_accuracy", printed.err, re.MULTILINE)
    assert re.search(r"^step 12/12 \(epoch 2\): train_runtime", printed.err, re.MULTILINE)
    assert "{'" not in printed.out and "records: train 48" in printed.out
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["options"]["epochs"] == 2  # the flag overrides the file
    assert saved["options"]["fusion_layers"] == 1  # the file overrides the default
    assert saved["options"]["weight_decay"] == 0.01  # the paper's default stays

    assert main(["evaluate", "--model", str(out), "--dataset", "jsonl", "--data-dir", str(tiny_dataset), "--output", str(tmp_path / "eval.json")]) == 0
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["test"]["accuracy"] == pytest.approx(saved["test"]["accuracy"])
    # Each class's figures and confusion-matrix row are printed, not in the --output file alone.
    shown = capsys.readouterr().out
    assert "test: per class" in shown
    for label, counts in zip(("negative", "positive"), evaluated["test"]["confusion_matrix"]["matrix"]):
        assert re.search(rf"│ {label} +│.*│ +{counts[0]} │ +{counts[1]} │$", shown, re.MULTILINE)

    capsys.readouterr()
    assert main(["predict", "--model", str(out), "--text", "what a lovely day", "--image", str(tiny_dataset / "images" / "0.png")]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["label"] in ("negative", "positive")
    assert main(["predict", "--model", str(out), "--text", "a day", "--image", "HTTPS://example.com/0.png"]) == 2
    assert "URL instead of an image file HTTPS://example.com/0.png (images are read" in capsys.readouterr().err
    assert main(["predict", "--model", str(out), "--text", "a day", "--image", str(broken_png)]) == 2
    assert capsys.readouterr().err.startswith(f"clfa: error: unreadable image file {broken_png} (")
    # Under --skip-invalid a file's image whose pixels are broken is found, counted and left out while reading.
    pairs = tiny_dataset / "pairs.jsonl"  # beside the images its lines name
    pairs.write_text((tiny_dataset / "test.jsonl").read_text() + json.dumps({"id": "b", "text": "t", "image": str(broken_png)}) + "\n")
    assert main(["predict", "--model", str(out), "--input", str(pairs), "--output", str(tmp_path / "kept.jsonl"), "--skip-invalid"]) == 0
    assert "skipped 1 invalid record(s): 1 x unreadable image file" in capsys.readouterr().err
    assert len((tmp_path / "kept.jsonl").read_text().splitlines()) == 16
    assert sum(one["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)

    assert main(["predict", "--model", str(out), "--input", str(tiny_dataset / "test.jsonl"), "--output", str(tmp_path / "pred.jsonl")]) == 0
    lines = [json.loads(line) for line in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert len(lines) == 16 and lines[0]["id"] == "64" and list(lines[0]) == ["id", "label", "probabilities", "text", "image"]
    first = json.loads((tiny_dataset / "test.jsonl").read_text().splitlines()[0])
    assert (lines[0]["text"], lines[0]["image"]) == (first["text"], str((tiny_dataset / first["image"]).resolve()))
    # A .csv name gets CSV, with a column per class; loader workers and no progress bar give the same figures.
    capsys.readouterr()
    assert main(["predict", "--model", str(out), "--input", str(tiny_dataset / "test.jsonl"), "--output", str(tmp_path / "pred.csv"),
                 "--num-workers", "1", "--progress", "false"]) == 0
    assert "predict:" not in capsys.readouterr().err
    rows = list(csv.DictReader((tmp_path / "pred.csv").open(newline="")))
    assert list(rows[0]) == ["id", "label", "p_negative", "p_positive", "text", "image"]
    assert [(row["id"], row["label"], float(row["p_positive"]), row["text"], row["image"]) for row in rows] == \
        [(line["id"], line["label"], pytest.approx(line["probabilities"]["positive"], abs=1e-6), line["text"], line["image"])
         for line in lines]


@pytest.mark.parametrize("flags, config_text, message", [
    (["--overlap-towers", "true"], "", "--overlap-towers runs the students side by side inside whole training steps: it needs --cuda-graph"),
    (["--fuse-linears", "true"], "", "--fuse-linears rewrites the graph torch.compile compiles: it needs --compile"),
    (["--attention-backends", "flash,fastest"], "", "--attention-backends 'flash,fastest': unknown backend(s) ['fastest']"),
    (["--fusion-heads", "7"], "", "--fusion-heads 7 must divide the aligned feature size, 24 (the teacher"),
    ([], "learning_rat: 0.1\n", "opts.yaml: unknown option(s) ['learning_rat']"),
    ([], "learning-rate: 0.1\ndata_dir: x\n", "unknown option(s) ['data_dir', 'learning-rate']; keys are written with underscores: "
                                               "learning-rate (write learning_rate); the data is given on the command line"),
    (["--fusion", "crossattention"], "", "--fusion crossattention: unknown; choose from cross_attention, concat"),
    (["--resume"], "", "--resume: no checkpoint to resume from in"),
    (["--text-model", "/nonexistent/bert"], "", "--text-model /nonexistent/bert: no such folder"),
    (["--image-model", "{image}-studnet"], "", "-studnet: no such folder in "),
    (["--teacher", "{data}"], "", "/data: not a model folder, nor a model the hub gave (Unrecognized model in"),
    (["--report-to", "tensorbord"], "", "--report-to tensorbord: unknown tracker(s) ['tensorbord']; choose from none, all,"),
    (["--text-model", "{image}"], "", "/vit: a vit model without a token vocabulary, not a text encoder"),
    (["--image-model", "{text}"], "", "/bert: a bert model without an image_size, not a ViT-style image encoder"),
    (["--image-model", "{teacher}"], "", "/clip: a clip model of several towers; a student is one encoder: give the folder"),
    (["--teacher", "{text}"], "", "--teacher {text}: a bert model, not a CLIP-style dual encoder (text and vision towers"),
    (["--text-model", "{no_pad}"], "", "--text-model {no_pad}: its tokenizer has no padding token, and texts are padded to"),
    (["--text-model", "{clip_text}", "--classifier-pooling", "cls"], "", "--classifier-pooling cls: --text-model {clip_text} "
                                                                        "is a causal encoder, whose first token does not see the text"),
    (["--text-model", "{left_padded}", "--alignment-pooling", "cls"], "", "--alignment-pooling cls: the tokenizer of "
                                                                          "--text-model {left_padded} pads on the left"),
])
def test_cli_reports_options_that_cannot_run_in_one_line(tiny_models, other_students, tiny_dataset, tmp_path, capsys, flags,
                                                         config_text, message):
    config = tmp_path / "opts.yaml"
    config.write_text(f"text_model: {tiny_models['text']}\nimage_model: {tiny_models['image']}\nteacher: {tiny_models['teacher']}\n"
                      "num_workers: 0\nreport_to: none\nprogress: false\n" + config_text)
    capsys.readouterr()
    flags = [flag.replace("{data}", str(tiny_dataset)).format(**tiny_models, **other_students) for flag in flags]
    message = message.format(**tiny_models, **other_students)
    code = main(["train", "--dataset", "jsonl", "--data-dir", str(tiny_dataset), "--config", str(config), *flags,
                 "--output-dir", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("clfa: error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()  # refused before any work


def test_a_diverged_run_writes_null_not_nan_and_fails(tiny_models, tiny_dataset, tmp_path, capsys):
    """An fp32 learning rate of 1e30 sends the weights to inf within a step or two: the loss is nan."""
    config = tmp_path / "opts.yaml"
    config.write_text(f"text_model: {tiny_models['text']}\nimage_model: {tiny_models['image']}\nteacher: {tiny_models['teacher']}\n"
                      "mapping_hidden_dim: 32\nfusion_layers: 1\nfusion_heads: 2\nfusion_ffn_dim: 32\nnum_workers: 0\n"
                      "report_to: none\nprogress: false\nmax_text_length: 4096\n")
    code = main(["train", "--dataset", "jsonl", "--data-dir", str(tiny_dataset), "--config", str(config), "--epochs", "1",
                 "--learning-rate", "1e30", "--output-dir", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")])
    assert code == 1 and "clfa: error: training diverged: the model written has weights" in capsys.readouterr().err
    text = (tmp_path / "run" / "metrics.json").read_text()
    saved = json.loads(text, parse_constant=lambda name: pytest.fail(f"metrics.json holds {name}"))
    assert saved["train"]["loss"] is None
    # The options are those the model was built with: the teacher's width, the text encoder's longest input.
    model_config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["options"]["align_dim"] == model_config["align_dim"] != TrainOptions().align_dim
    assert saved["options"]["max_text_length"] == model_config["max_text_length"] < 4096
