"""Whole training steps in one CUDA graph.

At the paper's batch of 8 a step's GPU work is shorter than the host's work to launch it: torch.compile's CUDA
graphs (``--compile-mode reduce-overhead``) cover the forward and the backward, but gradient clipping and the AdamW
update still walk hundreds of tensors from Python, and the GPU waits. :class:`StepGraph` captures forward, backward,
clipping and the fused AdamW update together (PyTorch's "whole-network capture"), so a step costs the host one graph
launch and a few copies while the GPU runs the previous one.

What a graph replays is fixed at capture: the same input and output tensors (batches are copied into the former),
the same shapes (static: texts padded to the maximum length, the last partial batch dropped) and the same scalars.
The learning rate therefore reaches the update as a device tensor (:class:`GraphableAdamW`), refreshed from the
schedule before every replay.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

logger = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]


class GraphableAdamW(torch.optim.AdamW):
    """AdamW whose update runs inside the training step (:meth:`update`), and so inside its CUDA graph.

    The Trainer calls ``step()`` after every training step; here that call only acknowledges the update the step
    made (:meth:`mark_updated`), and raises if there was none, so a step can neither be skipped nor run twice. Each
    param group keeps its float ``lr`` for the scheduler and the logs; :meth:`update` reads a device copy that
    :meth:`refresh_lr` sets from it outside the graph.
    """

    def __init__(self, params, **kwargs):
        super().__init__(params, **kwargs)
        self._device_lrs: list[torch.Tensor] | None = None
        self._updated = False
        self.grad_scale: torch.Tensor | None = None  # read by AdamW.step, set only inside update()

    def refresh_lr(self) -> None:
        if self._device_lrs is None:
            # On the parameters' device (a group may be empty: every parameter of one kind frozen). float32: fused
            # AdamW's CUDA kernel reads a tensor learning rate as a float pointer.
            device = next(p.device for group in self.param_groups for p in group["params"])
            self._device_lrs = [torch.zeros((), dtype=torch.float32, device=device) for _ in self.param_groups]
        for lr, group in zip(self._device_lrs, self.param_groups):
            lr.fill_(group["lr"])

    def make_capturable(self) -> None:
        """Before capture: the step counters must already live on the device, as fused AdamW keeps them."""
        for group in self.param_groups:
            if not group["fused"]:
                raise RuntimeError("CUDA graph capture of the AdamW update needs fused AdamW (optim adamw_torch_fused)")
            group["capturable"] = True

    def update(self, grad_factor: torch.Tensor | None = None) -> None:
        """One AdamW step, with every gradient first multiplied by ``grad_factor`` (a device scalar) if given: the
        clipping coefficient. Fused AdamW applies it inside its own kernel, as the inverse of the ``grad_scale`` that
        mixed-precision loss scaling uses, and writes the gradients back scaled, as clipping leaves them: one read
        of every gradient less than clipping first (210 M of them at the paper's sizes)."""
        if self._device_lrs is None:
            raise RuntimeError("GraphableAdamW.update() before refresh_lr()")
        if grad_factor is not None:
            grad_factor = grad_factor.float()
            if all(group["fused"] for group in self.param_groups):
                self.grad_scale = grad_factor.reciprocal()
            else:
                grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
                torch._foreach_mul_(grads, grad_factor)
        floats = [group["lr"] for group in self.param_groups]
        for group, lr in zip(self.param_groups, self._device_lrs):
            group["lr"] = lr
        try:
            super().step()
        finally:
            self.grad_scale = None
            for group, lr in zip(self.param_groups, floats):
                group["lr"] = lr

    def mark_updated(self) -> None:
        self._updated = True

    def step(self, closure=None):
        if not self._updated:
            raise RuntimeError("GraphableAdamW updates inside the training step; step() without such an update")
        self._updated = False
        return None


class StepGraph:
    """Runs ``step(batch)``, one whole training step on a batch already on ``device``: eagerly for the first
    ``warmup`` steps (torch.compile compiles, cuBLAS and the optimizer state initialise), then, on a CUDA device,
    captures the next step into a CUDA graph and replays it from then on.

    ``before_capture`` runs just before the capture: the place to set gradients to None, so that the captured
    backward allocates them in the graph's memory, and to make the optimizer capturable. Returned outputs are the
    graph's own tensors after capture: the next replay overwrites them, in stream order, so they may be read or
    summed on the device but not kept. On any other device every step runs eagerly.
    """

    def __init__(self, step: Callable[[Batch], tuple], device: torch.device, warmup: int = 3,
                 before_capture: Callable[[], None] | None = None):
        if warmup < 1:
            # A first step creates what a capture must not: the optimizer state, cached device copies of constants
            # (copied from pageable host memory), cuBLAS workspaces and compiled code.
            raise ValueError(f"StepGraph needs at least 1 eager warm-up step before the capture, not {warmup}")
        self.step, self.device, self.warmup, self.before_capture = step, torch.device(device), warmup, before_capture
        self.eager_steps = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self._side_stream: torch.cuda.Stream | None = None
        self._inputs: Batch = {}
        self._outputs: tuple = ()
        if self.device.type != "cuda":
            logger.warning("CUDA graphs need a CUDA device; on %s every training step runs eagerly", self.device)

    def __call__(self, batch: Batch) -> tuple:
        if self.device.type != "cuda":
            return self.step({key: value.to(self.device, non_blocking=True) for key, value in batch.items()})
        # The step's GPU current throughout: torch.cuda.graph synchronizes and captures on the current GPU, and
        # leaving a stream of another GPU sets the current one back (a context opened on the first GPU).
        with torch.cuda.device(self.device):
            if self.graph is not None:
                self._copy_in(batch)
                self.graph.replay()
                return self._outputs
            batch = {key: value.to(self.device, non_blocking=True) for key, value in batch.items()}
            if self.eager_steps < self.warmup:
                self.eager_steps += 1
                return self._on_side_stream(batch)
            return self._capture(batch)

    def _on_side_stream(self, batch: Batch) -> tuple:
        # As PyTorch's whole-network capture does: warm-up work on a side stream, so that nothing the capture
        # stream will need is tied to the default stream; one stream for all of it, as memory cached for one
        # stream is not handed to another.
        if self._side_stream is None:
            self._side_stream = torch.cuda.Stream(self.device)
        ambient, side = torch.cuda.current_stream(self.device), self._side_stream
        side.wait_stream(ambient)
        with torch.cuda.stream(side):
            outputs = self.step(batch)
        ambient.wait_stream(side)
        return outputs

    def _capture(self, batch: Batch) -> tuple:
        # The graph's input tensors, owned here: the batch may be the data loader's own device tensors.
        self._inputs = {key: value.clone() for key, value in batch.items()}
        if self.before_capture:
            self.before_capture()
        graph = torch.cuda.CUDAGraph()
        # thread_local: the data loader's pin-memory thread keeps calling the CUDA runtime during the capture, and
        # only this thread's calls must be capture-safe. (Unsafe calls from other threads, autograd's included, go
        # unreported; work queued on the capture stream is still checked.) A capture stream on the step's GPU: the
        # one torch.cuda.graph makes itself is made once per process, on whichever GPU was current then.
        with torch.cuda.graph(graph, stream=torch.cuda.Stream(self.device), capture_error_mode="thread_local"):
            self._outputs = self.step(self._inputs)
        self.graph = graph
        graph.replay()  # capturing records the step without running it
        return self._outputs

    def _copy_in(self, batch: Batch) -> None:
        if batch.keys() != self._inputs.keys():
            raise RuntimeError(f"batch fields {sorted(batch)} differ from the captured step's {sorted(self._inputs)}")
        for key, value in batch.items():
            static = self._inputs[key]
            if value.shape != static.shape or value.dtype != static.dtype:
                raise RuntimeError(
                    f"batch field {key!r} is {tuple(value.shape)} {value.dtype}, the captured step's is "
                    f"{tuple(static.shape)} {static.dtype}: a CUDA graph replays static shapes only"
                )
            static.copy_(value, non_blocking=True)
