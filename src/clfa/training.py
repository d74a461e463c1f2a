"""Training with the transformers Trainer: mixed precision, accumulation, checkpoints, resume, logging and
multi-GPU (torchrun / accelerate launch) come from it. This module only prepares the model and data."""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import math
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import AutocastKwargs, DistributedType, DynamoBackend, TorchDynamoPlugin
from transformers import AutoTokenizer, Trainer, TrainerCallback, TrainingArguments, set_seed
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import is_sagemaker_mp_enabled

from clfa import __version__
from clfa.attention_backends import attention_backends, parse_attention_backends
from clfa.configuration import MODEL_OPTIONS, CLFAConfig
from clfa.cuda_graph import GraphableAdamW, StepGraph
from clfa.data.processing import BlankImages, CLFADataset, ImageTransform, load_image_processor, stack
from clfa.data.records import DataError, Record, require_labels
from clfa.data.registry import DatasetSplits, labels_read_from_data
from clfa.errors import OptionError, first_line
from clfa.fused_linears import fusing_linears
from clfa.hub import lookup_problem
from clfa.metrics import classification_metrics, headline
from clfa.modeling import CLFAModel, first_token_reads_the_text, new_config
from clfa.options import TrainOptions
from clfa.precision import resolve_precision
from clfa.report import metrics_table, print_table
from clfa.resume import FindBestCheckpoint, RecordRun, check_checkpoint_files, check_resume, check_resumed_run, check_resumed_steps, run_record, trainer_state
from clfa.teacher import teacher_embeddings, teacher_projection_dim

logger = logging.getLogger(__name__)


