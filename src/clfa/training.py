"""A training run: the model, data and Trainer set up from the options, the best dev checkpoint kept, evaluated on
dev and test, and written with its metrics. Mixed precision, accumulation, checkpoints, resume, logging and multi-GPU
(torchrun / accelerate launch) come from the transformers Trainer (:mod:`clfa.trainer`); what a run is refused for
before it starts is in :mod:`clfa.run_checks`."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, TrainerCallback, TrainingArguments, set_seed
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.trainer_utils import get_last_checkpoint

from clfa import __version__
from clfa.attention_backends import parse_attention_backends
from clfa.configuration import MODEL_OPTIONS, CLFAConfig
from clfa.data.processing import BlankImages, CLFADataset, ImageTransform, load_image_processor, stack
from clfa.data.records import Record, require_labels
from clfa.data.registry import DatasetSplits
from clfa.errors import OptionError
from clfa.files import write_whole
from clfa.launch import alike_in_every_process
from clfa.metrics import classification_metrics, headline
from clfa.modeling import CLFAModel, first_non_finite_weight, new_config
from clfa.options import TrainOptions
from clfa.precision import resolve_precision
from clfa.report import metrics_table, print_table
from clfa.resume import (FindBestCheckpoint, RecordRun, check_best_checkpoint, check_checkpoint_files, check_resume, check_resumed_run,
                         check_resumed_states, check_resumed_steps, run_record, trainer_state)
from clfa.run_checks import check_folders, check_models, check_task, check_text_student, experiment_trackers, uses_teacher
from clfa.run_lock import check_free, hold
from clfa.teacher import teacher_embeddings, teacher_projection_dim
from clfa.trainer import (OVERLAP_NEEDS_CUDA_GRAPH, CLFATrainer, PrinterToStderr, ProgressToStderr, check_cuda_graph_support,
                          check_fuse_linears_support)

logger = logging.getLogger(__name__)


def unused_parameters(model: CLFAModel) -> list[str]:
    """The parameters that take no part in the training loss, by one forward and backward pass over two synthetic
    samples: a whole student in a single-modality baseline without alignment, or a student's pooling head that only
    feeds an output the model does not read (CLIP's vision tower's last layer norm, for one)."""
    cfg, was_training = model.config, model.training
    ids = torch.full((2, min(8, cfg.max_text_length)), getattr(cfg.text_config, "pad_token_id", None) or 0)
    vision = cfg.image_config
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.zeros(2, dtype=torch.long),
              "pixel_values": torch.zeros(2, getattr(vision, "num_channels", 3), vision.image_size, vision.image_size)}
    if cfg.uses_alignment:
        inputs |= {"teacher_text_embeds": torch.ones(2, cfg.align_dim), "teacher_image_embeds": torch.ones(2, cfg.align_dim)}
    model.eval()  # no dropout: the random generators are left as they were
    try:
        model(**inputs).loss.backward()
        return [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)


def model_config(opts: TrainOptions, labels: list[str], positive_label: str | None, normalize_text: bool = False) -> CLFAConfig:
    """The config of the model a run trains, read from the students' configs: no weights load, so a run that cannot
    go on (a resume with other model options) is refused before they do."""
    from transformers import AutoConfig

    teacher = uses_teacher(opts)
    return new_config(
        AutoConfig.from_pretrained(opts.text_model),
        AutoConfig.from_pretrained(opts.image_model),
        labels=labels,
        align_dim=teacher_projection_dim(opts.teacher) if teacher else opts.align_dim,
        positive_label=positive_label,
        normalize_text=normalize_text,
        text_model_name=opts.text_model,
        image_model_name=opts.image_model,
        teacher_model_name=opts.teacher if teacher else None,
        **{name: getattr(opts, name) for name in MODEL_OPTIONS},
    )


def build_model(opts: TrainOptions, labels: list[str], positive_label: str | None, normalize_text: bool = False) -> CLFAModel:
    return CLFAModel.on_named_encoders(model_config(opts, labels, positive_label, normalize_text))


def _images(records: list[Record], transform: ImageTransform, opts: TrainOptions, read: bool = True):
    if not read:  # a text-only baseline never runs its image student: no image is decoded, or cached
        return BlankImages(len(records), transform.size)
    if not opts.image_cache:
        return None
    from clfa.data.image_cache import cached_images

    return cached_images(records, transform, Path(opts.cache_dir) / "images", num_workers=opts.num_workers or None, progress=opts.progress)


def _trains_on_cpu() -> bool:
    return not torch.cuda.is_available() and not torch.backends.mps.is_available()


def check_precision(opts: TrainOptions) -> None:
    """fp16 is refused where the run trains on the CPU: accelerate turns fp16 autocast and its loss scaler off there
    without a word, so the run would train in fp32 and record fp16."""
    if resolve_precision(opts.precision) == "fp16" and _trains_on_cpu():
        raise OptionError("--precision fp16: fp16 training needs a GPU, and this run is on the CPU (where it would train in "
                          "fp32); use bf16 or fp32")


def training_arguments(opts: TrainOptions, has_dev: bool, find_unused_parameters: bool | None = None) -> TrainingArguments:
    """The Trainer's settings. Besides the paper's hyperparameters, what makes a step fast: bf16 autocast where the
    GPU supports it, fused AdamW, optional torch.compile (a ``reduce-overhead`` / ``max-autotune`` mode adds CUDA
    graphs), pinned batches copied without blocking, persistent loader workers, and no per-step host sync.
    ``find_unused_parameters``: whether DDP must look for parameters without gradients after each backward (see
    :func:`unused_parameters`); None leaves the Trainer's default, which looks."""
    check_precision(opts)  # here too, for every trainer built without train() (the training benchmark's)
    precision = resolve_precision(opts.precision)
    strategy = ("steps" if opts.eval_steps else "epoch") if has_dev else "no"
    pin_memory = torch.cuda.is_available()
    return one_gpu_per_process(TrainingArguments(
        output_dir=str(Path(opts.output_dir) / "checkpoints"),
        per_device_train_batch_size=opts.batch_size,
        per_device_eval_batch_size=opts.eval_batch_size,
        gradient_accumulation_steps=opts.gradient_accumulation_steps,
        learning_rate=opts.learning_rate,
        weight_decay=opts.weight_decay,
        warmup_steps=opts.warmup_ratio,  # a value below 1 is a ratio of the total steps
        max_grad_norm=opts.max_grad_norm,
        lr_scheduler_type="linear",
        num_train_epochs=opts.epochs,
        max_steps=opts.max_steps,
        eval_strategy=strategy,
        save_strategy=strategy if has_dev else "epoch",
        eval_steps=opts.eval_steps,
        save_steps=opts.eval_steps,
        load_best_model_at_end=has_dev,
        metric_for_best_model=opts.metric if has_dev else None,
        greater_is_better=True,
        save_total_limit=opts.save_total_limit,
        seed=opts.seed,
        data_seed=opts.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        # Said explicitly on machines without an accelerator: only then do torchrun / accelerate launch start a
        # multi-process CPU run (gloo), and the Trainer accepts bf16 autocast on the CPU. (`accelerate launch --cpu`
        # itself starts one process whatever --num_processes says; torchrun starts as many as asked.)
        use_cpu=_trains_on_cpu(),
        optim="adamw_torch_fused",  # one kernel for all parameters, on CUDA and on CPU
        torch_compile=opts.compile,
        torch_compile_mode=opts.compile_mode,
        ddp_find_unused_parameters=find_unused_parameters,
        dataloader_num_workers=opts.num_workers,
        dataloader_pin_memory=pin_memory,
        dataloader_persistent_workers=opts.num_workers > 0,
        accelerator_config={"non_blocking": pin_memory},
        # The filter tests every step's loss for nan/inf on the host, a GPU sync per step that stops the CPU from
        # queueing the next step; a nan loss is then logged as nan, which is what a diverged run should show.
        logging_nan_inf_filter=False,
        logging_steps=opts.logging_steps,
        report_to=experiment_trackers(opts.report_to),
        remove_unused_columns=False,
        label_names=["labels"],
        disable_tqdm=not opts.progress,
    ))


