"""Continuing a training run from a checkpoint: each checkpoint records the run that made it, and a run that would
continue it differently is refused before any work."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import zipfile
from pathlib import Path

from safetensors import SafetensorError, safe_open
from transformers import TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from clfa import __version__
from clfa.configuration import MODEL_OPTIONS, CLFAConfig
from clfa.data.records import Record
from clfa.data.registry import DATASETS, PATH_OPTIONS, DatasetSplits
from clfa.errors import OptionError, first_line
from clfa.options import TrainOptions

logger = logging.getLogger(__name__)

# Written into each checkpoint beside the Trainer's files, whose record of the run's arguments is a pickle.
RUN_FILE = "clfa_run.json"

# Training options a resumed run must share with its checkpoint, besides the model's: the Trainer places a resumed
# run by its step count, so another batch, accumulation or seed would continue on other data than the steps it
# skips; the optimiser and scheduler states bring back the learning rate and weight decay they were made with, so new
# ones would not apply; and another metric would weigh new dev scores against the best checkpoint's score in the old
# one. Epochs, steps and warm-up may change: a run may be extended, and the schedule follows.
RUN_OPTIONS = ("batch_size", "gradient_accumulation_steps", "seed", "learning_rate", "weight_decay", "metric")

# What a checkpoint's weights and math were made with, besides MODEL_OPTIONS, by the flag that sets each.
_MODEL_KEYS = {"text_model_name": "--text-model", "image_model_name": "--image-model", "teacher_model_name": "--teacher",
               "align_dim": "--align-dim", "labels": "labels", "positive_label": "--positive-label",
               "normalize_text": "--normalize-text"}


def run_record(opts: TrainOptions, data: DatasetSplits) -> dict:
    """The options of a run and what its train and dev splits hold: the training steps are placed on the train split,
    and the best checkpoint is picked on the dev split."""
    # The reader's settings, but not where the files are (a dataset's folder may move between the runs), nor the
    # labels, which check_resume compares as the model has them: a run's labels read from its train file and the
    # same labels given with --labels are one task.
    settings = {key: value for key, value in data.options.items() if key not in PATH_OPTIONS | {"labels", "positive_label"}}
    return {"options": opts.to_dict(),
            "data": {"dataset": data.name, "settings": settings} | {split: _split_print(data.splits.get(split)) for split in ("train", "dev")},
            "clfa_version": __version__}


def _split_print(records: list[Record] | None) -> dict | None:
    """A split's size and a digest of its records (id, text, label, image file name: not the folder, which may move)."""
    if not records:
        return None
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps([record.id, record.text, record.label, Path(record.image).name]).encode())
    return {"samples": len(records), "sha256": digest.hexdigest()}


class RecordRun(TrainerCallback):
    """Writes :func:`run_record`, with the number of processes, into each checkpoint the Trainer saves.

    :class:`clfa.trainer.CLFATrainer` calls :meth:`write` as soon as a checkpoint's weights are saved, before the
    Trainer writes its trainer_state.json, which it writes last: a checkpoint whose saving was cut short (SIGKILL,
    Ctrl-C, power loss) then lacks trainer_state.json and is refused, rather than resumed unchecked for want of this
    record. ``on_save`` (after the whole checkpoint and the removal of older ones) only writes a record still missing,
    for another Trainer."""

    def __init__(self, record: dict):
        self.record = record

    def write(self, checkpoint: Path, world_size: int) -> None:
        (Path(checkpoint) / RUN_FILE).write_text(json.dumps(self.record | {"processes": world_size}, indent=2))

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            if not (checkpoint / RUN_FILE).is_file():
                self.write(checkpoint, args.world_size)


class FindBestCheckpoint(TrainerCallback):
    """A resumed run's state names its best checkpoint by where it was saved. In an output folder moved or copied
    since, that is the old place, or, gone, is forgotten by the Trainer, which would then keep its last model as the
    best. The best step's checkpoint in this run's folder is the one."""

    def on_train_begin(self, args, state, control, **kwargs):
        if state.best_global_step and (here := Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.best_global_step}").is_dir():
            state.best_model_checkpoint = str(here)


