"""End-to-end training through the Trainer on tiny models: best checkpoint, test metrics, resume, CLI."""

import csv
import dataclasses
import json
import multiprocessing
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, TrainerCallback

from clfa.cli import main
from clfa.data.registry import load_dataset
from clfa.data.records import DataError
from clfa.errors import OptionError
from clfa.options import TrainOptions
from clfa.predict import Predictor
from clfa.training import (build_model, build_trainer, check_cuda_graph_support, check_fuse_linears_support, check_task, end_loader_workers,
                           experiment_trackers, train, training_arguments, unused_parameters)
from conftest import write_dataset


def tiny_options(tiny_models, tmp_path, **kwargs) -> TrainOptions:
    base = dict(
        output_dir=str(tmp_path / "run"),
        text_model=tiny_models["text"],
        image_model=tiny_models["image"],
        teacher=tiny_models["teacher"],
        mapping_hidden_dim=32,
        fusion_layers=1,
        fusion_heads=2,
        fusion_ffn_dim=32,
        epochs=4,
        batch_size=8,
        learning_rate=1e-3,
        num_workers=0,
        cache_dir=str(tmp_path / "cache"),
        report_to="none",
        progress=False,
        logging_steps=5,
        # Layers this small, trained from scratch, learn reliably from any initialisation only with a wider one.
        initializer_range=0.1,
    )
    return TrainOptions(**(base | kwargs))


