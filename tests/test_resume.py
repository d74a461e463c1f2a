"""What a checkpoint records of its run, and which resumed runs are refused (end to end in test_training.py)."""

import dataclasses
import json
import shutil

import pytest
from transformers import TrainerState, TrainingArguments

from clfa.data.registry import load_dataset
from clfa.errors import OptionError
from clfa.options import TrainOptions
from clfa.resume import (RUN_FILE, RecordRun, check_checkpoint_files, check_resume, check_resumed_run, check_resumed_states,
                         check_resumed_steps, run_record, trainer_state)
from clfa.training import model_config, train


def small_options(tiny_models, tmp_path, **kwargs) -> TrainOptions:
    models = {"text_model": tiny_models["text"], "image_model": tiny_models["image"], "teacher": tiny_models["teacher"]}
    return TrainOptions(**(models | dict(output_dir=str(tmp_path / "run"), mapping_hidden_dim=32, fusion_layers=1, fusion_heads=2,
                                         fusion_ffn_dim=32, report_to="none") | kwargs))


def saved_checkpoint(tmp_path, record: dict, world_process_zero: bool = True):
    args = TrainingArguments(output_dir=str(tmp_path / "checkpoints"), report_to=[], use_cpu=True)
    checkpoint = tmp_path / "checkpoints" / "checkpoint-12"
    checkpoint.mkdir(parents=True)
    state = TrainerState(global_step=12, is_world_process_zero=world_process_zero)
    RecordRun(record).on_save(args, state, None)
    return checkpoint


def test_a_checkpoint_records_its_run_and_holds_the_resumed_run_to_it(tiny_models, tiny_dataset, tmp_path):
    data = load_dataset("jsonl", tiny_dataset)
    record = run_record(small_options(tiny_models, tmp_path), data)
    checkpoint = saved_checkpoint(tmp_path, record)
    saved = json.loads((checkpoint / RUN_FILE).read_text())
    assert saved["processes"] == 1 and saved["data"]["dataset"] == "jsonl" and saved["data"]["settings"] == {}
    assert saved["data"]["train"]["samples"] == 48 and saved["data"]["dev"]["samples"] == 16
    assert saved["options"]["learning_rate"] == 1e-5 and saved["options"]["metric"] == "f1"
    assert check_resumed_run(checkpoint, record) == saved
    # A run may be extended, and its warm-up and speed settings may change; its data may move to another folder.
    moved = load_dataset("jsonl", shutil.copytree(tiny_dataset, tmp_path / "moved"))
    longer = small_options(tiny_models, tmp_path, epochs=30, warmup_ratio=0.2, num_workers=0, precision="fp32")
    check_resumed_run(checkpoint, run_record(longer, moved))
    changed = small_options(tiny_models, tmp_path, seed=7, metric="accuracy", weight_decay=0.0)
    with pytest.raises(OptionError, match=r"checkpoint-12 was made with --seed 42 \(now 7\), --weight-decay 0.01 \(now 0.0\), "
                                          r"--metric f1 \(now accuracy\); resume with the options and data of that run$"):
        check_resumed_run(checkpoint, run_record(changed, data))