class CLFATrainer(Trainer):
    """Logs the cross-entropy and alignment parts of the loss next to the total.

    ``transform``: batches (from :func:`clfa.data.processing.stack`) carry uint8 ``pixels``, normalised here, on the device,
    with :meth:`ImageTransform.normalize`. ``drop_last_train``: drop the last partial training batch
    (not evaluation batches), so every training step has the same shapes and compiled kernels and CUDA graphs are
    reused instead of recompiled; with shuffling, a different handful of samples sits out each epoch.
    ``cuda_graph``: each training step (forward, backward, clipping, AdamW update) runs as one function, captured in
    a CUDA graph after ``graph_warmup`` eager steps on a GPU (:mod:`clfa.cuda_graph`); implies ``drop_last_train``,
    as does compiling (static shapes for every compiled step).
    ``overlap_towers`` (with ``cuda_graph``): the text and image students run side by side on two CUDA streams
    (:meth:`CLFAModel.encode`); when the Trainer compiles the model, each student is compiled on its own.
    ``fuse_linears`` (with torch.compile): linear layers that read the same input compile as one matrix product
    (:mod:`clfa.fused_linears`). ``attention_backends``: the SDPA backends the model's attention calls may use in
    training, evaluation and prediction, in order (:mod:`clfa.attention_backends`).
    """

    graph_warmup = 3

    def __init__(self, *args, transform: ImageTransform | None = None, drop_last_train: bool = False,
                 cuda_graph: bool = False, overlap_towers: bool = False, fuse_linears: bool = False,
                 attention_backends: str | None = None, **kwargs):
        parse_attention_backends(attention_backends)  # a wrong name is an error now, not at the first attention call
        super().__init__(*args, **kwargs)
        # Whether the accelerator compiles the model, --compile or not (see compiler()).
        self._compiled = self.accelerator.state.dynamo_plugin.backend != DynamoBackend.NO
        self.attention_backends = attention_backends
        if fuse_linears:
            check_fuse_linears_support(self.args)
        # Models compile when first called, which is inside train, evaluate or predict: each runs inside this.
        self._compiling = fusing_linears if fuse_linears else contextlib.nullcontext
        self.transform = transform
        self.cuda_graph = cuda_graph
        self.drop_last_train = drop_last_train or cuda_graph or self._compiled
        if cuda_graph:
            check_cuda_graph_support(self.args, self.is_deepspeed_enabled or self.is_fsdp_enabled)
            # PyTorch's CUDA graph notes: autocast inside a captured region must not cache its casts.
            self.accelerator.autocast_handler = AutocastKwargs(cache_enabled=False)
        if overlap_towers:
            self._overlap_towers(self.model)
        self._step_graph: StepGraph | None = None
        self._graph_grads: list[torch.Tensor] = []
        self._step_grad_norm: torch.Tensor | None = None
        # Running sums, not lists of outputs: CUDA graphs reuse output buffers, and a sum costs no host sync.
        self._parts: dict[str, torch.Tensor] = {}
        self._part_counts: dict[str, int] = {}
        # Per-step host work the Trainer repeats over all ~450 parameter tensors at the paper's sizes; the
        # parameters do not change during a run, so they are listed and counted once per run and model.
        self._clip_parameters: tuple[torch.nn.Module, list[torch.nn.Parameter]] | None = None
        self._flop_parameters: tuple[torch.nn.Module, int] | None = None
        self._loaders: list = []  # the data loaders this trainer made, whose workers it ends (end_loader_workers)
        self._calls = 0  # train, evaluate and predict calls under way (evaluate runs inside train)

    def _overlap_towers(self, model: CLFAModel) -> None:
        if not self.cuda_graph:
            raise OptionError(OVERLAP_NEEDS_CUDA_GRAPH)
        model.overlap_towers = True
        if not self._compiled:
            return
        # The model's compiled graph stops at the side-by-side students (one graph runs on one stream), so each
        # student needs its own, compiled as the Trainer compiles the model, or it would run uncompiled.
        options = self.accelerator.state.dynamo_plugin.to_kwargs()
        if options.get("fullgraph"):
            raise OptionError("--overlap-towers leaves the students out of the model's compiled graph: the model cannot "
                             "compile as one full graph (unset ACCELERATE_DYNAMO_USE_FULLGRAPH)")
        for student in (model.text_model, model.image_model):
            student.compile(**options)
        # Both students enter compiled code through the same transformers function, whose compiled versions (train
        # and eval, static and dynamic shapes, per student) then share one recompile budget; past it, dynamo would
        # quietly run them uncompiled.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 16)

    def get_train_dataloader(self):
        if not self.drop_last_train or self.args.dataloader_drop_last:
            return self._keep(super().get_train_dataloader())
        # TrainingArguments.dataloader_drop_last would also drop evaluation samples; set it for this loader only.
        self.args.dataloader_drop_last = True
        try:
            return self._keep(super().get_train_dataloader())
        finally:
            self.args.dataloader_drop_last = False

    def get_eval_dataloader(self, *args, **kwargs):
        return self._keep(super().get_eval_dataloader(*args, **kwargs))

    def get_test_dataloader(self, *args, **kwargs):
        return self._keep(super().get_test_dataloader(*args, **kwargs))

    def _keep(self, loader):
        base = getattr(loader, "base_dataloader", loader)  # accelerate's prepared loaders wrap a DataLoader
        # Each new iterator of a loader draws its workers' base seed from the loader's generator, by default the global
        # one, which also drives dropout. With persistent workers an uninterrupted run draws once per loader, and a
        # resumed run again at its first epoch and evaluation: its dropout would then differ from the run it
        # continues. A generator of the loader's own keeps the global one for the model alone.
        if getattr(base, "generator", None) is None:
            base.generator = torch.Generator().manual_seed(self.args.seed)
        if loader not in self._loaders:  # the Trainer hands out its evaluation loader again and again
            self._loaders.append(loader)
        return loader

    @contextlib.contextmanager
    def _running(self):
        """Around train, evaluate and predict: models compile when first called, inside one of them, with the
        attention backends they then run; and when the outermost call ends, so do the loader workers it started."""
        self._calls += 1
        try:
            with self._compiling(), attention_backends(self.attention_backends):
                yield
        finally:
            self._calls -= 1
            if not self._calls:
                loaders, self._loaders = self._loaders, []
                for loader in loaders:
                    end_loader_workers(loader)

    def _prepare_inputs(self, inputs):
        return self._normalized(super()._prepare_inputs(inputs))

    def _normalized(self, inputs: dict) -> dict:
        if "pixels" in inputs:
            inputs["pixel_values"] = self.transform.normalize(inputs.pop("pixels"))
        return inputs

    def _record_parts(self, **parts: torch.Tensor | None) -> None:
        for name, value in parts.items():
            if value is not None:
                value = value.detach().float()
                self._parts[name] = self._parts[name] + value if name in self._parts else value.clone()
                self._part_counts[name] = self._part_counts.get(name, 0) + 1

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        if model.training:
            self._record_parts(ce_loss=outputs.ce_loss, alignment_loss=outputs.alignment_loss)
        elif self._compiled:
            # Evaluation keeps outputs across batches; with CUDA graphs the next batch would overwrite them.
            outputs = type(outputs)(**{key: value.clone() for key, value in outputs.items()})
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def train(self, *args, **kwargs):
        self._clip_parameters = self._flop_parameters = None  # a new run may bring a new model (model_init)
        try:
            with self._running():
                return super().train(*args, **kwargs)
        finally:
            # The graph's memory pool goes back for evaluation: nothing may keep a tensor from it.
            self._step_graph, self._graph_grads, self._step_grad_norm = None, [], None

    def evaluate(self, *args, **kwargs):
        with self._running():
            return super().evaluate(*args, **kwargs)

    def predict(self, *args, **kwargs):
        with self._running():
            return super().predict(*args, **kwargs)

    # --- whole steps (cuda_graph) -------------------------------------------------------------------------------

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        if self.cuda_graph and type(optimizer) is torch.optim.AdamW:
            # The Trainer's AdamW (its groups: no decay on biases and norms), rebuilt as one whose update the step runs.
            defaults = {key: value for key, value in optimizer.defaults.items() if key != "decoupled_weight_decay"}
            self.optimizer = optimizer = GraphableAdamW(optimizer.param_groups, **defaults)
        return optimizer

    def training_step(self, model, inputs, num_items_in_batch=None):
        if not self.cuda_graph:
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        if self._step_graph is None:
            self._step_graph = StepGraph(lambda batch: self._whole_step(model, batch), self.args.device,
                                         self.graph_warmup, lambda: self._before_capture(model))
        optimizer = self._graphable_optimizer()
        optimizer.refresh_lr()
        loss, ce_loss, alignment_loss, self._step_grad_norm = self._step_graph(inputs)
        optimizer.mark_updated()
        if self._step_graph.graph is not None and not self._graph_grads:
            # The Trainer sets gradients to None after each step; these references keep the graph's gradient
            # buffers from ever being handed out again.
            self._graph_grads = [p.grad for p in self._parameters(model) if p.grad is not None]
        self._record_parts(ce_loss=ce_loss, alignment_loss=alignment_loss)
        return loss

    def _whole_step(self, model, batch: dict[str, torch.Tensor]) -> tuple:
        """What the Trainer spreads over training_step, clipping and optimizer.step, as one function of the batch."""
        inputs = self._normalized(dict(batch))
        with self.compute_loss_context_manager():
            outputs = model(**inputs)
        self.accelerator.backward(outputs.loss)
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in self._parameters(model) if p.grad is not None])
        clip = None
        if self.args.max_grad_norm > 0:
            # torch's clip_grad_norm_ coefficient; the update applies it (see GraphableAdamW.update)
            clip = torch.clamp(self.args.max_grad_norm / (grad_norm + 1e-6), max=1.0)
        self._graphable_optimizer().update(grad_factor=clip)
        # Detached: a warm-up step's autograd graph kept alive past its step would carry the warm-up's stream into
        # the capture, which then fails.
        detached = [None if value is None else value.detach() for value in (outputs.ce_loss, outputs.alignment_loss)]
        return outputs.loss.detach(), *detached, grad_norm

    def _before_capture(self, model) -> None:
        self._graphable_optimizer().make_capturable()
        model.zero_grad(set_to_none=True)  # the captured backward then allocates the gradients in the graph's pool

    def _graphable_optimizer(self) -> GraphableAdamW:
        optimizer = getattr(self.optimizer, "optimizer", self.optimizer)  # inside accelerate's wrapper
        if not isinstance(optimizer, GraphableAdamW):
            raise TypeError(f"--cuda-graph needs the Trainer's own AdamW, not a given {type(optimizer).__name__}")
        return optimizer

    def _get_grad_norm(self, model, grad_norm=None):
        if self.cuda_graph:
            return self._step_grad_norm  # clipped (or measured) inside the step
        return super()._get_grad_norm(model, grad_norm)

    def floating_point_ops(self, inputs) -> int:
        """The Trainer's estimate (6 x input tokens x non-embedding parameters) with the parameters counted once."""
        if "input_ids" not in inputs:
            return 0
        if self._flop_parameters is None or self._flop_parameters[0] is not self.model:
            self._flop_parameters = (self.model, self.model.num_parameters(exclude_embeddings=True))
        return 6 * inputs["input_ids"].numel() * self._flop_parameters[1]

    def _parameters(self, model) -> list[torch.nn.Parameter]:
        if self._clip_parameters is None or self._clip_parameters[0] is not model:
            self._clip_parameters = (model, list(model.parameters()))
        return self._clip_parameters[1]

    def _clip_grad_norm(self, model):
        if self.cuda_graph:
            return self._step_grad_norm  # clipped inside the step
        # What Accelerator.clip_grad_norm_ does outside FSDP / DeepSpeed / XLA / DTensor meshes (unscale, then
        # torch's clip), on a parameter list made once instead of a walk over every module at every step.
        if self.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.XLA) \
                or is_sagemaker_mp_enabled() or self._has_mixed_mesh_grads(model):
            return super()._clip_grad_norm(model)
        self.accelerator.unscale_gradients()
        return torch.nn.utils.clip_grad_norm_(self._parameters(model), self.args.max_grad_norm)

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
            # Every process logs here (the Trainer gathers its "loss" from all of them just before), and each holds
            # the parts of its own share of the batches: they are averaged over the processes, as that loss is, so
            # that the logged loss stays CE + λ·alignment in a multi-process run (one collective, same names everywhere).
            names = list(self._parts)
            if names:
                means = torch.stack([self._parts[name] / self._part_counts[name] for name in names])
                if self.args.world_size > 1:
                    means = self.accelerator.reduce(means.to(self.args.device), reduction="mean")
                for name, mean in zip(names, means.tolist()):
                    logs[name] = round(mean, 4)
            self._parts.clear()
            self._part_counts.clear()
        super().log(logs, start_time)