def test_train_learns_and_writes_a_usable_model(tiny_models, tiny_dataset, tmp_path):
    opts = tiny_options(tiny_models, tmp_path, epochs=8)
    metrics = train(opts, load_dataset("jsonl", tiny_dataset))
    out = tmp_path / "run"
    # The label is the image brightness: a working pipeline learns it well above chance.
    assert metrics["test"]["accuracy"] >= 0.8
    assert metrics["train"]["steps"] == 8 * 6
    assert set(metrics["test"]) >= {"accuracy", "precision", "recall", "f1", "macro_f1", "weighted_f1", "per_class", "confusion_matrix"}
    assert metrics["test"]["positive_label"] == "positive"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test"] == metrics["test"]
    # What the figures were measured on, in absolute paths.
    assert saved["data_dir"] == str(tiny_dataset.resolve()) and saved["data_options"] == {}
    assert saved["files"] == {split: str(tiny_dataset.resolve() / f"{split}.jsonl") for split in ("train", "dev", "test")}
    assert Path(saved["best_checkpoint"]).is_absolute() and Path(saved["best_checkpoint"]).is_dir()
    # The model kept is the checkpoint of the best dev F1 (--metric f1), the first to reach it.
    last = max((out / "checkpoints").glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    evals = [entry for entry in json.loads((last / "trainer_state.json").read_text())["log_history"] if "eval_f1" in entry]
    best = max(entry["eval_f1"] for entry in evals)
    assert len(evals) == 8 and metrics["dev"]["f1"] == pytest.approx(best)
    assert saved["best_checkpoint"].endswith(f"checkpoint-{next(e['step'] for e in evals if e['eval_f1'] == best)}")
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert AutoTokenizer.from_pretrained(out).model_max_length == json.loads((out / "config.json").read_text())["max_text_length"]
    assert not (out / "training_args.bin").exists()  # a pickle; its settings are in metrics.json
    # The teacher embeddings were cached and the teacher is not part of the saved model.
    assert list((tmp_path / "cache" / "teacher").glob("teacher-*.safetensors"))
    assert all("teacher" not in name for name in __import__("safetensors").safe_open(out / "model.safetensors", "pt").keys())
    # The saved model reproduces the test metrics on its own.
    records = load_dataset("jsonl", tiny_dataset)["test"]
    probs = Predictor.from_pretrained(out, device="cpu").run(records, progress=False)["probabilities"]
    labels = torch.tensor([["negative", "positive"].index(r.label) for r in records])
    assert (torch.from_numpy(probs).argmax(-1) == labels).float().mean().item() == pytest.approx(metrics["test"]["accuracy"])


@pytest.mark.parametrize("metric", ["accuracy", "macro_recall", "weighted_f1"])
def test_the_dev_metric_asked_for_picks_the_checkpoint_kept(tmp_path, metric):
    from clfa.training import training_arguments

    args = training_arguments(TrainOptions(output_dir=str(tmp_path), metric=metric, report_to="none"), has_dev=True)
    assert (args.metric_for_best_model, args.greater_is_better, args.load_best_model_at_end) == (metric, True, True)
    args = training_arguments(TrainOptions(output_dir=str(tmp_path), metric=metric, report_to="none"), has_dev=False)
    assert (args.metric_for_best_model, args.load_best_model_at_end) == (None, False)  # no dev split: the last model


def test_trainer_clips_and_counts_flops_as_the_stock_trainer_does(tiny_models, tmp_path):
    """CLFATrainer lists the parameters and counts them once per run instead of at every step; the clipped gradients,
    the returned norm and the FLOP estimate must be the stock Trainer's."""
    from transformers import AutoImageProcessor, Trainer

    from clfa import CLFAModel
    from clfa.data.processing import ImageTransform
    from clfa.training import build_trainer

    model = CLFAModel.from_encoders(tiny_models["text"], tiny_models["image"], labels=["negative", "positive"], align_dim=24, fusion_heads=2)
    opts = tiny_options(tiny_models, tmp_path)
    trainer = build_trainer(opts, model, ImageTransform(AutoImageProcessor.from_pretrained(tiny_models["image"])), [{}] * 8)
    trainer.args.max_grad_norm = 0.05  # small enough that clipping changes every gradient
    g = torch.Generator().manual_seed(0)
    inputs = {"input_ids": torch.randint(5, 20, (4, 10), generator=g), "attention_mask": torch.ones(4, 10, dtype=torch.long),
              "pixel_values": torch.randn(4, 3, 16, 16, generator=g), "labels": torch.tensor([0, 1, 1, 0]),
              "teacher_text_embeds": torch.randn(4, 24, generator=g), "teacher_image_embeds": torch.randn(4, 24, generator=g)}
    model(**inputs).loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    norms, clipped = [], []
    for clip in (Trainer._clip_grad_norm, type(trainer)._clip_grad_norm):
        for name, p in model.named_parameters():
            if name in grads:
                p.grad = grads[name].clone()
        norms.append(clip(trainer, model))
        clipped.append({name: p.grad.clone() for name, p in model.named_parameters() if name in grads})
    assert norms[0].item() > 10 * trainer.args.max_grad_norm
    torch.testing.assert_close(norms[1], norms[0])
    for name in grads:
        torch.testing.assert_close(clipped[1][name], clipped[0][name], rtol=0, atol=0, msg=name)
        assert not torch.equal(clipped[1][name], grads[name]) or not grads[name].any()

    stock = Trainer.floating_point_ops(trainer, inputs)
    assert stock > 0 and trainer.floating_point_ops(inputs) == stock == trainer.floating_point_ops(inputs)


class Interrupt(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        raise KeyboardInterrupt("simulated interruption after the first checkpoint")


def test_resume_after_interruption_matches_uninterrupted_run(tiny_models, tiny_dataset, tmp_path):
    data = load_dataset("jsonl", tiny_dataset)
    full = train(tiny_options(tiny_models, tmp_path / "full", epochs=3), data)
    opts = tiny_options(tiny_models, tmp_path / "cut", epochs=3)
    with pytest.raises(KeyboardInterrupt):
        train(opts, data, callbacks=[Interrupt()])
    (checkpoint,) = (tmp_path / "cut" / "run" / "checkpoints").glob("checkpoint-*")
    # A checkpoint of a run cut short serves predictions: the tokenizer and image processor were written first.
    probabilities = Predictor.from_pretrained(checkpoint, device="cpu").run(data["test"][:4], progress=False)["probabilities"]
    assert probabilities.shape == (4, 2)
    with pytest.raises(OptionError, match=r"holds checkpoints of an earlier run: add --resume to continue it"):
        train(opts, data)  # a fresh run would mix its checkpoints with these
    with pytest.raises(OptionError, match=r"checkpoint-\d+ was made with --fusion-layers 1 \(now 2\), --dropout 0.1 \(now 0.2\); "
                                          r"resume with the options of that run"):
        train(tiny_options(tiny_models, tmp_path / "cut", epochs=3, fusion_layers=2, dropout=0.2), data, resume=True)
    # Refused before the models load: steps of another size cover other data, the checkpoint's optimiser would bring
    # back its learning rate, and another train split is another run.
    recorded = json.loads((checkpoint / "clfa_run.json").read_text())
    assert recorded["processes"] == 1 and recorded["data"]["train"]["samples"] == len(data["train"])
    with pytest.raises(OptionError, match=r"checkpoint-\d+ was made with --batch-size 8 \(now 4\), --gradient-accumulation-steps 1 "
                                          r"\(now 2\), --learning-rate 0.001 \(now 0.0005\); resume with the options and data"):
        train(tiny_options(tiny_models, tmp_path / "cut", epochs=3, batch_size=4, learning_rate=5e-4, gradient_accumulation_steps=2),
              data, resume=True)
    fewer = dataclasses.replace(data, splits=data.splits | {"train": data["train"][:-3]})
    with pytest.raises(OptionError, match=rf"made with a train split of {len(data['train'])} samples \(now {len(data['train']) - 3}\)"):
        train(opts, fewer, resume=True)
    relabelled = load_dataset("jsonl", tiny_dataset, labels=["positive", "negative"])
    with pytest.raises(OptionError, match=r"was made with labels negative,positive \(now positive,negative\)"):
        train(opts, relabelled, resume=True)
    # The same folder written another way is the same student.
    resumed = train(tiny_options(tiny_models, tmp_path / "cut", epochs=3, text_model=tiny_models["text"] + "/"), data, resume=True)
    assert resumed["train"]["steps"] == full["train"]["steps"]
    cut_at = int(checkpoint.name.split("-")[1])
    assert resumed["train"]["steps_this_run"] == full["train"]["steps"] - cut_at and resumed["train"]["loss"] > 0
    # The run has ended: nothing to train, and no loss to report. Its folder has moved, and the best checkpoint with it.
    shutil.move(tmp_path / "cut", tmp_path / "moved")
    again = train(tiny_options(tiny_models, tmp_path / "moved", epochs=3), data, resume=True)
    assert again["train"]["steps_this_run"] == 0 and again["train"]["loss"] is None and again["test"] == full["test"]
    assert again["best_checkpoint"] == str(tmp_path / "moved" / "run" / "checkpoints" / Path(full["best_checkpoint"]).name)
    for split in ("dev", "test"):
        assert resumed[split] == full[split]
    # The Trainer averages the reported train loss over the steps of this process only; the weights must agree.
    full_weights = load_file(tmp_path / "full" / "run" / "model.safetensors")
    resumed_weights = load_file(tmp_path / "moved" / "run" / "model.safetensors")
    assert full_weights.keys() == resumed_weights.keys()
    for name, tensor in full_weights.items():
        torch.testing.assert_close(resumed_weights[name], tensor, rtol=1e-5, atol=1e-6, msg=name)


def test_resume_with_loader_workers_matches_uninterrupted_run(tiny_models, tiny_dataset, tmp_path):
    """With workers, a loader keeps them from epoch to epoch, and each new iterator draws their seed from the loader's
    generator: from the global one, which drives dropout, a resumed run (new iterators at its first epoch and
    evaluation) would continue with other dropout than the run it continues, from its first evaluation on."""
    data = load_dataset("jsonl", tiny_dataset)
    full = train(tiny_options(tiny_models, tmp_path / "full", epochs=3, num_workers=2), data)
    opts = tiny_options(tiny_models, tmp_path / "cut", epochs=3, num_workers=2)
    with pytest.raises(KeyboardInterrupt):
        train(opts, data, callbacks=[Interrupt()])
    resumed = train(opts, data, resume=True)
    assert resumed["train"]["steps_this_run"] == full["train"]["steps"] * 2 // 3  # cut after the first epoch
    full_weights = load_file(tmp_path / "full" / "run" / "model.safetensors")
    resumed_weights = load_file(tmp_path / "cut" / "run" / "model.safetensors")
    for name, tensor in full_weights.items():
        torch.testing.assert_close(resumed_weights[name], tensor, rtol=1e-5, atol=1e-6, msg=name)


def test_iterating_a_loader_leaves_the_global_random_state_alone(tiny_models, tiny_dataset, tmp_path):
    from transformers import AutoImageProcessor

    from clfa.data.processing import CLFADataset, ImageTransform

    data = load_dataset("jsonl", tiny_dataset)
    transform = ImageTransform(AutoImageProcessor.from_pretrained(tiny_models["image"]))
    model = build_model(tiny_options(tiny_models, tmp_path), data.labels, data.positive_label)
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["text"])
    dataset = CLFADataset(data["train"], tokenizer, transform, 16, model.config.label2id)
    trainer = build_trainer(tiny_options(tiny_models, tmp_path, num_workers=1), model, transform, dataset, dataset)
    # The train loader's sampler draws each epoch's order from it, as every run does at every epoch; the workers'
    # seed, drawn once per new iterator, comes from the loader's own generator.
    train_loader, eval_loader = trainer.get_train_dataloader(), trainer.get_eval_dataloader()
    assert getattr(train_loader, "base_dataloader", train_loader).generator is not None
    before = torch.get_rng_state()
    next(iter(eval_loader))
    assert torch.equal(torch.get_rng_state(), before)
    for loader in (train_loader, eval_loader):
        end_loader_workers(loader)


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


def test_cli_train_evaluate_predict(tiny_models, tiny_dataset, tmp_path, capsys, broken_png):
    config = tmp_path / "opts.yaml"
    config.write_text(f"text_model: {tiny_models['text']}\nimage_model: {tiny_models['image']}\nteacher: {tiny_models['teacher']}\n"
                      "mapping_hidden_dim: 32\nfusion_layers: 1\nfusion_heads: 2\nfusion_ffn_dim: 32\nepochs: 1\nlearning_rate: 0.001\n"
                      "num_workers: 0\nreport_to: none\nprogress: false\n")
    out = tmp_path / "cli-run"
    code = main(["train", "--dataset", "jsonl", "--data-dir", str(tiny_dataset), "--config", str(config),
                 "--epochs", "2", "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["options"]["epochs"] == 2  # the flag overrides the file
    assert saved["options"]["fusion_layers"] == 1  # the file overrides the default
    assert saved["options"]["weight_decay"] == 0.01  # the paper's default stays

    assert main(["evaluate", "--model", str(out), "--dataset", "jsonl", "--data-dir", str(tiny_dataset), "--output", str(tmp_path / "eval.json")]) == 0
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["test"]["accuracy"] == pytest.approx(saved["test"]["accuracy"])

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
    assert len(lines) == 16 and lines[0]["id"] == "64" and set(lines[0]) == {"id", "label", "probabilities"}
    # A .csv name gets CSV, with a column per class; loader workers and no progress bar give the same figures.
    capsys.readouterr()
    assert main(["predict", "--model", str(out), "--input", str(tiny_dataset / "test.jsonl"), "--output", str(tmp_path / "pred.csv"),
                 "--num-workers", "1", "--progress", "false"]) == 0
    assert "predict:" not in capsys.readouterr().err
    rows = list(csv.DictReader((tmp_path / "pred.csv").open(newline="")))
    assert list(rows[0]) == ["id", "label", "p_negative", "p_positive"]
    assert [(row["id"], row["label"], float(row["p_positive"])) for row in rows] == \
        [(line["id"], line["label"], pytest.approx(line["probabilities"]["positive"], abs=1e-6)) for line in lines]


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


def test_each_model_option_takes_the_kinds_of_model_that_can_serve_it():
    from transformers import (BartConfig, BertConfig, CLIPConfig, CLIPTextConfig, CLIPVisionConfig, ConvNextConfig, DeiTConfig,
                              Dinov2Config, MobileViTConfig, ResNetConfig, RobertaConfig, SiglipTextConfig, SwinConfig, T5Config,
                              T5GemmaConfig)

    from clfa.training import _wrong_kind

    serve = {"--text-model": [BertConfig(), RobertaConfig(), CLIPTextConfig(), T5Config()],
             "--image-model": [CLIPVisionConfig(), DeiTConfig(), Dinov2Config(), SwinConfig()],
             "--teacher": [CLIPConfig()]}
    for flag, configs in serve.items():
        assert [_wrong_kind(flag, config) for config in configs] == [None] * len(configs), flag
    # One CLIP tower "with projection" has a projection_dim, but nothing to pair texts with images.
    assert "not a CLIP-style dual encoder" in _wrong_kind("--teacher", CLIPTextConfig(projection_dim=64))
    assert "not a ViT-style image encoder" in _wrong_kind("--image-model", ResNetConfig())
    for convolutional in (ConvNextConfig(), MobileViTConfig()):  # an image_size, and a map of features, not tokens
        assert _wrong_kind("--image-model", convolutional).startswith(f"a {convolutional.model_type} model whose features come in "
                                                                      "several widths (a pyramid of feature maps")
    assert "several towers" in _wrong_kind("--text-model", CLIPConfig())
    assert _wrong_kind("--text-model", SiglipTextConfig()) == ("a siglip_text_model model, which transformers' AutoModel "
                                                             "cannot build; a student is an AutoModel encoder")
    assert _wrong_kind("--text-model", BartConfig()) == ("a bart encoder-decoder whose encoder transformers cannot load "
                                                       "alone (AutoModelForTextEncoding)")
    assert _wrong_kind("--text-model", T5GemmaConfig()).startswith("a t5gemma model without a hidden_size")


def test_cls_pooling_is_refused_for_a_causal_text_student_only_where_it_reads_the_text(tiny_models, other_students, tmp_path):
    from transformers import AutoModel

    from clfa.training import check_text_student, model_config

    student = AutoModel.from_pretrained(other_students["clip_text"])
    tokenizer = AutoTokenizer.from_pretrained(other_students["clip_text"])
    refused = {}
    for fusion in ("cross_attention", "concat", "text_only", "image_only", "co_attention"):
        for kind in ("classifier", "alignment"):
            for alignment in ("clfa", "none"):
                opts = tiny_options(tiny_models, tmp_path, text_model=other_students["clip_text"], fusion=fusion,
                                    alignment=alignment, **{f"{kind}_pooling": "cls"})
                try:
                    check_text_student(opts, model_config(opts, ["0", "1"], "1"), tokenizer, student)
                except OptionError as err:
                    assert "is a causal encoder, whose first token does not see the text after it; use mean" in str(err)
                    refused[fusion, kind, alignment] = True
    reads_first_text_token = {(f, "classifier", a) for f in ("cross_attention", "concat", "text_only") for a in ("clfa", "none")} | \
        {(f, "alignment", "clfa") for f in ("cross_attention", "concat", "text_only", "image_only", "co_attention")}
    assert set(refused) == reads_first_text_token


def test_a_t5_student_trains_and_its_model_predicts(tiny_models, other_students, tiny_dataset, tmp_path):
    opts = tiny_options(tiny_models, tmp_path, text_model=other_students["t5"], epochs=1, max_steps=3)
    metrics = train(opts, load_dataset("jsonl", tiny_dataset))
    assert metrics["train"]["steps"] == 3 and metrics["train"]["weights_finite"]
    predictor = Predictor.from_pretrained(tmp_path / "run", device="cpu")  # refused if a weight were missing
    assert type(predictor.model.text_model).__name__ == "T5EncoderModel"
    records = load_dataset("jsonl", tiny_dataset)["test"]
    predicted = [result["label"] for result in predictor.predict_records(records, progress=False)]
    expected = metrics["test"]["accuracy"]
    assert sum(p == r.label for p, r in zip(predicted, records)) / len(records) == pytest.approx(expected)


def test_a_text_only_baseline_trains_and_predicts_without_decoding_an_image(tiny_models, tiny_dataset, tmp_path):
    opts = tiny_options(tiny_models, tmp_path, fusion="text_only", alignment="none", epochs=1)
    data = load_dataset("jsonl", tiny_dataset)
    for record in data["train"][:5] + data["test"][:5]:  # read and checked, then gone: the run must not need them
        record.image.unlink()
    metrics = train(opts, data)
    assert metrics["train"]["steps"] == 6 and metrics["train"]["weights_finite"]
    assert not (tmp_path / "cache" / "images").exists()  # nothing cached either
    probs = Predictor.from_pretrained(tmp_path / "run", device="cpu").run(data["test"], progress=False)["probabilities"]
    assert probs.shape == (16, 2)
    with pytest.raises(DataError, match="missing or unreadable image file"):  # a model that reads the images needs them
        train(tiny_options(tiny_models, tmp_path / "both", alignment="none", epochs=1), data)


def test_a_task_that_cannot_be_learned_or_scored_is_refused_before_the_models_load(tmp_path, caplog):
    from clfa.data.records import DataError, Record
    from clfa.data.registry import DatasetSplits

    def records(*labels):
        return [Record(id=str(i), text="t", image=tmp_path / "x.png", label=label) for i, label in enumerate(labels)]

    one_class = DatasetSplits("jsonl", {"train": records("pos", "pos")}, labels=["neg", "pos"], positive_label="pos")
    with pytest.raises(DataError, match=r"the train split has 2 record\(s\) and only the label 'pos'; a classifier needs at least two"):
        check_task(TrainOptions(), one_class)
    three = DatasetSplits("jsonl", {"train": records("a", "b", "c"), "dev": records("a")}, labels=["a", "b", "c"])
    with pytest.raises(OptionError, match=r"--metric recall is that of the positive class, and this task of 3 labels \(a, b, c\) "
                                          r"has none: use macro_recall$"):
        check_task(TrainOptions(metric="recall"), three)
    two = DatasetSplits("jsonl", {"train": records("a", "b"), "dev": records("a")}, labels=["a", "b"])
    with pytest.raises(OptionError, match=r"has none: name one with --positive-label, or use macro_precision$"):
        check_task(TrainOptions(metric="precision"), two)
    check_task(TrainOptions(metric="macro_recall"), three)
    assert "no train record" not in caplog.text and "a class of its own" not in caplog.text
    # A label on few records among many: most often a typo, said with the label it is near.
    typo = DatasetSplits("jsonl", {"train": records(*["sarcastic"] * 60, *["not_sarcastic"] * 60, "sarcastc")},
                         labels=["not_sarcastic", "sarcastc", "sarcastic"])
    check_task(TrainOptions(), typo)
    assert "the label 'sarcastc' is on 1 of the 121 train records: a class of its own (a typo of 'sarcastic'?)" in caplog.text
    caplog.clear()  # a label set given beforehand holds no typos (one outside it is an error), nor does a public dataset's
    check_task(TrainOptions(), dataclasses.replace(typo, options={"labels": typo.labels}))
    check_task(TrainOptions(), dataclasses.replace(typo, name="mvsa-single"))
    assert "a class of its own" not in caplog.text
    # A class given with --labels that training never shows is allowed (the test split may hold it), and said.
    check_task(TrainOptions(), DatasetSplits("jsonl", {"train": records("a", "b")}, labels=["a", "b", "c", "d"]))
    assert "no train record has the label(s) 'c', 'd': the model cannot learn to predict them" in caplog.text
    check_task(TrainOptions(metric="recall"), DatasetSplits("jsonl", {"train": records("a", "b", "c")}, labels=["a", "b", "c"]))  # no dev: unused
    (tmp_path / "file").write_text("")
    for option in ("output_dir", "cache_dir"):
        with pytest.raises(OptionError, match=f"--{option.replace('_', '-')} {tmp_path / 'file'}: a file, not a folder"):
            train(TrainOptions(**{option: str(tmp_path / "file")}), two)
        under = tmp_path / "file" / "sub" / "run"
        with pytest.raises(OptionError, match=f"--{option.replace('_', '-')} {under}: {tmp_path / 'file'} is a file, so"):
            train(TrainOptions(**{option: str(under)}), two)
        # Permissions do not tell (the tests may run as root): a folder under /proc cannot be made all the same.
        if Path("/proc/self").is_dir():
            with pytest.raises(OptionError, match=f"--{option.replace('_', '-')} /proc/clfa/run: it would be made in /proc, "
                                                  r"which cannot be written \(No such file or directory\)"):
                train(TrainOptions(**{option: "/proc/clfa/run"}), two)
            with pytest.raises(OptionError, match=f"--{option.replace('_', '-')} /proc/self: it cannot be written"):
                train(TrainOptions(**{option: "/proc/self"}), two)
    if Path("/proc/self").is_dir():  # a run that keeps no cache does not need the folder
        with pytest.raises(OptionError) as refused:
            train(TrainOptions(cache_dir="/proc/clfa", image_cache=False, alignment="none", text_model=str(tmp_path / "no-model")), two)
        assert str(refused.value).startswith("--text-model ")


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


class DivergeAfterFirstEpoch(TrainerCallback):
    def on_epoch_end(self, args, state, control, lr_scheduler=None, **kwargs):
        lr_scheduler.base_lrs = [1e30 for _ in lr_scheduler.base_lrs]


def test_a_run_whose_loss_goes_nan_after_a_good_dev_checkpoint_keeps_that_checkpoint(tiny_models, tiny_dataset, tmp_path):
    metrics = train(tiny_options(tiny_models, tmp_path, epochs=3), load_dataset("jsonl", tiny_dataset), callbacks=[DivergeAfterFirstEpoch()])
    assert metrics["train"]["loss"] is None and metrics["train"]["weights_finite"]
    assert metrics["best_checkpoint"].endswith("checkpoint-6")  # the first epoch's, from before the divergence
    weights = load_file(tmp_path / "run" / "model.safetensors")
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())


def test_experiment_trackers_are_checked_before_any_work(monkeypatch):
    from transformers.integrations import integration_utils as hf

    assert experiment_trackers("none") == [] and experiment_trackers("all") == ["all"]
    assert experiment_trackers(" tensorboard ") == ["tensorboard"]
    for name in ("wandb", "azure_ml"):  # azure_ml is asked directly: the list of available trackers leaves it out
        monkeypatch.setattr(hf, {"wandb": "is_wandb_available", "azure_ml": "is_azureml_available"}[name], lambda: False)
        with pytest.raises(OptionError, match=rf"--report-to tensorboard,{name}: {name} cannot run here \(its package is not installed"):
            experiment_trackers(f"tensorboard,{name}")
    monkeypatch.setattr(hf, "is_wandb_available", lambda: True)
    assert experiment_trackers("wandb,tensorboard") == ["wandb", "tensorboard"]


def test_torchrun_two_processes_split_the_batches_log_every_process_and_score_each_sample_once(tiny_models, tmp_path):
    """``torchrun -m clfa.cli train`` on a CPU-only machine: two gloo processes, each a half of every global batch. The
    logged loss is the Trainer's mean over the processes, and so must be the CE and alignment parts beside it, so that
    loss = CE + alignment holds in the logs as in one process. Dev and test sizes that the processes cannot split
    evenly are scored sample for sample: no padding duplicates, none lost."""
    import subprocess
    import sys

    data = write_dataset(tmp_path / "data", {"train": 48, "dev": 13, "test": 15})
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "clfa.cli", "train",
               "--dataset", "jsonl", "--data-dir", str(data), "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache"),
               "--text-model", tiny_models["text"], "--image-model", tiny_models["image"], "--teacher", tiny_models["teacher"],
               "--mapping-hidden-dim", "32", "--fusion-layers", "1", "--fusion-heads", "2", "--fusion-ffn-dim", "32",
               "--epochs", "2", "--eval-batch-size", "4", "--logging-steps", "1", "--num-workers", "0", "--report-to", "none",
               "--progress", "false"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 2 * 48 // (8 * 2)  # a global batch of 16: half the single-process steps
    assert run.stdout.count("best dev checkpoint") == 1  # one summary, from the first process
    state = json.loads(max((out / "checkpoints").glob("checkpoint-*/trainer_state.json")).read_text())
    logged = [entry for entry in state["log_history"] if "loss" in entry]
    assert len(logged) == 6
    for entry in logged:  # the Trainer rounds the loss to 4 significant digits in its log, the parts to 4 decimals
        assert entry["loss"] == pytest.approx(entry["ce_loss"] + entry["alignment_loss"], abs=2e-3), entry
    assert (metrics["dev"]["num_samples"], metrics["test"]["num_samples"]) == (13, 15)
    assert sum(map(sum, metrics["test"]["confusion_matrix"]["matrix"])) == 15


def test_cuda_graph_option_trains_exactly_as_the_trainer_steps_do(tiny_models, tiny_dataset, tmp_path):
    """--cuda-graph moves clipping and the AdamW update into the training step (on a GPU captured with the rest of
    it); where no GPU captures it, the run must be the standard one, weight for weight, metric for metric."""
    data = load_dataset("jsonl", tiny_dataset)  # 48 training samples: no partial batch for --cuda-graph to drop
    runs = {graph: train(tiny_options(tiny_models, tmp_path / str(graph), epochs=2, cuda_graph=graph), data) for graph in (False, True)}
    assert runs[True]["train"]["steps"] == runs[False]["train"]["steps"] == 12
    for split in ("dev", "test"):
        assert runs[True][split] == runs[False][split]
    weights = {graph: load_file(tmp_path / str(graph) / "run" / "model.safetensors") for graph in runs}
    for name, tensor in weights[False].items():
        torch.testing.assert_close(weights[True][name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    state = json.loads(next((tmp_path / "True" / "run" / "checkpoints").glob("checkpoint-*/trainer_state.json")).read_text())
    logged = [entry for entry in state["log_history"] if "loss" in entry]
    assert logged and all({"ce_loss", "alignment_loss"} <= entry.keys() for entry in logged)
    # Above the default max_grad_norm of 1: clipping, which the whole step folds into the update, changed every
    # logged step.
    assert all(entry["grad_norm"] > 1.0 for entry in logged)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="captures the step only on a GPU")
@pytest.mark.parametrize("overlap", [False, True], ids=["one_stream", "side_by_side"])
def test_captured_steps_learn_with_dropout_evaluate_and_resume_on_a_gpu(tiny_models, tiny_dataset, tmp_path, overlap):
    """Dropout draws new random numbers at every replay; evaluation, checkpoints, a resume (which captures again)
    and the best-checkpoint reload all happen around a captured step."""
    data = load_dataset("jsonl", tiny_dataset)
    common = dict(epochs=8, cuda_graph=True, overlap_towers=overlap, dropout=0.1)
    full = train(tiny_options(tiny_models, tmp_path / "full", **common), data)
    assert full["test"]["accuracy"] >= 0.8 and full["train"]["steps"] == 8 * 6
    assert full["best_checkpoint"]
    opts = tiny_options(tiny_models, tmp_path / "cut", **common)
    with pytest.raises(KeyboardInterrupt):
        train(opts, data, callbacks=[Interrupt()])
    with pytest.raises(OptionError, match=r"holds checkpoints of an earlier run: add --resume to continue it"):
        train(opts, data)  # a fresh run would mix its checkpoints with these
    resumed = train(opts, data, resume=True)
    assert resumed["train"]["steps"] == full["train"]["steps"]
    assert resumed["test"]["accuracy"] >= 0.8


def test_cuda_graph_refuses_what_a_captured_step_cannot_do(tiny_models, tiny_dataset, tmp_path):
    opts = tiny_options(tiny_models, tmp_path, cuda_graph=True, gradient_accumulation_steps=2, compile_mode="reduce-overhead")
    with pytest.raises(ValueError, match=r"gradient accumulation \(2 micro-batches.*'reduce-overhead'"):
        train(opts, load_dataset("jsonl", tiny_dataset))
    assert not (tmp_path / "cache").exists()  # refused before any cache was filled
    # Arguments of one's own may ask for what clfa's options cannot: the Trainer refuses it too.
    opts = tiny_options(tiny_models, tmp_path, cuda_graph=True)
    args = training_arguments(opts, has_dev=False)
    args.gradient_checkpointing = True
    with pytest.raises(ValueError, match=r"does not support gradient checkpointing \(it saves and restores"):
        build_trainer(opts, build_model(opts, ["0", "1"], "1"), None, [], args=args)



def test_cuda_graph_refuses_a_compile_mode_set_for_accelerate(tiny_models, tiny_dataset, tmp_path, monkeypatch):
    # `accelerate launch` passes its compile mode in the environment, where the Trainer picks it up.
    monkeypatch.setenv("ACCELERATE_DYNAMO_MODE", "reduce-overhead")
    opts = tiny_options(tiny_models, tmp_path, cuda_graph=True, compile=True)
    with pytest.raises(OptionError, match=r"does not support torch.compile mode 'reduce-overhead', which captures"):
        train(opts, load_dataset("jsonl", tiny_dataset))
    # Arguments of one's own may pick a backend that captures graphs too.
    monkeypatch.delenv("ACCELERATE_DYNAMO_MODE")
    args = training_arguments(opts, has_dev=False)
    args.torch_compile_backend = "cudagraphs"
    with pytest.raises(OptionError, match=r"does not support torch.compile backend 'cudagraphs'"):
        build_trainer(opts, build_model(opts, ["0", "1"], "1"), None, [], args=args)


def test_cuda_graph_refuses_a_compile_backend_set_for_accelerate_without_compile(tiny_models, tiny_dataset, tmp_path,
                                                                                 monkeypatch):
    # A backend in the environment makes the Trainer compile the model even though --compile is off.
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "cudagraphs")
    opts = tiny_options(tiny_models, tmp_path, cuda_graph=True)
    with pytest.raises(OptionError, match=r"does not support torch.compile backend 'cudagraphs'"):
        train(opts, load_dataset("jsonl", tiny_dataset))
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "inductor")
    monkeypatch.setenv("ACCELERATE_DYNAMO_MODE", "max-autotune")
    with pytest.raises(OptionError, match=r"does not support torch.compile mode 'max-autotune'"):
        build_trainer(opts, build_model(opts, ["0", "1"], "1"), None, [], args=training_arguments(opts, has_dev=False))
    # A mode alone compiles nothing, so it is no reason to refuse.
    monkeypatch.delenv("ACCELERATE_DYNAMO_BACKEND")
    check_cuda_graph_support(training_arguments(opts, has_dev=False))