def test_a_resume_on_other_data_is_refused_with_what_changed(tiny_models, tiny_dataset, tmp_path):
    data = load_dataset("jsonl", tiny_dataset)
    opts = small_options(tiny_models, tmp_path)
    checkpoint = saved_checkpoint(tmp_path, run_record(opts, data))
    # The same number of train records, one of them another: the digest of the records tells.
    other = dataclasses.replace(data, splits=data.splits | {"train": data["train"][:-1] + [data["dev"][0]]})
    no_dev = dataclasses.replace(data, splits={"train": data["train"], "test": data["test"]})
    filtered = dataclasses.replace(data, options={"mmsd_filter": "substring"})
    for changed, says in ((other, r"a train split of other records \(of the same number, 48\)"),
                          (no_dev, r"a dev split of 16 samples \(now none\)"),
                          # The reader's settings say why the records differ, so they are not named besides.
                          (filtered, r"--mmsd-filter not given \(now substring\); resume"),
                          (dataclasses.replace(data, name="mmsd"), r"the dataset jsonl \(now mmsd\)")):
        with pytest.raises(OptionError, match=r"checkpoint-12 was made with " + says):
            check_resumed_run(checkpoint, run_record(opts, changed))
    check_resumed_run(checkpoint, run_record(opts, dataclasses.replace(data, name="csv")))  # one reader for both
    # Labels given that the first run read from its train file: the same task (the model's config holds them).
    check_resumed_run(checkpoint, run_record(opts, load_dataset("jsonl", tiny_dataset, labels=["negative", "positive"])))


def test_a_resume_with_steps_of_another_size_is_refused(tiny_models, tiny_dataset, tmp_path):
    record = run_record(small_options(tiny_models, tmp_path), load_dataset("jsonl", tiny_dataset)) | {"drops_last_batch": False}
    args = TrainingArguments(output_dir=str(tmp_path / "checkpoints"), per_device_train_batch_size=8,
                             gradient_accumulation_steps=2, report_to=[], use_cpu=True)
    state = {"train_batch_size": 8}
    check_resumed_steps(tmp_path, state, record | {"processes": 1}, args, record)
    with pytest.raises(OptionError, match=r"was made by 2 process\(es\) \(now 1\), whose steps were 32 samples \(now 16\); "
                                          r"resume with 2 process\(es\)"):
        check_resumed_steps(tmp_path, state, record | {"processes": 2}, args, record)
    # The trainer state's batch counts the GPUs one process drives: checked with a record or without.
    for saved in (None, record | {"processes": 1}):
        with pytest.raises(OptionError, match=r"was made with batches of 16 per process \(now 8\); resume with the "
                                              r"--batch-size and the GPUs of that run"):
            check_resumed_steps(tmp_path, {"train_batch_size": 16}, saved, args, record)
    # Compiled or captured steps drop each epoch's last partial batch: 48 samples in batches of 8 leave none.
    check_resumed_steps(tmp_path, state, record | {"processes": 1}, args, record | {"drops_last_batch": True})
    odd = record | {"data": record["data"] | {"train": {"samples": 45, "sha256": "-"}}}
    with pytest.raises(OptionError, match=r"was made without --compile or --cuda-graph, which drop each epoch's last partial "
                                          r"batch \(here of 5 samples\), so its epochs had one batch more; resume without them"):
        check_resumed_steps(tmp_path, state, odd | {"processes": 1}, args, odd | {"drops_last_batch": True})


def test_only_the_main_process_writes_the_record(tiny_models, tiny_dataset, tmp_path):
    record = run_record(small_options(tiny_models, tmp_path), load_dataset("jsonl", tiny_dataset))
    assert not (saved_checkpoint(tmp_path, record, world_process_zero=False) / RUN_FILE).exists()


def test_a_checkpoint_without_a_record_resumes_with_a_warning_and_a_broken_one_is_refused(tiny_models, tiny_dataset, tmp_path,
                                                                                        caplog):
    record = run_record(small_options(tiny_models, tmp_path), load_dataset("jsonl", tiny_dataset))
    checkpoint = tmp_path / "checkpoint-3"
    checkpoint.mkdir()
    assert check_resumed_run(checkpoint, record) is None
    assert (f"checkpoint-3 does not record the options and data of its run ({RUN_FILE}: a checkpoint of an older clfa, "
            "or one whose saving was cut short): resuming without checking --batch-size, --gradient-accumulation-steps, "
            "--seed, --learning-rate, --weight-decay, --metric and the data") in caplog.text
    for text, says in (('{"options": {}', "Expecting ',' delimiter"), ('{"options": [], "data": {}}', "not a record of options and data"),
                       ('{"options": {}, "data": {"settings": ["labels"]}}', "not a record of this clfa: ")):
        (checkpoint / RUN_FILE).write_text(text)
        with pytest.raises(OptionError, match=rf"--resume: cannot read .*checkpoint-3/{RUN_FILE} \({says}"):
            check_resumed_run(checkpoint, record)