def end_loader_workers(loader) -> None:
    """Ends the worker processes of a data loader's persistent iterator now, not whenever the garbage collector
    frees the loader. The Trainer keeps its loaders in reference cycles, and when the collector frees such a cycle
    it runs the finalizers of the workers' index queues first, which stop the threads that feed those queues. The
    iterator's own clean-up then asks each worker to stop through a queue that no longer sends, and waits 5 s for
    each worker before killing it: 10 s with the default 2 workers, at the end of a run or in the middle of a later
    one. A later iteration of the loader starts new workers."""
    base = getattr(loader, "base_dataloader", loader)  # accelerate's prepared loaders wrap a DataLoader
    iterator = getattr(base, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        base._iterator = None
        iterator._shutdown_workers()


def compiler(args: TrainingArguments) -> TorchDynamoPlugin | None:
    """How the Trainer will compile the model, or None when it will not: built as the Trainer builds it, with or
    without --compile. A backend or mode left unset comes from ACCELERATE_DYNAMO_BACKEND/_MODE (set by `accelerate
    launch` or its config file), and a backend set there compiles the model even when the arguments do not ask."""
    dynamo = TorchDynamoPlugin(backend=args.torch_compile_backend, mode=args.torch_compile_mode)
    return dynamo if dynamo.backend != DynamoBackend.NO else None


def check_fuse_linears_support(args: TrainingArguments) -> None:
    """--fuse-linears is a pass of inductor's: without torch.compile, or with another backend, it would do nothing."""
    if (dynamo := compiler(args)) is None:
        raise OptionError("--fuse-linears rewrites the graph torch.compile compiles: it needs --compile (or --compile-mode)")
    if (backend := dynamo.backend.value.lower()) != "inductor":
        raise OptionError(f"--fuse-linears is a pass of torch.compile's inductor backend, not of {backend!r}")


OVERLAP_NEEDS_CUDA_GRAPH = ("--overlap-towers runs the students side by side inside whole training steps: it needs "
                            "--cuda-graph")


def check_cuda_graph_support(args: TrainingArguments, sharded: bool = False) -> None:
    """A captured step is one process's whole optimiser step, replayed without the host: what needs more (another
    process, a host-side loss scaler, several micro-batches per update, an optimiser other than fused AdamW) or
    captures graphs itself is refused here, before anything runs."""
    problems = []
    if args.gradient_accumulation_steps != 1:
        problems.append(f"gradient accumulation ({args.gradient_accumulation_steps} micro-batches per step)")
    if args.world_size > 1 or args.n_gpu > 1 or sharded:
        problems.append("several processes or GPUs (to train on one of several GPUs, pick it with CUDA_VISIBLE_DEVICES)")
    if args.fp16:
        problems.append("fp16 (its loss scaler checks every step on the host; bf16 needs none)")
    if args.gradient_checkpointing:
        problems.append("gradient checkpointing (it saves and restores the random generators' state on the host)")
    if args.optim != "adamw_torch_fused":
        problems.append(f"the optimizer {args.optim!r} (fused AdamW only: its step counters stay on the GPU)")
    if (dynamo := compiler(args)) is not None:
        backend = dynamo.backend.value.lower()
        if backend == "cudagraphs" or dynamo.mode in ("reduce-overhead", "max-autotune"):
            setting = f"backend {backend!r}" if backend == "cudagraphs" else f"mode {dynamo.mode!r}"
            problems.append(f"torch.compile {setting}, which captures CUDA graphs of its own "
                            "(use the default mode or max-autotune-no-cudagraphs)")
    if problems:
        raise OptionError("--cuda-graph captures whole single-process steps and does not support " + "; ".join(problems))


def uses_teacher(opts: TrainOptions) -> bool:
    return opts.alignment != "none" and opts.alignment_weight > 0


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


def _unwritable(folder: Path) -> str | None:
    """Why nothing can be written in ``folder`` (or where it would be made), or None: found by making and removing a
    folder there, as permissions alone do not tell (a read-only file system, /proc), and without leaving ``folder``
    behind for a run that is refused later."""
    nearest = next(place for place in (folder, *folder.parents) if place.exists())
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".clfa-", dir=nearest))
    except OSError as err:
        return f"{'it' if nearest == folder else 'it would be made in ' + str(nearest) + ', which'} cannot be written ({err.strerror or err})"
    return None