def test_a_compile_backend_set_for_accelerate_is_taken_as_compiling_without_compile(tiny_models, tiny_dataset, tmp_path,
                                                                                    monkeypatch):
    """The Trainer compiles with ACCELERATE_DYNAMO_BACKEND whatever --compile says: the last partial batch goes (a
    new shape would recompile), and --fuse-linears has a graph to rewrite."""
    data = load_dataset("jsonl", tiny_dataset)
    opts = tiny_options(tiny_models, tmp_path)
    model = build_model(opts, data.labels, data.positive_label)
    train_set = [{"input_ids": torch.zeros(4, dtype=torch.long)}] * 13
    eager = build_trainer(opts, model, None, train_set, args=training_arguments(opts, has_dev=False))
    assert len(eager.get_train_dataloader()) == 2  # 8 + 5
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "inductor")
    args = training_arguments(opts, has_dev=False)
    assert not args.torch_compile
    assert len(build_trainer(opts, model, None, train_set, args=args).get_train_dataloader()) == 1
    check_fuse_linears_support(args)
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "aot_eager")
    with pytest.raises(OptionError, match="--fuse-linears is a pass of .* inductor backend, not of 'aot_eager'"):
        check_fuse_linears_support(args)


def test_overlap_towers_without_cuda_graph_is_refused_before_any_cache(tiny_models, tiny_dataset, tmp_path):
    opts = tiny_options(tiny_models, tmp_path, overlap_towers=True)
    with pytest.raises(ValueError, match="--overlap-towers .* needs --cuda-graph"):
        train(opts, load_dataset("jsonl", tiny_dataset))
    assert not (tmp_path / "cache").exists()