def test_a_checkpoint_cut_short_while_saving_is_named_with_the_way_out(tmp_path):
    checkpoint = tmp_path / "checkpoint-12"
    with pytest.raises(OptionError, match=r"--resume: .*checkpoint-12 is not a checkpoint folder"):
        trainer_state(checkpoint)
    checkpoint.mkdir()
    with pytest.raises(OptionError, match=r"checkpoint-12 has no trainer_state.json: its saving was cut short; remove that "
                                          r"folder to resume from the checkpoint before it"):
        trainer_state(checkpoint)
    (checkpoint / "trainer_state.json").write_text('{"global_step": "x"}')
    with pytest.raises(OptionError, match=r"cannot read the step of .*checkpoint-12 in trainer_state.json \(invalid literal"):
        trainer_state(checkpoint)
    # Written in place, last: a kill while the Trainer wrote it leaves it cut short.
    (checkpoint / "trainer_state.json").write_text('{"global_step": 12, "log_history": [{"loss": 0.6')
    with pytest.raises(OptionError, match=r"^--resume: .*checkpoint-12/trainer_state.json is not whole \(Expecting .+\); remove "
                                          r".*checkpoint-12 to resume from the checkpoint before it$"):
        trainer_state(checkpoint)
    (checkpoint / "trainer_state.json").write_text('{"global_step": 12, "train_batch_size": 8}')
    assert trainer_state(checkpoint)["global_step"] == 12


def test_resume_takes_a_checkpoint_that_predates_recording_rewritten_texts(tiny_models, tmp_path, caplog):
    config = model_config(small_options(tiny_models, tmp_path), ["0", "1"], "1", normalize_text=True)
    recorded = config.to_dict()
    checkpoint = tmp_path / "checkpoint-4"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps(recorded | {"normalize_text": False}))
    with pytest.raises(OptionError, match=r"was made with --normalize-text False \(now True\)"):
        check_resume(config, checkpoint)
    del recorded["normalize_text"]  # its default would claim the run's texts were left as released
    (checkpoint / "config.json").write_text(json.dumps(recorded))
    check_resume(config, checkpoint)
    assert "checkpoint-4 does not record whether its run rewrote the texts (--normalize-text); resuming with it" in caplog.text


def test_a_resume_with_other_model_options_is_refused_before_the_students_load(tiny_models, tiny_dataset, tmp_path):
    # Students without weights: the refusal must come before anything tries to load them.
    students = {kind: shutil.copytree(tiny_models[kind], tmp_path / kind, ignore=shutil.ignore_patterns("*.safetensors"))
                for kind in ("text", "image")}
    opts = small_options(tiny_models, tmp_path, text_model=str(students["text"]), image_model=str(students["image"]))
    data = load_dataset("jsonl", tiny_dataset)
    checkpoint = saved_checkpoint(tmp_path, run_record(opts, data))
    (checkpoint / "trainer_state.json").write_text('{"global_step": 12, "train_batch_size": 8}')
    model_config(opts, data.labels, data.positive_label).to_json_file(checkpoint / "config.json")
    with pytest.raises(OptionError, match=r"checkpoint-12 was made with --fusion-layers 1 \(now 2\); resume with the options"):
        train(dataclasses.replace(opts, fusion_layers=2), data, resume=str(checkpoint))
    with pytest.raises(OSError, match="model.safetensors"):  # the same run goes on to load them
        train(opts, data, resume=str(checkpoint))


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.pt", "rng_state.pth"])
def test_a_checkpoint_file_cut_short_is_named_before_any_work(tmp_path, name):
    import torch
    from safetensors.torch import save_file

    checkpoint = tmp_path / "checkpoint-12"
    checkpoint.mkdir()
    save_file({"w": torch.zeros(64, 64)}, str(checkpoint / "model.safetensors"))
    torch.save({"state": {0: {"exp_avg": torch.zeros(64, 64)}}}, checkpoint / "optimizer.pt")
    torch.save({"cpu": torch.get_rng_state()}, checkpoint / "rng_state.pth")
    (checkpoint / "trainer_state.json").write_text("{}")
    check_checkpoint_files(checkpoint)  # whole
    whole = (checkpoint / name).read_bytes()
    for cut in (len(whole) - 1, 1000, 4):
        (checkpoint / name).write_bytes(whole[:cut])
        with pytest.raises(OptionError, match=rf"^--resume: .*checkpoint-12/{name} is not whole \(.+\); remove "
                                              r".*checkpoint-12 to resume from the checkpoint before it$"):
            check_checkpoint_files(checkpoint)