def check_task(opts: TrainOptions, data: DatasetSplits) -> None:
    """A task the run cannot learn or score is refused before the models load, not found out at the first evaluation."""
    counts = Counter(record.label for record in data["train"])
    seen = sorted(counts)
    if len(seen) < 2:
        raise DataError(f"dataset '{data.name}': the train split has {len(data['train'])} record(s) and "
                        f"{'only the label ' + repr(seen[0]) if seen else 'no labels'}; a classifier needs at least two")
    # A label on a handful of records among thousands is most often a typo, which would make a class of its own (a
    # label set given beforehand makes it an error instead).
    rare = [label for label, count in counts.items() if count < 10 and count * 100 < len(data["train"])]
    for label in sorted(rare) if labels_read_from_data(data) else ():
        # Numbers are classes by design ("1" is not a typo of "10").
        near = [] if label.isdigit() else difflib.get_close_matches(label, [other for other in seen if other != label], n=1, cutoff=0.6)
        logger.warning("the label %r is on %d of the %d train records: a class of its own%s", label, counts[label],
                       len(data["train"]), f" (a typo of {near[0]!r}?)" if near else "")
    if unseen := [label for label in data.labels if label not in seen]:
        logger.warning("no train record has the label(s) %s: the model cannot learn to predict %s", ", ".join(map(repr, unseen)),
                       "it" if len(unseen) == 1 else "them")
    if opts.metric in ("precision", "recall") and data.positive_label is None and data.splits.get("dev"):
        name_one = "name one with --positive-label, or " if len(data.labels) == 2 else ""
        raise OptionError(f"--metric {opts.metric} is that of the positive class, and this task of {len(data.labels)} labels "
                          f"({', '.join(data.labels)}) has none: {name_one}use macro_{opts.metric}")