def one_gpu_per_process(args: TrainingArguments) -> TrainingArguments:
    """``args`` for one GPU where a single process sees several. The Trainer would wrap the model in DataParallel,
    whose copies each take the alignment loss over their own slice of the batch (its negatives are the batch's other
    pairs) and hand back one loss part per GPU; a launcher gives each GPU a process of its own, and a loss over the
    whole batch (gathered across processes)."""
    if (gpus := args.n_gpu) > 1:
        logger.warning("%d GPUs are visible to this one process: it trains on the first alone; to train on all, start "
                       "one process per GPU: torchrun --nproc_per_node %d -m clfa.cli train ... (or accelerate launch)",
                       gpus, gpus)
        args._n_gpu = 1  # as the Trainer itself does for a model that places its layers on several GPUs
    return args


def build_trainer(
    opts: TrainOptions,
    model: CLFAModel,
    transform: ImageTransform,
    train_set: torch.utils.data.Dataset,
    eval_set: torch.utils.data.Dataset | None = None,
    compute_metrics=None,
    callbacks: list[TrainerCallback] | None = None,
    args: TrainingArguments | None = None,
) -> CLFATrainer:
    """The trainer :func:`train` runs, for any dataset whose items are those of :class:`CLFADataset`."""
    args = args if args is not None else training_arguments(opts, eval_set is not None)
    return CLFATrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        # uint8 pixels, normalised on the device: workers, pinned memory and the copy move a quarter of the bytes.
        data_collator=stack,
        compute_metrics=compute_metrics,
        callbacks=callbacks,
        transform=transform,
        cuda_graph=opts.cuda_graph,
        overlap_towers=opts.overlap_towers,
        fuse_linears=opts.fuse_linears,
        attention_backends=opts.attention_backends,
    )