def test_fuse_linears_without_compile_is_refused_before_any_cache(tiny_models, tiny_dataset, tmp_path):
    opts = tiny_options(tiny_models, tmp_path, fuse_linears=True)
    with pytest.raises(ValueError, match="--fuse-linears .* needs --compile"):
        train(opts, load_dataset("jsonl", tiny_dataset))
    assert not (tmp_path / "cache").exists()
    # The Trainer refuses it too, for code that builds one itself, and with a backend that is not inductor.
    with pytest.raises(ValueError, match="--fuse-linears .* needs --compile"):
        build_trainer(opts, build_model(opts, ["0", "1"], "1"), None, [])
    opts.compile = True
    args = training_arguments(opts, has_dev=False)
    args.torch_compile_backend = "aot_eager"
    with pytest.raises(ValueError, match="--fuse-linears is a pass of .* inductor backend, not of 'aot_eager'"):
        build_trainer(opts, build_model(opts, ["0", "1"], "1"), None, [], args=args)


def children() -> set[int]:
    return {child.pid for child in multiprocessing.active_children()}


class LoaderWorkers(TrainerCallback):
    """Records the child processes (the data loader workers) alive at each training and evaluation step."""

    def __init__(self):
        self.pids: set[int] = set()

    def on_step_end(self, args, state, control, **kwargs):
        self.pids |= children()

    def on_prediction_step(self, args, state, control, **kwargs):
        self.pids |= children()


