"""What a checkpoint records of its run, and which resumed runs are refused (end to end in test_training.py)."""

import dataclasses
import json

import pytest
from transformers import TrainerState, TrainingArguments

from clfa.data.registry import load_dataset
from clfa.errors import OptionError
from clfa.options import TrainOptions
from clfa.resume import RUN_FILE, RecordRun, check_resume, check_resumed_run, run_record
from clfa.training import build_model


def small_options(tiny_models, tmp_path, **kwargs) -> TrainOptions:
    return TrainOptions(output_dir=str(tmp_path / "run"), text_model=tiny_models["text"], image_model=tiny_models["image"],
                        teacher=tiny_models["teacher"], mapping_hidden_dim=32, fusion_layers=1, fusion_heads=2,
                        fusion_ffn_dim=32, report_to="none", **kwargs)


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
    assert saved["data"] == {"dataset": "jsonl", "train_samples": len(data["train"])}
    assert saved["options"]["learning_rate"] == 1e-5 and saved["options"]["metric"] == "f1"
    check_resumed_run(checkpoint, record)
    # A run may be extended, and its warm-up and speed settings may change.
    longer = small_options(tiny_models, tmp_path, epochs=30, warmup_ratio=0.2, num_workers=0, precision="fp32")
    check_resumed_run(checkpoint, run_record(longer, data))
    changed = small_options(tiny_models, tmp_path, seed=7, metric="accuracy", weight_decay=0.0)
    with pytest.raises(OptionError, match=r"checkpoint-12 was made with --weight-decay 0.01 \(now 0.0\), --seed 42 \(now 7\), "
                                          r"--metric f1 \(now accuracy\); resume with the options and data of that run"):
        check_resumed_run(checkpoint, run_record(changed, data))
    renamed = dataclasses.replace(data, name="csv")
    with pytest.raises(OptionError, match=rf"a training set of {len(data['train'])} samples of 'jsonl' \(now {len(data['train'])} of 'csv'\)"):
        check_resumed_run(checkpoint, run_record(small_options(tiny_models, tmp_path), renamed))


def test_only_the_main_process_writes_the_record(tiny_models, tiny_dataset, tmp_path):
    record = run_record(small_options(tiny_models, tmp_path), load_dataset("jsonl", tiny_dataset))
    assert not (saved_checkpoint(tmp_path, record, world_process_zero=False) / RUN_FILE).exists()


def test_a_checkpoint_without_a_record_resumes_with_a_warning_and_a_broken_one_is_refused(tiny_models, tiny_dataset, tmp_path,
                                                                                        caplog):
    record = run_record(small_options(tiny_models, tmp_path), load_dataset("jsonl", tiny_dataset))
    checkpoint = tmp_path / "checkpoint-3"
    checkpoint.mkdir()
    check_resumed_run(checkpoint, record)
    assert f"checkpoint-3 does not record the options and data of its run (it predates {RUN_FILE})" in caplog.text
    assert "--learning-rate, --weight-decay, --gradient-accumulation-steps, --seed, --metric and the training set" in caplog.text
    (checkpoint / RUN_FILE).write_text('{"options": {}')
    with pytest.raises(OptionError, match=rf"--resume: cannot read .*checkpoint-3/{RUN_FILE} \("):
        check_resumed_run(checkpoint, record)
    (checkpoint / RUN_FILE).write_text('{"options": [], "data": {}}')
    with pytest.raises(OptionError, match=rf"--resume: cannot read .*checkpoint-3/{RUN_FILE} \(options and data are not mappings\)"):
        check_resumed_run(checkpoint, record)
    with pytest.raises(OptionError, match=r"--resume: .*checkpoint-30 is not a checkpoint folder"):
        check_resumed_run(tmp_path / "checkpoint-30", record)
    (checkpoint / RUN_FILE).write_text('{"options": {}}')
    with pytest.raises(OptionError, match=rf"--resume: cannot read .*checkpoint-3/{RUN_FILE} \('data'\)"):
        check_resumed_run(checkpoint, record)


def test_resume_takes_a_checkpoint_that_predates_recording_rewritten_texts(tiny_models, tmp_path, caplog):
    config = build_model(small_options(tiny_models, tmp_path), ["0", "1"], "1", normalize_text=True).config
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