def train(
    opts: TrainOptions,
    data: DatasetSplits,
    resume: bool | str = False,
    callbacks: list[TrainerCallback] | None = None,
    quiet: bool = False,
) -> dict:
    """Train on ``data['train']``, keep the best dev checkpoint, evaluate it on dev and test.

    ``data``: the splits, as :func:`clfa.data.registry.load_dataset` reads them or as
    ``DatasetSplits(name, {"train": records, ...}, labels)`` holds records made in Python; every record needs a label.
    ``resume``: True continues the run in ``opts.output_dir`` from its latest checkpoint; a checkpoint's path, from
    that one.
    ``callbacks``: transformers ``TrainerCallback`` objects, added to the Trainer's own.
    ``quiet``: the Trainer prints neither progress bars nor log lines; the given ``callbacks`` report instead.

    Writes the model (with tokenizer and image processor, ready for ``clfa predict``) and ``metrics.json``
    to ``opts.output_dir``, and returns the metrics that file holds.

    The run seeds the global random generators (Python's, NumPy's, torch's) from ``opts.seed``, so that it depends on
    nothing drawn before it, and leaves them as it found them: code after it draws as if it had not run.
    """
    if not isinstance(data, DatasetSplits):  # a dict of splits would fail deep in the run, at a missing attribute
        raise TypeError(f"data: a DatasetSplits (from load_dataset, or DatasetSplits(name, splits, labels)), not "
                        f"{type(data).__name__}")
    with _callers_random_state():
        return _train(opts, data, resume, callbacks, quiet)


@contextlib.contextmanager
def _callers_random_state():
    """The global random generators as they were, once the block ends. Left seeded by a run, they handed the code
    after each call the same numbers: a random search drawing a learning rate before each run drew one value again
    and again."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    # Every GPU's, where the caller has started CUDA: it may have drawn on one that is not the current one (cuda:1, none
    # chosen), and the run seeds them all. A GPU's state is a seed and an offset kept on the host: reading it opens
    # no context on the GPU.
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    # A GPU not started yet would start with the seed torch.manual_seed last gave (or torch's default), as the CPU's.
    unstarted_seed = torch.initial_seed()
    mps = torch.mps.get_rng_state() if torch.backends.mps.is_available() else None
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        elif torch.cuda.is_initialized():  # started by the run: its generators as they would have started
            torch.cuda.manual_seed_all(unstarted_seed)
        if mps is not None:
            torch.mps.set_rng_state(mps)


def _model_folders_absolute(opts: TrainOptions) -> TrainOptions:
    """``opts`` with each student or teacher that is a local folder named by its absolute path, as the run records it:
    ``models/bert`` as given reads as a hub name, and cannot be found from another working folder. A name that is no
    folder here is the hub's, and stays as it is (transformers, too, takes a folder of that name first)."""
    folders = {name: str(Path(value).resolve()) for name in ("text_model", "image_model", "teacher")
               if Path(value := getattr(opts, name)).is_dir()}
    return dataclasses.replace(opts, **folders)