def test_loader_workers_end_with_the_call_that_started_them(tiny_models, tiny_dataset, tmp_path):
    """Persistent loader workers end when train, evaluate or predict ends, not when the garbage collector frees the
    Trainer (it would find their queues closed and wait 5 s for each worker); a later call starts new ones."""
    from transformers import AutoImageProcessor, AutoTokenizer

    from clfa.data.processing import CLFADataset, ImageTransform

    before = children()
    data = load_dataset("jsonl", tiny_dataset)
    workers = LoaderWorkers()
    metrics = train(tiny_options(tiny_models, tmp_path / "run", epochs=1, num_workers=2), data, callbacks=[workers])
    assert metrics["train"]["steps"] == 6 and len(workers.pids - before) >= 2
    assert children() <= before

    # The Trainer keeps its evaluation loader for the next evaluation, which then starts workers of its own.
    opts = tiny_options(tiny_models, tmp_path / "again", epochs=1, num_workers=2, alignment="none", image_cache=False)
    model = build_model(opts, data.labels, data.positive_label)
    transform = ImageTransform(AutoImageProcessor.from_pretrained(opts.image_model))
    dev = CLFADataset(data["dev"], AutoTokenizer.from_pretrained(opts.text_model), transform, model.config.max_text_length,
                      model.config.label2id)
    # No evaluation during training: the calls here are the evaluations.
    trainer = build_trainer(opts, model, transform, dev, dev, callbacks=[workers], args=training_arguments(opts, has_dev=False))
    results = []
    for call in (trainer.evaluate, trainer.train, trainer.evaluate):
        workers.pids.clear()
        results.append(call())
        assert len(workers.pids - before) >= 2 and children() <= before, call.__name__
    assert results[2]["eval_loss"] != results[0]["eval_loss"]  # trained in between