def check_models(opts: TrainOptions) -> None:
    """Each model option names a model folder or a hub model (its config is read, nothing more): a wrong path is one
    line naming the option, not a traceback from deep in the loading."""
    from transformers import AutoConfig

    models = {"--text-model": opts.text_model, "--image-model": opts.image_model}
    if uses_teacher(opts):
        models["--teacher"] = opts.teacher
    for flag, name in models.items():
        if problem := lookup_problem(name):
            raise OptionError(f"{flag} {name}: {problem}")
        try:
            config = AutoConfig.from_pretrained(name)
        except (OSError, ValueError) as err:
            raise OptionError(f"{flag} {name}: not a model folder, nor a model the hub gave ({first_line(err)})") from None
        if problem := _wrong_kind(flag, config):
            raise OptionError(f"{flag} {name}: {problem}")


def _wrong_kind(flag: str, config) -> str | None:
    """Why a model cannot serve as ``flag`` (None if it can), from its config: a text student reads token ids, an
    image student pixels into patch tokens, and the teacher is a CLIP-style dual encoder with a joint embedding space."""
    kind = getattr(config, "model_type", "") or type(config).__name__
    dual = hasattr(config, "text_config") and hasattr(config, "vision_config")
    if flag == "--teacher":
        # A single CLIP tower "with projection" has projection_dim too, but no text and image pair to embed.
        return None if dual and hasattr(config, "projection_dim") else \
            f"a {kind} model, not a CLIP-style dual encoder (text and vision towers with a projection_dim)"
    if hasattr(config, "text_config") or hasattr(config, "vision_config"):
        return f"a {kind} model of several towers; a student is one encoder: give the folder or name of one tower"
    is_image = hasattr(config, "image_size")
    if flag == "--text-model" and (is_image or not hasattr(config, "vocab_size")):
        return f"a {kind} model without a token vocabulary, not a text encoder"
    if flag == "--image-model" and not is_image:
        return f"a {kind} model without an image_size, not a ViT-style image encoder (patch tokens in, features out)"
    if flag == "--image-model" and not hasattr(config, "hidden_size"):
        return (f"a {kind} model whose features come in several widths (a pyramid of feature maps, as a convolutional "
                "network's), not a ViT-style image encoder (patch tokens of one width)")
    if not hasattr(config, "hidden_size"):
        return f"a {kind} model without a hidden_size, the one width of its tokens that the mapping net reads"
    from transformers.models.auto.modeling_auto import MODEL_FOR_TEXT_ENCODING_MAPPING_NAMES, MODEL_MAPPING_NAMES

    if getattr(config, "is_encoder_decoder", False) and kind not in MODEL_FOR_TEXT_ENCODING_MAPPING_NAMES:
        return f"a {kind} encoder-decoder whose encoder transformers cannot load alone (AutoModelForTextEncoding)"
    if kind not in MODEL_MAPPING_NAMES:
        return f"a {kind} model, which transformers' AutoModel cannot build; a student is an AutoModel encoder"
    return None


