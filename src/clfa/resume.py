"""Continuing a training run from a checkpoint: each checkpoint records the run that made it, and a run that would
continue it differently is refused before any work."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from transformers import TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from clfa import __version__
from clfa.configuration import MODEL_OPTIONS, CLFAConfig
from clfa.data.registry import DatasetSplits
from clfa.errors import OptionError, first_line
from clfa.options import TrainOptions

logger = logging.getLogger(__name__)

# Written into each checkpoint beside the Trainer's files, whose record of the run's arguments is a pickle.
RUN_FILE = "clfa_run.json"

# Training options a resumed run must share with its checkpoint, besides the model's: the optimiser and scheduler
# states restore the learning rate and weight decay they were made with, so new ones would not apply; another
# accumulation or seed places the resumed steps on other data than the steps they continue; and another metric would
# weigh new dev scores against the best checkpoint's score in the old one. Epochs, steps and warm-up may change: a
# run may be extended, and the schedule follows.
RUN_OPTIONS = ("learning_rate", "weight_decay", "gradient_accumulation_steps", "seed", "metric")

# What a checkpoint's weights and math were made with, besides MODEL_OPTIONS, by the flag that sets each.
_MODEL_KEYS = {"text_model_name": "--text-model", "image_model_name": "--image-model", "teacher_model_name": "--teacher",
               "align_dim": "--align-dim", "labels": "labels", "positive_label": "--positive-label",
               "normalize_text": "--normalize-text"}


def run_record(opts: TrainOptions, data: DatasetSplits) -> dict:
    return {"options": opts.to_dict(), "data": {"dataset": data.name, "train_samples": len(data["train"])},
            "clfa_version": __version__}


class RecordRun(TrainerCallback):
    """Writes :func:`run_record` into each checkpoint the Trainer saves."""

    def __init__(self, record: dict):
        self.record = record

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            (checkpoint / RUN_FILE).write_text(json.dumps(self.record, indent=2))


def check_resumed_run(checkpoint: Path, record: dict) -> None:
    """The run to resume trains on the data and with the :data:`RUN_OPTIONS` of the run that saved ``checkpoint``."""
    if not checkpoint.is_dir():
        raise OptionError(f"--resume: {checkpoint} is not a checkpoint folder")
    try:
        saved = json.loads((checkpoint / RUN_FILE).read_text())
        saved_options, saved_data = saved["options"], saved["data"]
        if not isinstance(saved_options, dict) or not isinstance(saved_data, dict):
            raise ValueError("options and data are not mappings")
    except FileNotFoundError:
        logger.warning("%s does not record the options and data of its run (it predates %s): resuming without checking "
                       "%s and the training set", checkpoint, RUN_FILE, ", ".join(_flag(name) for name in RUN_OPTIONS))
        return
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise OptionError(f"--resume: cannot read {checkpoint / RUN_FILE} ({first_line(err)})") from None
    differ = [f"{_flag(name)} {saved_options.get(name)} (now {record['options'][name]})"
              for name in RUN_OPTIONS if name in saved_options and saved_options[name] != record["options"][name]]
    before, now = saved_data, record["data"]
    if (before.get("dataset"), before.get("train_samples")) != (now["dataset"], now["train_samples"]):
        differ.append(f"a training set of {before.get('train_samples')} samples of '{before.get('dataset')}' "
                      f"(now {now['train_samples']} of '{now['dataset']}')")
    if differ:
        raise OptionError(f"--resume: {checkpoint} was made with {', '.join(differ)}; resume with the options and data "
                          "of that run")


def check_resume(config: CLFAConfig, checkpoint: Path) -> None:
    """A resumed run builds the model its checkpoint was made with: other layers would fail to load deep in the
    Trainer, and other labels or loss settings would silently change the task halfway."""
    try:
        # Through the config class, so that an option the checkpoint predates reads as its default.
        saved = CLFAConfig.from_dict(json.loads((checkpoint / "config.json").read_text()))
    except (OSError, ValueError, TypeError) as err:
        raise OptionError(f"--resume: cannot read the model config of {checkpoint} ({first_line(err)})") from None
    flags = {name: _flag(name) for name in MODEL_OPTIONS} | _MODEL_KEYS
    if saved.normalize_text is None:  # a checkpoint from before it was recorded: nothing to hold the run to
        del flags["normalize_text"]
        logger.warning("%s does not record whether its run rewrote the texts (--normalize-text); resuming %s it",
                       checkpoint, "with" if config.normalize_text else "without")
    differ = [f"{flag} {_shown(getattr(saved, key, None))} (now {_shown(getattr(config, key, None))})"
              for key, flag in flags.items() if not _same(key, getattr(saved, key, None), getattr(config, key, None))]
    if differ:
        raise OptionError(f"--resume: {checkpoint} was made with {', '.join(differ)}; resume with the options of that run")


def _same(key: str, saved, now) -> bool:
    if key.endswith("_model_name") and saved and now and Path(saved).exists() and Path(now).exists():
        return Path(saved).resolve() == Path(now).resolve()  # bert/ and ./bert are one folder
    return saved == now


def check_resumed_batches(checkpoint: Path, state: dict, args: TrainingArguments) -> None:
    """The Trainer places a resumed run by the checkpoint's step count (``state``: its trainer_state.json): with
    another batch size those steps were other amounts of data, and the run would train more or fewer epochs than
    its options say."""
    saved = state.get("train_batch_size")
    if saved is not None and saved != args.train_batch_size:
        raise OptionError(f"--resume: {checkpoint} was made with batches of {saved} (now {args.train_batch_size}); "
                          "resume with the --batch-size of that run")


def trainer_state(checkpoint: Path) -> dict:
    """The checkpoint's trainer_state.json, whose ``global_step`` is read as a whole number."""
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        state["global_step"] = int(state["global_step"])
        return state
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise OptionError(f"--resume: cannot read the step of {checkpoint} ({first_line(err)})") from None


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _shown(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else "none" if value is None else str(value)
