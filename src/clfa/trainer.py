"""The transformers ``Trainer``, as a CLFA run uses it: loss parts logged beside the total, images normalised on the
device, static shapes for compiled and captured steps, whole steps in one CUDA graph (``--cuda-graph``), the students
side by side (``--overlap-towers``), and loader workers ended with the call that started them."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch
from accelerate.utils import AutocastKwargs, DistributedType, DynamoBackend, TorchDynamoPlugin
from transformers import Trainer, TrainingArguments, set_seed
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.utils import is_sagemaker_mp_enabled

from clfa.attention_backends import attention_backends, parse_attention_backends
from clfa.cuda_graph import GraphableAdamW, StepGraph
from clfa.data.processing import ImageTransform
from clfa.errors import OptionError
from clfa.fused_linears import fusing_linears
from clfa.modeling import CLFAModel
from clfa.resume import RecordRun


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
        if self.args.world_size > 1 and self.args.data_seed is not None:
            # The Trainer seeds every process alike: each would drop the same units of its share of the batch.
            # Shuffling follows data_seed alone (without one, the global seed, which must then stay alike), and DDP
            # starts every process from the first one's weights: a seed per process changes only what the steps draw.
            set_seed((self.args.seed + self.args.process_index) % 2**32)
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
        base = _base_loader(loader)
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

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        # A checkpoint (the Trainer's own call, with its folder): the run's record goes in with the weights, before the
        # optimizer, scheduler and trainer_state.json, which the Trainer writes last (see RecordRun).
        if _internal_call and output_dir is not None and self.is_world_process_zero():
            for callback in self.callback_handler.callbacks:
                if isinstance(callback, RecordRun):
                    callback.write(Path(output_dir), self.args.world_size)

    def _init_training_state(self, max_steps, num_update_steps_per_epoch, num_train_epochs, *args, **kwargs):
        epochs_trained, steps_skipped = super()._init_training_state(max_steps, num_update_steps_per_epoch, num_train_epochs,
                                                                     *args, **kwargs)
        # A finished run resumed (cut short in its final evaluation or save, or resumed to evaluate again) whose
        # --max-steps ended inside an epoch: the Trainer would take one step beyond --max-steps, and save it, before it
        # looks at the step count. No epoch is left to run.
        if self.state.global_step >= max_steps:
            return num_train_epochs, 0
        return epochs_trained, steps_skipped

    # The Trainer sums the step losses between two log lines in a float32 tensor, then those sums in a Python float:
    # the run's mean loss (metrics.json) changed in its last digits with --logging-steps.
    # float64 holds a sum of float32 losses exactly (29 bits to spare for their range and count), so the mean no longer
    # depends on where the log lines cut it (MPS has no float64).
    @property
    def _tr_loss(self) -> torch.Tensor:
        try:
            return self.__dict__["_tr_loss"]
        except KeyError:  # before the first training loop: absent, as an attribute is (hasattr, getattr with a default)
            raise AttributeError("_tr_loss") from None

    @_tr_loss.setter
    def _tr_loss(self, value: torch.Tensor) -> None:
        sums = isinstance(value, torch.Tensor) and value.is_floating_point() and value.device.type != "mps"
        self.__dict__["_tr_loss"] = value.double() if sums else value

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


# Left out of the lines: the epoch is in each line's head, and an evaluation's rates repeat its runtime (the
# Trainer still hands them all to --report-to).
_UNLOGGED = ("epoch", "total_flos", "eval_samples_per_second", "eval_steps_per_second")


def log_line(logs: dict, state) -> str:
    """A Trainer log entry as a line to read (and grep): ``step 20/300 (epoch 0.4): loss 0.6931, grad_norm 1.2, ...``,
    not the dict it is handed (``{'loss': '0.6931', ...}``)."""
    where = f"step {state.global_step}/{state.max_steps}" if state.max_steps else f"step {state.global_step}"
    if (epoch := logs.get("epoch")) is not None:
        where += f" (epoch {epoch:.4g})"
    values = ", ".join(f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}"
                       for name, value in logs.items() if name not in _UNLOGGED)
    return f"{where}: {values}"


class PrinterToStderr(PrinterCallback):
    """The Trainer's log lines without a progress bar (``--progress false``, or stderr not a terminal: a log file then
    shows the run's progress as these lines), on stderr: stdout holds the command's results."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_local_process_zero and logs:
            print(log_line(logs, state), file=sys.stderr, flush=True)


class ProgressToStderr(ProgressCallback):
    """The Trainer's progress bars (on stderr already) and its log lines, both on stderr."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            self.training_bar.write(log_line(logs, state), file=sys.stderr)


def _base_loader(loader) -> torch.utils.data.DataLoader:
    return getattr(loader, "base_dataloader", loader)  # accelerate's prepared loaders wrap a DataLoader


def end_loader_workers(loader) -> None:
    """Ends the worker processes of a data loader's persistent iterator now, not whenever the garbage collector
    frees the loader. The Trainer keeps its loaders in reference cycles, and when the collector frees such a cycle
    it runs the finalizers of the workers' index queues first, which stop the threads that feed those queues. The
    iterator's own clean-up then asks each worker to stop through a queue that no longer sends, and waits 5 s for
    each worker before killing it: 10 s with the default 2 workers, at the end of a run or in the middle of a later
    one. A later iteration of the loader starts new workers."""
    base = _base_loader(loader)
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