def check_text_student(opts: TrainOptions, config: CLFAConfig, tokenizer, text_model) -> None:
    """What a text student's config does not tell: its tokenizer pads, and, for a ``cls`` pooling, its first token
    reads the text. Checked before the teacher and image caches are filled, which can take long."""
    if tokenizer.pad_token is None:
        raise OptionError(f"--text-model {opts.text_model}: its tokenizer has no padding token, and texts are padded to "
                          "--max-text-length; save the tokenizer with one (e.g. tokenizer.pad_token = tokenizer.eos_token)")
    # Where a cls pooling reads the text's first token: the classifier's, through these fusions; the alignment's,
    # whenever the students are aligned.
    pools_first = [flag for flag, reads_text in (
        ("--classifier-pooling cls", config.classifier_pooling == "cls" and config.fusion in ("cross_attention", "concat", "text_only")),
        ("--alignment-pooling cls", config.alignment_pooling == "cls" and config.uses_alignment)) if reads_text]
    if not pools_first:
        return
    if tokenizer.padding_side == "left":
        raise OptionError(f"{' and '.join(pools_first)}: the tokenizer of --text-model {opts.text_model} pads on the "
                          "left, so a short text's first token is padding; use mean")
    if not first_token_reads_the_text(text_model):
        raise OptionError(f"{' and '.join(pools_first)}: --text-model {opts.text_model} is a causal encoder, whose "
                          "first token does not see the text after it; use mean")


