"""End-to-end training through the Trainer on tiny models: best checkpoint, test metrics, resume, several processes."""

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, TrainerCallback

from clfa.data.registry import load_dataset
from clfa.data.records import DataError
from clfa.errors import OptionError
from clfa.options import TrainOptions
from clfa.predict import Predictor
from clfa.training import build_model, one_gpu_per_process, train, training_arguments, unused_parameters
from conftest import Interrupt, tiny_options, write_dataset


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
    args = training_arguments(TrainOptions(output_dir=str(tmp_path), metric=metric, report_to="none"), has_dev=True)
    assert (args.metric_for_best_model, args.greater_is_better, args.load_best_model_at_end) == (metric, True, True)
    args = training_arguments(TrainOptions(output_dir=str(tmp_path), metric=metric, report_to="none"), has_dev=False)
    assert (args.metric_for_best_model, args.load_best_model_at_end) == (None, False)  # no dev split: the last model


def test_one_process_that_sees_several_gpus_trains_on_one_and_says_how_to_use_all(tmp_path, caplog):
    """The Trainer would wrap the model in DataParallel: an alignment loss per GPU slice, and one loss part per GPU."""
    args = training_arguments(TrainOptions(output_dir=str(tmp_path), batch_size=8, report_to="none"), has_dev=False)
    assert args.n_gpu == 0 and not caplog.records  # this machine: nothing to change
    args._n_gpu = 2  # what TrainingArguments finds on a machine with two GPUs and no launcher
    with caplog.at_level("WARNING", logger="clfa"):
        assert one_gpu_per_process(args) is args
    assert (args.n_gpu, args.train_batch_size) == (1, 8)  # not 16: one batch of 8, on one GPU
    assert "2 GPUs are visible" in caplog.text and "torchrun --nproc_per_node 2" in caplog.text


def test_a_new_run_into_a_folder_holding_a_model_is_refused_not_written_over_it(tiny_models, tiny_dataset, tmp_path):
    """An exported model (no checkpoints), or a run whose checkpoints were removed to save space: a new run would replace
    its weights and scores without a word."""
    from clfa import CLFAModel

    opts = tiny_options(tiny_models, tmp_path)
    model = CLFAModel.from_encoders(tiny_models["text"], tiny_models["image"], labels=["negative", "positive"], align_dim=24,
                                    fusion_heads=2, max_text_length=12)
    model.save_pretrained(opts.output_dir)
    weights = (Path(opts.output_dir) / "model.safetensors").read_bytes()
    with pytest.raises(OptionError, match=r"--output-dir \S+run holds a trained model \(model.safetensors\), which a new run "
                                          r"would replace: give another --output-dir \(or remove that one\)$"):
        train(opts, load_dataset("jsonl", tiny_dataset))
    assert (Path(opts.output_dir) / "model.safetensors").read_bytes() == weights
    assert sorted(path.name for path in Path(opts.output_dir).iterdir()) == ["config.json", "model.safetensors"]


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


def test_a_checkpoint_cut_short_after_the_trainer_state_holds_the_record_of_its_run(tiny_models, tiny_dataset, tmp_path,
                                                                                   monkeypatch):
    """The Trainer writes trainer_state.json, then removes older checkpoints, then calls on_save: a run killed in between
    left a checkpoint that resumed without its run's record, and so without any check of the options and data."""
    import transformers.trainer

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("simulated kill after trainer_state.json, before on_save")

    data = load_dataset("jsonl", tiny_dataset)
    opts = tiny_options(tiny_models, tmp_path, epochs=2)
    with monkeypatch.context() as patch:
        patch.setattr(transformers.trainer, "rotate_checkpoints", killed)
        with pytest.raises(KeyboardInterrupt):
            train(opts, data)
    (checkpoint,) = (tmp_path / "run" / "checkpoints").glob("checkpoint-*")
    assert (checkpoint / "trainer_state.json").is_file() and (checkpoint / "clfa_run.json").is_file()
    with pytest.raises(OptionError, match=r"was made with --seed 42 \(now 7\), --learning-rate 0.001 \(now 0.05\)"):
        train(tiny_options(tiny_models, tmp_path, epochs=2, seed=7, learning_rate=5e-2), data, resume=True)