def _train(opts: TrainOptions, data: DatasetSplits, resume: bool | str, callbacks: list[TrainerCallback] | None,
           quiet: bool) -> dict:
    opts = _model_folders_absolute(opts)
    out = Path(opts.output_dir)
    checkpoints = out / "checkpoints"
    # The checks of the options, the data and the files, which every process of a launch makes alike: the CLI has
    # one process say what fails. The models are looked up outside, as a download can fail for one process alone.
    with alike_in_every_process():
        for split, records in data.splits.items():
            require_labels(records, f"training ({split} split)")
        check_free(out)  # before the checks below, which would take its checkpoints for those of a run that ended
        set_seed(opts.seed)
        if resume is True and not (checkpoints.is_dir() and get_last_checkpoint(str(checkpoints))):
            raise OptionError(f"--resume: no checkpoint to resume from in {checkpoints}")
        if not resume and checkpoints.is_dir() and get_last_checkpoint(str(checkpoints)):
            # A new run would save among them, and a later --resume would continue from whichever has the highest step.
            raise OptionError(f"--output-dir {out} holds checkpoints of an earlier run: add --resume to continue it, or "
                              "give another --output-dir (or remove that one)")
        # An exported model, or a run whose checkpoints were removed: its weights and scores would be replaced unsaid.
        if not resume and (kept := [name for name in ("model.safetensors", "model.safetensors.index.json", "metrics.json")
                                    if (out / name).is_file()]):
            raise OptionError(f"--output-dir {out} holds a trained model ({', '.join(kept)}), which a new run would replace: "
                              "give another --output-dir (or remove that one)")
        check_folders(opts)
        check_task(opts, data)  # before the models load
        record = run_record(opts, data)
        if resume:
            resumed_from = Path(resume) if isinstance(resume, str) else Path(get_last_checkpoint(str(checkpoints)))
            resumed_state = trainer_state(resumed_from)
            check_checkpoint_files(resumed_from)
            resumed_record = check_resumed_run(resumed_from, record)
            check_best_checkpoint(resumed_from, resumed_state, checkpoints, opts.metric)
        check_precision(opts)
        parse_attention_backends(opts.attention_backends)
        experiment_trackers(opts.report_to)
    check_models(opts)
    # The texts' rewriting is the data's, but the model must know it: prediction rewrites its inputs the same way.
    config = model_config(opts, data.labels, data.positive_label, normalize_text=bool(data.options.get("normalize_text")))
    resumed_at = 0
    if resume:
        with alike_in_every_process():
            check_resume(config, resumed_from)
        resumed_at = resumed_state["global_step"]
    tokenizer = AutoTokenizer.from_pretrained(opts.text_model)
    image_processor = load_image_processor(opts.image_model)
    transform = ImageTransform(image_processor)
    model = CLFAModel.on_named_encoders(config)
    check_text_student(opts, model.config, tokenizer, model.text_model)
    label2id = model.config.label2id

    train_records = data["train"]
    max_length = model.config.max_text_length
    # Saved with the model: whoever tokenizes with it directly (truncation=True) then cuts texts where training did.
    tokenizer.model_max_length = max_length

    def dataset(records, teacher_embeds=None):
        images = _images(records, transform, opts, read="image" in model.config.modalities)
        return CLFADataset(records, tokenizer, transform, max_length, label2id, images, teacher_embeds)

    # The arguments come first: they set up the processes of a torchrun / accelerate launch run. The first
    # process then fills the teacher and image caches, and the others read them.
    has_dev = bool(data.splits.get("dev"))
    # Only DDP asks, and a search of each backward graph costs time; the launchers set WORLD_SIZE.
    find_unused = bool(unused_parameters(model)) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None
    args = training_arguments(opts, has_dev, find_unused)
    # Refused before the caches are filled, which can take long.
    if opts.overlap_towers and not opts.cuda_graph:
        raise OptionError(OVERLAP_NEEDS_CUDA_GRAPH)
    if opts.fuse_linears:
        check_fuse_linears_support(args)
    if opts.cuda_graph:
        check_cuda_graph_support(args)
    with args.main_process_first(desc="teacher and image caches"):
        teacher = None
        if model.config.uses_alignment:
            teacher = teacher_embeddings(train_records, opts.teacher, Path(opts.cache_dir) / "teacher", max_length=max_length, progress=opts.progress)
        train_set = dataset(train_records, teacher)
        eval_sets = {split: dataset(data[split]) for split in ("dev", "test") if split in data.splits and data[split]}

    def compute_metrics(prediction) -> dict:
        return headline(classification_metrics(prediction.label_ids, prediction.predictions.argmax(-1), data.labels, data.positive_label))

    trainer = build_trainer(opts, model, transform, train_set, eval_sets.get("dev"), compute_metrics,
                            [RecordRun(record), FindBestCheckpoint(), *(callbacks or [])], args)
    # As the trainer decides it (static shapes for compiled or captured steps). A resumed run's caches were filled by
    # the run it continues, so checking here, after them, costs no waiting.
    record["drops_last_batch"] = trainer.drop_last_train
    if resume:
        check_resumed_steps(resumed_from, resumed_state, resumed_record, args, record)
        if not (trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled):
            check_resumed_states(resumed_from, args.world_size, trainer.accelerator.scaler is not None)
    if quiet:
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
    else:  # the Trainer prints its log lines on stdout, where the command's results go: they are messages
        for printer, on_stderr in ((PrinterCallback, PrinterToStderr), (ProgressCallback, ProgressToStderr)):
            if trainer.pop_callback(printer) is not None:
                trainer.add_callback(on_stderr)
    # From the first write into the folder to the last: a second run there would save among this one's checkpoints.
    with hold(out):
        if trainer.is_world_process_zero():  # first, so that the checkpoints of a run going on or cut short can be loaded
            tokenizer.save_pretrained(out)
            image_processor.save_pretrained(out)
        result = trainer.train(resume_from_checkpoint=resume or None)

        metrics: dict = {
            "dataset": data.name,
            "data_dir": data.data_dir,
            "files": data.files,
            "data_options": data.options,
            "labels": data.labels,
            # What the model was built with: the teacher sets align_dim, and the text encoder can cap max_text_length.
            "options": opts.to_dict() | {name: getattr(model.config, name) for name in (*MODEL_OPTIONS, "align_dim")},
            # A diverged run's nan loss is written as null: NaN is not JSON, and strict readers refuse the whole file.
            # The loss is the mean over the steps this call ran (none when resuming a finished run).
            "train": {"samples": len(train_records), "steps": result.global_step, "steps_this_run": result.global_step - resumed_at,
                      "loss": result.training_loss if math.isfinite(result.training_loss) and result.global_step > resumed_at else None,
                      # The kept model may be a dev checkpoint from before the loss became nan: its weights decide.
                      "weights_finite": first_non_finite_weight(trainer.model) is None},
            "best_checkpoint": str(Path(trainer.state.best_model_checkpoint).resolve()) if trainer.state.best_model_checkpoint else None,
            "clfa_version": __version__,
            "skipped": data.skipped.to_json(),
            "removed_by_cleaning": data.removed,
        }
        for split, eval_set in eval_sets.items():
            prediction = trainer.predict(eval_set, metric_key_prefix=split)
            metrics[split] = classification_metrics(
                prediction.label_ids, np.asarray(prediction.predictions).argmax(-1), data.labels, data.positive_label
            )

        if trainer.is_world_process_zero():
            # An extended run (--resume with more steps) replaces the model of the run it extends: that run's metrics go
            # first, so that a run cut short from here on never leaves its new model beside the old model's scores.
            (out / "metrics.json").unlink(missing_ok=True)
        trainer.save_model(str(out))  # on every process: FSDP and DeepSpeed gather the weights collectively
        if trainer.is_world_process_zero():
            # The Trainer's pickle of its arguments has no place beside the model, which is safetensors and JSON: what
            # they held is in metrics.json. The checkpoints keep theirs, for --resume.
            (out / "training_args.bin").unlink(missing_ok=True)
            write_whole(out / "metrics.json", json.dumps(metrics, indent=2))
    return metrics


def print_summary(metrics: dict, title: str) -> None:
    rows = {split: metrics[split] for split in ("dev", "test") if split in metrics}
    if rows:  # without dev and test there is nothing to show, and the notes before the run said so
        print_table(metrics_table(rows, title=title))