def experiment_trackers(report_to: str) -> list[str]:
    """``--report-to`` as the Trainer takes it, checked before any work: a tracker transformers does not know, or
    whose package is not installed, is an :class:`OptionError` rather than a traceback once the models have loaded."""
    from transformers.integrations import integration_utils as hf

    names = [name.strip() for name in report_to.split(",") if name.strip()]
    if names in ([], ["none"]):
        return []
    if names == ["all"]:
        return names
    if unknown := [name for name in names if name not in hf.INTEGRATION_TO_CALLBACK]:
        raise OptionError(f"--report-to {report_to}: unknown tracker(s) {unknown}; choose from none, all, "
                          + ", ".join(hf.INTEGRATION_TO_CALLBACK))
    available = set(hf.get_available_reporting_integrations())
    # That list leaves azure_ml out beside mlflow, and flyte always: those are asked directly.
    for name, check in (("azure_ml", "is_azureml_available"), ("flyte", "is_flytekit_available")):
        if getattr(hf, check, lambda: True)():
            available.add(name)
    if missing := [name for name in names if name not in available]:
        raise OptionError(f"--report-to {report_to}: {', '.join(missing)} cannot run here (its package is not installed, "
                          "or for kubeflow its server is not set); install it, or use --report-to none")
    return names