def test_a_checkpoint_of_several_processes_or_of_fp16_needs_the_states_of_each(tmp_path):
    checkpoint = tmp_path / "checkpoint-12"
    checkpoint.mkdir()
    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"):
        (checkpoint / name).touch()
    check_resumed_states(checkpoint, world_size=1, scaler=False)
    # A checkpoint without clfa_run.json (written before it was) is told another process count by its random states.
    with pytest.raises(OptionError, match=r"checkpoint-12 was made by 1 process \(now 2\), each with random states of its "
                                          r"own: resume with as many$"):
        check_resumed_states(checkpoint, world_size=2, scaler=False)
    (checkpoint / "rng_state.pth").rename(checkpoint / "rng_state_0.pth")
    with pytest.raises(OptionError, match=r"checkpoint-12 has no rng_state_1.pth \(the random generators' states\): "
                                          r"the run would go on"):
        check_resumed_states(checkpoint, world_size=2, scaler=False)
    (checkpoint / "rng_state_1.pth").touch()
    check_resumed_states(checkpoint, world_size=2, scaler=False)
    with pytest.raises(OptionError, match=r"made by 2 processes or more \(now 1\)"):
        check_resumed_states(checkpoint, world_size=1, scaler=False)
    for rank in (0, 1):
        (checkpoint / f"rng_state_{rank}.pth").unlink()
    (checkpoint / "rng_state.pth").touch()
    with pytest.raises(OptionError, match=r"checkpoint-12 has no scaler.pt \(the fp16 loss scale\): the run would go on"):
        check_resumed_states(checkpoint, world_size=1, scaler=True)
    (checkpoint / "model.safetensors").rename(tmp_path / "model.safetensors")
    with pytest.raises(OptionError, match=r"checkpoint-12 has no model.safetensors \(the weights\): the run would go on"):
        check_resumed_states(checkpoint, world_size=1, scaler=False)
    (checkpoint / "model.safetensors.index.json").touch()  # weights saved in shards
    check_resumed_states(checkpoint, world_size=1, scaler=False)


def test_a_checkpoint_without_a_record_beside_ones_with_it_was_cut_short_and_is_refused(tiny_models, tiny_dataset, tmp_path,
                                                                                          caplog):
    record = run_record(small_options(tiny_models, tmp_path), load_dataset("jsonl", tiny_dataset))
    saved_checkpoint(tmp_path, record)  # checkpoint-12, with its record
    cut = tmp_path / "checkpoints" / "checkpoint-24"
    cut.mkdir()
    with pytest.raises(OptionError, match=rf"--resume: .*checkpoint-24 has no {RUN_FILE}, which checkpoint-12 beside it have: "
                                          r"its saving was cut short; remove that folder to resume from the checkpoint before it$"):
        check_resumed_run(cut, record)