def test_attention_backends_are_those_of_training_evaluation_and_prediction(tiny_models, tiny_dataset, tmp_path, fused_attention_kernels):
    from transformers import AutoImageProcessor, AutoTokenizer, set_seed

    from clfa.data.processing import CLFADataset, ImageTransform

    data = load_dataset("jsonl", tiny_dataset)
    runs = {}
    for backends in (None, "math"):
        opts = tiny_options(tiny_models, tmp_path / str(backends), max_steps=2, alignment="none", image_cache=False,
                            attention_backends=backends)
        set_seed(0)
        model = build_model(opts, data.labels, data.positive_label)
        transform = ImageTransform(AutoImageProcessor.from_pretrained(opts.image_model))
        tokenizer = AutoTokenizer.from_pretrained(opts.text_model)
        train_set, dev = (CLFADataset(data[split], tokenizer, transform, model.config.max_text_length, model.config.label2id)
                          for split in ("train", "dev"))
        trainer = build_trainer(opts, model, transform, train_set, dev, args=training_arguments(opts, has_dev=False))
        calls, results = [], []
        for call in (trainer.evaluate, trainer.train, lambda: trainer.predict(dev)):
            with fused_attention_kernels() as kernels:
                results.append(call())
            calls.append(kernels.calls)
        runs[backends] = (results[0]["eval_loss"], calls)
        assert torch.backends.cuda.flash_sdp_enabled()  # PyTorch's own choice again once the calls have ended
    default_loss, default_calls = runs[None]
    math_loss, math_calls = runs["math"]
    assert all(sum(calls.values()) > 0 for calls in default_calls)  # on a CPU its flash kernel, on a GPU another
    assert math_calls == [Counter()] * 3
    assert math_loss == pytest.approx(default_loss, rel=1e-5)  # the same model, before training: the same loss