def test_an_extended_run_cut_short_after_its_model_leaves_no_metrics_of_the_model_it_replaced(tiny_models, tiny_dataset,
                                                                                             tmp_path, monkeypatch):
    """A run extended with --resume writes its model over the one it extends, then metrics.json: killed in between, the
    folder held the new model beside the old model's scores, which clfa export then shipped with it."""
    from clfa.trainer import CLFATrainer

    data = load_dataset("jsonl", tiny_dataset)
    first = train(tiny_options(tiny_models, tmp_path, epochs=1), data)
    out = tmp_path / "run"
    saved = CLFATrainer.save_model

    def killed_after_the_final_model(self, output_dir=None, _internal_call=False):
        saved(self, output_dir, _internal_call)
        if Path(output_dir) == out:
            raise KeyboardInterrupt("simulated kill after the final model, before metrics.json")

    monkeypatch.setattr(CLFATrainer, "save_model", killed_after_the_final_model)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_options(tiny_models, tmp_path, epochs=2), data, resume=True)
    assert not (out / "metrics.json").exists()  # not first["train"]["steps"] == 6 beside the model of 12 steps
    assert first["train"]["steps"] == 6 and not list(out.glob(".*.tmp"))
    monkeypatch.undo()
    again = train(tiny_options(tiny_models, tmp_path, epochs=2), data, resume=True)
    assert json.loads((out / "metrics.json").read_text())["train"]["steps"] == again["train"]["steps"] == 12


def test_a_finished_run_of_max_steps_resumed_takes_no_step_beyond_them(tiny_models, tiny_dataset, tmp_path):
    """A --max-steps run cut short in its final evaluation or model save is finished: resumed, it takes no step (the
    Trainer took one more, step max_steps + 1, and saved it as a checkpoint, when max_steps ended inside an epoch)."""
    data = load_dataset("jsonl", tiny_dataset)
    opts = tiny_options(tiny_models, tmp_path, max_steps=8, eval_steps=4)  # 6 steps an epoch: 8 ends inside the second
    first = train(opts, data)
    again = train(opts, data, resume=True)
    assert first["train"]["steps"] == again["train"]["steps"] == 8
    assert again["train"]["steps_this_run"] == 0 and again["train"]["loss"] is None and again["test"] == first["test"]
    assert sorted(path.name for path in (tmp_path / "run" / "checkpoints").glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-8"]


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


def test_a_checkpoint_without_a_state_or_its_best_checkpoint_is_refused_naming_it(tiny_models, tiny_dataset, tmp_path):
    """The Trainer brings back the optimizer, schedule and random states only from the files it finds, and the best
    checkpoint only if it is there; it went on without a word where one was missing (removed for the space, or a copy
    of the latest checkpoint alone), into another model than the run it continues."""
    data = load_dataset("jsonl", tiny_dataset)
    # A learning rate too small to change a prediction: the dev scores tie, and the first checkpoint stays the best.
    opts = tiny_options(tiny_models, tmp_path, epochs=3, learning_rate=1e-9)
    with pytest.raises(KeyboardInterrupt):
        train(opts, data, callbacks=[Interrupt(saves=2)])
    checkpoints = tmp_path / "run" / "checkpoints"
    assert json.loads((checkpoints / "checkpoint-12" / "trainer_state.json").read_text())["best_global_step"] == 6
    for name, holds in (("optimizer.pt", "AdamW's moments"), ("scheduler.pt", "the learning-rate schedule's place"),
                        ("rng_state.pth", "the random generators' states")):
        (checkpoints / "checkpoint-12" / name).rename(tmp_path / name)
        with pytest.raises(OptionError, match=rf"^--resume: .*checkpoint-12 has no {re.escape(name)} \({holds}\): the run would go "
                                              r"on from other states than it left; remove that folder to resume from the "
                                              r"checkpoint before it$"):
            train(opts, data, resume=True)
        (tmp_path / name).rename(checkpoints / "checkpoint-12" / name)
    shutil.move(checkpoints / "checkpoint-6", tmp_path)
    with pytest.raises(OptionError, match=r"^--resume: the best checkpoint of the run so far, checkpoint-6 \(dev f1 [\d.]+\), is "
                                          r"not in .*checkpoints: without it the run would keep another model than its best; "
                                          r"put that folder back beside checkpoint-12 to resume$"):
        train(opts, data, resume=True)
    shutil.move(tmp_path / "checkpoint-6", checkpoints)
    resumed = train(opts, data, resume=True)
    assert resumed["train"]["steps_this_run"] == 6 and resumed["best_checkpoint"] == str(checkpoints / "checkpoint-6")


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


class DivergeAfterFirstEpoch(TrainerCallback):
    def on_epoch_end(self, args, state, control, lr_scheduler=None, **kwargs):
        lr_scheduler.base_lrs = [1e30 for _ in lr_scheduler.base_lrs]


def test_a_run_whose_loss_goes_nan_after_a_good_dev_checkpoint_keeps_that_checkpoint(tiny_models, tiny_dataset, tmp_path):
    metrics = train(tiny_options(tiny_models, tmp_path, epochs=3), load_dataset("jsonl", tiny_dataset), callbacks=[DivergeAfterFirstEpoch()])
    assert metrics["train"]["loss"] is None and metrics["train"]["weights_finite"]
    assert metrics["best_checkpoint"].endswith("checkpoint-6")  # the first epoch's, from before the divergence
    weights = load_file(tmp_path / "run" / "model.safetensors")
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())