def check_resumed_run(checkpoint: Path, record: dict) -> dict | None:
    """The run to resume trains on the data and with the :data:`RUN_OPTIONS` of the run that saved ``checkpoint``;
    returns what the checkpoint recorded (None for a checkpoint without a record), for :func:`check_resumed_steps`."""
    try:
        saved = json.loads((checkpoint / RUN_FILE).read_text())
        if not isinstance(saved, dict) or not all(isinstance(saved.get(key), dict) for key in ("options", "data")):
            raise ValueError("not a record of options and data")
    except FileNotFoundError:
        # Beside checkpoints that have a record, this one's saving was cut short between the Trainer's files and the
        # record (clfa before the record was written with the weights): resumed, it would go on unchecked.
        if recorded := sorted(other.parent.name for other in checkpoint.parent.glob(f"{PREFIX_CHECKPOINT_DIR}-*/{RUN_FILE}")):
            raise OptionError(f"--resume: {checkpoint} has no {RUN_FILE}, which {', '.join(recorded)} beside it have: its "
                              "saving was cut short; remove that folder to resume from the checkpoint before it") from None
        logger.warning("%s does not record the options and data of its run (%s: a checkpoint of an older clfa, or one "
                       "whose saving was cut short): resuming without checking %s and the data", checkpoint, RUN_FILE,
                       ", ".join(_flag(name) for name in RUN_OPTIONS))
        return None
    except (OSError, ValueError) as err:
        raise OptionError(f"--resume: cannot read {checkpoint / RUN_FILE} ({first_line(err)})") from None
    try:
        differ = _differences(saved, record)
    except (KeyError, TypeError, AttributeError) as err:  # a record of another shape, written by hand or another version
        raise OptionError(f"--resume: cannot read {checkpoint / RUN_FILE} (not a record of this clfa: {first_line(err)})") from None
    if differ:
        raise OptionError(f"--resume: {checkpoint} was made with {', '.join(differ)}; resume with the options and data "
                          "of that run")
    return saved


def _differences(saved: dict, record: dict) -> list[str]:
    before, now = saved["options"], record["options"]
    differ = [f"{_flag(name)} {before[name]} (now {now[name]})" for name in RUN_OPTIONS if name in before and before[name] != now[name]]
    settings, now_settings = saved["data"].get("settings", {}), record["data"]["settings"]
    differ += [f"{_flag(key)} {_given(settings.get(key))} (now {_given(now_settings.get(key))})"
               for key in sorted(set(settings) | set(now_settings)) if settings.get(key) != now_settings.get(key)]
    was_read_by, now_read_by = (DATASETS.get(name) for name in (saved["data"].get("dataset"), record["data"]["dataset"]))
    if was_read_by is not now_read_by:  # jsonl and csv are one reader
        differ.append(f"the dataset {saved['data'].get('dataset')} (now {record['data']['dataset']})")
    elif settings == now_settings:  # else the settings already explain why the records differ
        for split in ("train", "dev"):
            if split in saved["data"] and (was := saved["data"][split]) != (new := record["data"][split]):
                differ.append(_split_change(split, was, new))
    return differ


def _split_change(split: str, was, new) -> str:
    if not isinstance(was, dict):
        return f"no {split} split (now one of {new['samples']} samples)"
    if new is None:
        return f"a {split} split of {was.get('samples')} samples (now none)"
    if was.get("samples") != new["samples"]:
        return f"a {split} split of {was.get('samples')} samples (now {new['samples']})"
    return f"a {split} split of other records (of the same number, {new['samples']})"


def check_resumed_steps(checkpoint: Path, state: dict, saved: dict | None, args: TrainingArguments, record: dict) -> None:
    """The Trainer places a resumed run by the checkpoint's step count (``state``: its trainer_state.json): steps of
    another size (other batches, GPUs or processes), or epochs of another number of steps (a last partial batch
    dropped or not), would cover other data than the run they continue. ``saved``: what :func:`check_resumed_run`
    returned; ``record``: this run's, with whether it drops each epoch's last partial batch."""
    processes = saved.get("processes") if saved else None
    if processes is not None and processes != args.world_size:
        per_step = args.train_batch_size * args.gradient_accumulation_steps
        raise OptionError(f"--resume: {checkpoint} was made by {processes} process(es) (now {args.world_size}), whose "
                          f"steps were {processes * per_step} samples (now {args.world_size * per_step}); resume with "
                          f"{processes} process(es)")
    batch = state.get("train_batch_size")  # per step of one process, on all the GPUs it drives
    if batch is not None and batch != args.train_batch_size:
        raise OptionError(f"--resume: {checkpoint} was made with batches of {batch} per process (now {args.train_batch_size}); "
                          "resume with the --batch-size and the GPUs of that run")
    dropped, drops = (saved or {}).get("drops_last_batch"), record["drops_last_batch"]
    samples, global_batch = record["data"]["train"]["samples"], args.train_batch_size * args.world_size
    if dropped is not None and dropped != drops and samples % global_batch:
        raise OptionError(f"--resume: {checkpoint} was made {'with' if dropped else 'without'} --compile or --cuda-graph, "
                          f"which drop each epoch's last partial batch (here of {samples % global_batch} samples), so its "
                          f"epochs had {'one batch fewer' if dropped else 'one batch more'}; resume "
                          f"{'with' if dropped else 'without'} them")