def test_an_unknown_attention_backend_is_refused_before_any_cache(tiny_models, tiny_dataset, tmp_path):
    opts = tiny_options(tiny_models, tmp_path, attention_backends="flash,fastest")
    with pytest.raises(ValueError, match=r"unknown backend\(s\) \['fastest'\]"):
        train(opts, load_dataset("jsonl", tiny_dataset))
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("fusion", ["cross_attention", "concat", "co_attention", "text_only", "image_only"])
def test_the_parameters_outside_the_loss_are_found(tiny_models, tmp_path, fusion):
    """DDP fails on a parameter that gets no gradient unless it searches each backward for them, so a distributed
    run searches only when the model has some: a whole student in a single-modality baseline without alignment."""
    for alignment_weight in (1.0, 0.0):
        model = build_model(tiny_options(tiny_models, tmp_path, fusion=fusion, alignment_weight=alignment_weight), ["0", "1"], "1")
        rng = torch.get_rng_state()
        unused = unused_parameters(model)
        tower = {"text_only": "image", "image_only": "text"}.get(fusion) if alignment_weight == 0 else None
        assert (unused and {name.split(".")[0] for name in unused}) == ({f"{tower}_model", f"{tower}_mapping"} if tower else [])
        # The probe leaves no gradients behind, trains as before, and draws no random numbers.
        assert model.training and all(p.grad is None for p in model.parameters()) and torch.equal(torch.get_rng_state(), rng)


def test_a_student_whose_pooling_head_feeds_no_output_leaves_it_unused(tiny_models, tmp_path):
    """A CLIP vision tower as the image student: its last layer norm only feeds the pooled output, which CLFA does
    not read."""
    small = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    CLIPVisionModel(CLIPVisionConfig(image_size=32, patch_size=8, **small)).save_pretrained(tmp_path / "clip-vision")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(tmp_path / "clip-vision")
    model = build_model(tiny_options(tiny_models, tmp_path, image_model=str(tmp_path / "clip-vision")), ["0", "1"], "1")
    assert unused_parameters(model) == ["image_model.post_layernorm.weight", "image_model.post_layernorm.bias"]
    assert training_arguments(tiny_options(tiny_models, tmp_path), has_dev=False, find_unused_parameters=True).ddp_find_unused_parameters