@pytest.fixture(scope="module")
def torchrun_run(tiny_models, tmp_path_factory):
    """``torchrun -m clfa.cli train`` on a CPU-only machine: two gloo processes, each a half of every global batch, with
    dev and test sizes that the processes cannot split evenly. Returns the finished command and its output folder."""
    import subprocess
    import sys

    tmp_path = tmp_path_factory.mktemp("torchrun")
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
    return run, out


def test_torchrun_two_processes_split_the_batches_log_every_process_and_score_each_sample_once(torchrun_run):
    """The logged loss is the Trainer's mean over the processes, and so must be the CE and alignment parts beside it,
    so that loss = CE + alignment holds in the logs as in one process. Dev and test sizes that the processes cannot
    split evenly are scored sample for sample: no padding duplicates, none lost."""
    run, out = torchrun_run
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


def test_each_process_of_a_torchrun_run_draws_its_own_dropout(torchrun_run):
    """Processes seeded alike drop the same units of their rows: two processes would train like one batch of copied
    dropout masks. The random state each process saved with a checkpoint is what its dropout drew from."""
    _, out = torchrun_run
    checkpoints = sorted((out / "checkpoints").glob("checkpoint-*"))
    assert [checkpoint.name for checkpoint in checkpoints] == ["checkpoint-3", "checkpoint-6"]  # one an epoch
    for checkpoint in checkpoints:
        states = [torch.load(checkpoint / f"rng_state_{rank}.pth", weights_only=False) for rank in (0, 1)]
        assert not torch.equal(states[0]["cpu"], states[1]["cpu"]), checkpoint.name


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


def test_fp16_is_refused_where_the_run_trains_on_the_cpu(tiny_models, tiny_dataset, tmp_path, monkeypatch, capsys):
    """accelerate turns fp16 off on the CPU without a word: the run would train in fp32 and record fp16."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(OptionError, match="--precision fp16: fp16 training needs a GPU.*use bf16 or fp32"):
        train(tiny_options(tiny_models, tmp_path, precision="fp16", max_steps=1), load_dataset("jsonl", tiny_dataset))
    assert not (tmp_path / "run").exists()
    # As is a trainer built from the options directly, as the training benchmark builds its own.
    with pytest.raises(OptionError, match="--precision fp16: fp16 training needs a GPU"):
        training_arguments(tiny_options(tiny_models, tmp_path, precision="fp16"), has_dev=False)