def training_arguments(opts: TrainOptions, has_dev: bool, find_unused_parameters: bool | None = None) -> TrainingArguments:
    """The Trainer's settings. Besides the paper's hyperparameters, what makes a step fast: bf16 autocast where the
    GPU supports it, fused AdamW, optional torch.compile (a ``reduce-overhead`` / ``max-autotune`` mode adds CUDA
    graphs), pinned batches copied without blocking, persistent loader workers, and no per-step host sync.
    ``find_unused_parameters``: whether DDP must look for parameters without gradients after each backward (see
    :func:`unused_parameters`); None leaves the Trainer's default, which looks."""
    precision = resolve_precision(opts.precision)
    strategy = ("steps" if opts.eval_steps else "epoch") if has_dev else "no"
    pin_memory = torch.cuda.is_available()
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
        # Said explicitly on machines without an accelerator: only then do torchrun / accelerate launch start a
        # multi-process CPU run (gloo), and the Trainer accepts bf16 autocast on the CPU. (`accelerate launch --cpu`
        # itself starts one process whatever --num_processes says; torchrun starts as many as asked.)
        use_cpu=not torch.cuda.is_available() and not torch.backends.mps.is_available(),
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
    )


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

    ``quiet``: the Trainer prints neither progress bars nor log lines; the given ``callbacks`` report instead.

    Writes the model (with tokenizer and image processor, ready for ``clfa predict``) and ``metrics.json``
    to ``opts.output_dir``, and returns the metrics.
    """
    for split, records in data.splits.items():
        require_labels(records, f"training ({split} split)")
    set_seed(opts.seed)
    out = Path(opts.output_dir)
    checkpoints = out / "checkpoints"
    if resume is True and not (checkpoints.is_dir() and get_last_checkpoint(str(checkpoints))):
        raise OptionError(f"--resume: no checkpoint to resume from in {checkpoints}")
    if not resume and checkpoints.is_dir() and get_last_checkpoint(str(checkpoints)):
        # A new run would save among them, and a later --resume would continue from whichever has the highest step.
        raise OptionError(f"--output-dir {out} holds checkpoints of an earlier run: add --resume to continue it, or give "
                          "another --output-dir (or remove that one)")
    for option, folder in (("--output-dir", out), ("--cache-dir", Path(opts.cache_dir))):
        if folder.exists() and not folder.is_dir():
            raise OptionError(f"{option} {folder}: a file, not a folder")
        # A file above it would stop the run with a bare NotADirectoryError once the models are loaded.
        if above := next((parent for parent in folder.parents if parent.exists() and not parent.is_dir()), None):
            raise OptionError(f"{option} {folder}: {above} is a file, so the folder cannot be made there")
        # The cache folder only where a cache is kept: a run without one must not fail on it.
        if (option == "--output-dir" or opts.image_cache or uses_teacher(opts)) and (problem := _unwritable(folder)):
            raise OptionError(f"{option} {folder}: {problem}")
    check_task(opts, data)  # before the models load
    record = run_record(opts, data)
    if resume:
        resumed_from = Path(resume) if isinstance(resume, str) else Path(get_last_checkpoint(str(checkpoints)))
        resumed_state = trainer_state(resumed_from)
        check_checkpoint_files(resumed_from)
        resumed_record = check_resumed_run(resumed_from, record)
    check_models(opts)
    parse_attention_backends(opts.attention_backends)
    experiment_trackers(opts.report_to)
    # The texts' rewriting is the data's, but the model must know it: prediction rewrites its inputs the same way.
    config = model_config(opts, data.labels, data.positive_label, normalize_text=bool(data.options.get("normalize_text")))
    resumed_at = 0
    if resume:
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
    if quiet:
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
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
                  "weights_finite": all(bool(torch.isfinite(p).all()) for p in trainer.model.parameters())},
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

    trainer.save_model(str(out))  # on every process: FSDP and DeepSpeed gather the weights collectively
    if trainer.is_world_process_zero():
        # The Trainer's pickle of its arguments has no place beside the model, which is safetensors and JSON: what
        # they held is in metrics.json. The checkpoints keep theirs, for --resume.
        (out / "training_args.bin").unlink(missing_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def print_summary(metrics: dict, title: str) -> None:
    rows = {split: metrics[split] for split in ("dev", "test") if split in metrics}
    if rows:  # without dev and test there is nothing to show, and the notes before the run said so
        print_table(metrics_table(rows, title=title))
