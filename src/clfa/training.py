"""Training with the transformers Trainer: mixed precision, accumulation, checkpoints, resume, logging and
multi-GPU (torchrun / accelerate launch) come from it. This module only prepares the model and data."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from transformers import AutoImageProcessor, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments, set_seed

from clfa.data.processing import CLFADataset, Collator, ImageTransform
from clfa.data.records import Record
from clfa.data.registry import DatasetSplits
from clfa.metrics import classification_metrics, headline
from clfa.modeling import CLFAModel
from clfa.options import TrainOptions
from clfa.report import metrics_table
from clfa.teacher import teacher_embeddings, teacher_projection_dim

logger = logging.getLogger(__name__)


class CLFATrainer(Trainer):
    """Logs the cross-entropy and alignment parts of the loss next to the total."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._parts: dict[str, list[torch.Tensor]] = {"ce_loss": [], "alignment_loss": []}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        if model.training:
            for name in self._parts:
                if (value := getattr(outputs, name)) is not None:
                    self._parts[name].append(value.detach())
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    # transformers 5 saves some encoders (ViT, ...) under their legacy weight names and renames them back only in
    # from_pretrained, while the Trainer reloads checkpoints with a plain load_state_dict. Reloading through
    # from_pretrained keeps best-checkpoint selection and --resume exact for every encoder.
    def _load_weights(self, checkpoint: str, model=None) -> None:
        model = model if model is not None else self.model
        loaded = type(model).from_pretrained(checkpoint)
        model.load_state_dict(loaded.state_dict(), strict=True)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        self._load_weights(resume_from_checkpoint, model)

    def _load_best_model(self) -> None:
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:
            return super()._load_best_model()
        self._load_weights(self.state.best_model_checkpoint)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            for name, values in self._parts.items():
                if values:
                    logs[name] = round(torch.stack(values).float().mean().item(), 4)
                values.clear()
        super().log(logs, start_time)


def resolve_precision(precision: str) -> str:
    if precision != "auto":
        return precision
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


def build_model(opts: TrainOptions, labels: list[str], positive_label: str | None) -> CLFAModel:
    uses_teacher = opts.alignment != "none" and opts.alignment_weight > 0
    return CLFAModel.from_encoders(
        opts.text_model,
        opts.image_model,
        labels=labels,
        align_dim=teacher_projection_dim(opts.teacher) if uses_teacher else opts.align_dim,
        mapping_hidden_dim=opts.mapping_hidden_dim,
        fusion=opts.fusion,
        fusion_layers=opts.fusion_layers,
        fusion_heads=opts.fusion_heads,
        fusion_ffn_dim=opts.fusion_ffn_dim,
        dropout=opts.dropout,
        classifier_pooling=opts.classifier_pooling,
        alignment=opts.alignment,
        alignment_pooling=opts.alignment_pooling,
        alignment_weight=opts.alignment_weight,
        temperature=opts.temperature,
        max_text_length=opts.max_text_length,
        positive_label=positive_label,
        teacher_model_name=opts.teacher if uses_teacher else None,
    )


def _images(records: list[Record], transform: ImageTransform, opts: TrainOptions):
    if not opts.image_cache:
        return None
    from clfa.data.image_cache import cached_images

    return cached_images(records, transform, Path(opts.cache_dir) / "images", num_workers=opts.num_workers or None, progress=opts.progress)


def training_arguments(opts: TrainOptions, has_dev: bool) -> TrainingArguments:
    precision = resolve_precision(opts.precision)
    strategy = ("steps" if opts.eval_steps else "epoch") if has_dev else "no"
    return TrainingArguments(
        output_dir=str(Path(opts.output_dir) / "checkpoints"),
        per_device_train_batch_size=opts.batch_size,
        per_device_eval_batch_size=opts.eval_batch_size,
        gradient_accumulation_steps=opts.gradient_accumulation_steps,
        learning_rate=opts.learning_rate,
        weight_decay=opts.weight_decay,
        warmup_steps=opts.warmup_ratio,  # a value below 1 is a ratio of the total steps
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
        torch_compile=opts.compile,
        torch_compile_mode=opts.compile_mode,
        dataloader_num_workers=opts.num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        dataloader_persistent_workers=opts.num_workers > 0,
        logging_steps=opts.logging_steps,
        report_to=[] if opts.report_to == "none" else opts.report_to.split(","),
        remove_unused_columns=False,
        label_names=["labels"],
        disable_tqdm=not opts.progress,
    )


def train(
    opts: TrainOptions,
    data: DatasetSplits,
    resume: bool | str = False,
    callbacks: list[TrainerCallback] | None = None,
) -> dict:
    """Train on ``data['train']``, keep the best dev checkpoint, evaluate it on dev and test.

    Writes the model (with tokenizer and image processor, ready for ``clfa predict``) and ``metrics.json``
    to ``opts.output_dir``, and returns the metrics.
    """
    set_seed(opts.seed)
    out = Path(opts.output_dir)
    tokenizer = AutoTokenizer.from_pretrained(opts.text_model)
    image_processor = AutoImageProcessor.from_pretrained(opts.image_model)
    transform = ImageTransform(image_processor)
    model = build_model(opts, data.labels, data.positive_label)
    label2id = model.config.label2id

    train_records = data["train"]
    teacher = None
    if model.config.uses_alignment:
        teacher = teacher_embeddings(
            train_records, opts.teacher, Path(opts.cache_dir) / "teacher", max_length=model.config.max_text_length, progress=opts.progress
        )

    max_length = model.config.max_text_length

    def dataset(records, teacher_embeds=None):
        return CLFADataset(records, tokenizer, transform, max_length, label2id, _images(records, transform, opts), teacher_embeds)

    train_set = dataset(train_records, teacher)
    eval_sets = {split: dataset(data[split]) for split in ("dev", "test") if split in data.splits and data[split]}

    def compute_metrics(prediction) -> dict:
        return headline(classification_metrics(prediction.label_ids, prediction.predictions.argmax(-1), data.labels, data.positive_label))

    trainer = CLFATrainer(
        model=model,
        args=training_arguments(opts, "dev" in eval_sets),
        train_dataset=train_set,
        eval_dataset=eval_sets.get("dev"),
        data_collator=Collator(transform),
        compute_metrics=compute_metrics,
        callbacks=callbacks,
    )
    result = trainer.train(resume_from_checkpoint=resume or None)

    metrics: dict = {
        "dataset": data.name,
        "labels": data.labels,
        "options": opts.to_dict(),
        "train": {"samples": len(train_records), "steps": result.global_step, "loss": result.training_loss},
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "skipped": data.skipped.to_json(),
    }
    for split, eval_set in eval_sets.items():
        prediction = trainer.predict(eval_set, metric_key_prefix=split)
        metrics[split] = classification_metrics(
            prediction.label_ids, np.asarray(prediction.predictions).argmax(-1), data.labels, data.positive_label
        )

    if trainer.is_world_process_zero():
        trainer.save_model(str(out))
        tokenizer.save_pretrained(out)
        image_processor.save_pretrained(out)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def print_summary(metrics: dict, title: str) -> None:
    from rich.console import Console

    rows = {split: metrics[split] for split in ("dev", "test") if split in metrics}
    Console().print(metrics_table(rows, title=title))