def trainer_state(checkpoint: Path) -> dict:
    """The checkpoint's trainer_state.json, whose ``global_step`` is read as a whole number."""
    if not checkpoint.is_dir():
        raise OptionError(f"--resume: {checkpoint} is not a checkpoint folder")
    file = checkpoint / "trainer_state.json"
    try:
        state = json.loads(file.read_text())
        state["global_step"] = int(state["global_step"])
        return state
    except FileNotFoundError:
        raise OptionError(f"--resume: {checkpoint} has no trainer_state.json: its saving was cut short; remove that "
                          "folder to resume from the checkpoint before it") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        # The Trainer writes this file in place, last: a kill while it wrote it leaves it cut short.
        raise OptionError(f"--resume: {file} is not whole ({first_line(err)}); remove {checkpoint} to resume from the "
                          "checkpoint before it") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise OptionError(f"--resume: cannot read the step of {checkpoint} in {file.name} ({first_line(err)})") from None


def check_best_checkpoint(checkpoint: Path, state: dict, checkpoints: Path, metric: str) -> None:
    """The run's best checkpoint so far (``state``: the trainer_state.json of ``checkpoint``) is still there, in
    ``checkpoints`` (the run's folder of them, see :class:`FindBestCheckpoint`) or where it was saved. Without it (a
    copy of the latest checkpoint alone, or one removed for the space), the Trainer forgets it, and the resumed run
    keeps its last model unless a later one scores higher: not the model of the run it continues."""
    if not (best := state.get("best_global_step")):
        return
    name = f"{PREFIX_CHECKPOINT_DIR}-{best}"
    saved_at = state.get("best_model_checkpoint")
    if (checkpoints / name).is_dir() or (isinstance(saved_at, str) and Path(saved_at).is_dir()):
        return
    score = state.get("best_metric")
    raise OptionError(f"--resume: the best checkpoint of the run so far, {name}"
                      f"{f' (dev {metric} {score:.4g})' if isinstance(score, (int, float)) else ''}, is not in "
                      f"{checkpoints}: without it the run would keep another model than its best; put that folder "
                      f"back beside {checkpoint.name} to resume")


def check_resumed_states(checkpoint: Path, world_size: int, scaler: bool) -> None:
    """The checkpoint holds every state the Trainer brings back. It brings back each only from a file it finds, and
    goes on without a word from a fresh one where a file is missing (removed for the space, left out of a copy):
    without optimizer.pt or scheduler.pt both start anew, AdamW's moments and the warm-up with them, and without the
    random states dropout draws other numbers. ``world_size``: the run's processes, each with random states of its
    own; ``scaler``: whether the run scales fp16 losses. Not for FSDP or DeepSpeed, which save states their own way."""
    # A checkpoint without clfa_run.json (one from before it was written) tells its processes by these alone: one
    # writes rng_state.pth, several rng_state_RANK.pth each.
    single = (checkpoint / "rng_state.pth").is_file()
    ranks = [int(m[1]) for file in checkpoint.glob("rng_state_*.pth") if (m := re.fullmatch(r"rng_state_(\d+)\.pth", file.name))]
    if (single and world_size > 1) or (not single and ranks and (world_size <= 1 or max(ranks) >= world_size)):
        made_by = "1 process" if single else f"{max(ranks) + 1} processes or more"
        raise OptionError(f"--resume: {checkpoint} was made by {made_by} (now {world_size}), each with random states of "
                          "its own: resume with as many")
    needed = {"optimizer.pt": "AdamW's moments", "scheduler.pt": "the learning-rate schedule's place"}
    rng = ["rng_state.pth"] if world_size <= 1 else [f"rng_state_{process}.pth" for process in range(world_size)]
    needed |= dict.fromkeys(rng, "the random generators' states")
    if scaler:
        needed["scaler.pt"] = "the fp16 loss scale"
    missing = [f"{name} ({what})" for name, what in needed.items() if not (checkpoint / name).is_file()]
    if not any((checkpoint / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")):
        missing.insert(0, "model.safetensors (the weights)")
    if missing:
        raise OptionError(f"--resume: {checkpoint} has no {', '.join(missing)}: the run would go on from other states "
                          "than it left; remove that folder to resume from the checkpoint before it")


def check_checkpoint_files(checkpoint: Path) -> None:
    """The checkpoint's files are whole: weights, optimizer or random states cut short (a copy or a disk that stopped
    half-way) would otherwise fail as a bare traceback once the caches are filled and the models built."""
    for file in sorted(checkpoint.iterdir()):
        problem = None
        if file.suffix == ".safetensors":
            try:
                with safe_open(str(file), "pt"):  # reads the header and checks that the data it describes is all there
                    pass
            except (OSError, SafetensorError) as err:
                problem = first_line(err)
        elif file.suffix in (".pt", ".pth") and not zipfile.is_zipfile(file):  # torch.save writes a zip archive
            problem = "not a whole torch.save archive"
        if problem:
            raise OptionError(f"--resume: {file} is not whole ({problem}); remove {checkpoint} to resume from the "
                              "checkpoint before it")


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


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _shown(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else "none" if value is None else str(value)


def _given(value) -> str:
    return "not given" if value is None else _shown(value)
