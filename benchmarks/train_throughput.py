"""Training throughput of a plain reading of the paper ("naive") against the project's training path ("fast").

Both paths train the same CLFA model (same configs, same random init, same batches) on synthetic data: random
token ids and random uint8 pixels, so nothing is downloaded and the figures depend only on the model's shapes.

naive: fp32, eager (no compile), the CLIP teacher run on every batch inside the loop, torch AdamW without
    foreach/fused kernels, samples read one at a time, pixels normalised on the host and copied with blocking copies, no loader workers,
    eager (non-SDPA) attention, patch embeddings as convolutions. The same hyperparameters as the Trainer (AdamW groups, linear warm-up/decay,
    gradient clipping), so the two paths differ only in how fast they compute the same thing.
fast: exactly what ``clfa train`` runs: :func:`clfa.training.build_trainer` (CLFATrainer + training_arguments) on a
    real :class:`clfa.data.processing.CLFADataset` whose teacher embeddings are cached (computed once, before
    training) and whose images come from an in-memory uint8 array, as from the image cache.

Steps are timed after ``--warmup`` steps (which include compilation), with torch.cuda.synchronize on GPU. For the
fast path it also prints how long the host was busy per step, and how much of that in the Trainer's ``training_step``:
on a GPU, a host busy for less than a step's time is not what bounds it.
By default both paths run, each in its own process (so peak memory is per path), and the ratio is printed.

    python benchmarks/train_throughput.py --size tiny
    python benchmarks/train_throughput.py --size paper --device cuda --batch-size 256 --compile --json
    python benchmarks/train_throughput.py --size paper --device cuda --batch-size 8 --compile --cuda-graph
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # beside this script, also when it is loaded as a module
from arguments import add_device_argument, check_attention_backends, device_or_default, inductor_setting, positive_number  # noqa: E402
from clfa.options import PRECISIONS, positive_int, whole_number  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--path", choices=("naive", "fast", "both"), default="both")
    parser.add_argument("--size", choices=("paper", "tiny", "overhead"), default="tiny",
                        help="overhead: the paper's layer counts at tiny widths, to measure the per-step framework overhead")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    add_device_argument(parser)
    parser.add_argument("--steps", type=int, default=20, help="timed optimiser steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation happens here)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help="fast path only")
    parser.add_argument("--compile", action="store_true", help="fast path: torch.compile")
    parser.add_argument("--compile-mode", choices=("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
                        help="fast path: torch.compile mode (reduce-overhead and max-autotune use CUDA graphs)")
    parser.add_argument("--cuda-graph", action="store_true",
                        help="fast path: whole training steps, captured in one CUDA graph on a GPU (clfa train --cuda-graph true)")
    parser.add_argument("--overlap-towers", action="store_true",
                        help="fast path, with --cuda-graph: the students side by side on two CUDA streams (clfa train --overlap-towers true)")
    parser.add_argument("--fuse-linears", action="store_true",
                        help="fast path, compiled: linears that read one input as one matrix product (clfa train --fuse-linears true)")
    parser.add_argument("--attention-backends", metavar="NAMES",
                        help="fast path: SDPA backends the attention calls may use, first supported first, e.g. "
                             "efficient,flash,math (clfa train --attention-backends; step_parts.py --part attention "
                             "names the fastest)")
    parser.add_argument("--inductor", type=inductor_setting, action="append", default=[], metavar="KEY=VALUE",
                        help="fast path: set one of torch._inductor.config's values before anything compiles (for example "
                             "combo_kernels=True; repeatable; most of them have no environment variable)")
    parser.add_argument("--workers", type=whole_number, default=2, help="fast path: data loader workers")
    parser.add_argument("--unique", type=positive_int, default=512, help="distinct synthetic samples (the data cycles over them)")
    parser.add_argument("--threads", type=positive_int, help="CPU threads for torch (default: torch's choice); on a shared machine 1 is steadier")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="after the timed steps, profile N more (torch.profiler) and print where a step's time goes")
    parser.add_argument("--take-turns", metavar="FOLDER",
                        help="runs started together with the same FOLDER compile and warm up side by side, then time "
                             "their steps one at a time (benchmarks/turns.py): several runs in about the time of one")
    parser.add_argument("--turn-patience", type=positive_number, default=1200.0, metavar="SECONDS",
                        help="with --take-turns: the longest a warmed-up run waits for the others to warm up (a run that "
                             "hangs must not hold up the rest); after it, it is timed alongside them, and says so")
    parser.add_argument("--json", action="store_true", help="end with one JSON object on the last line")
    args = parser.parse_args(argv)
    check_attention_backends(parser, args.attention_backends)
    if args.warmup < 1 or args.steps < 1 or args.profile < 0:
        parser.error("--warmup and --steps must be at least 1 (the clock starts at the end of the last warm-up step), --profile at least 0")
    args.device = device_or_default(parser, args.device)
    return args


# The command line is read before the imports below, which take seconds: --help and a refused option answer at once.
ARGS = parse_args() if __name__ == "__main__" else None

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch._inductor.config  # noqa: E402
from torch import nn  # noqa: E402
from transformers import (AutoModel, BertConfig, CLIPConfig, CLIPModel, Trainer, TrainerCallback, ViTConfig,  # noqa: E402
                          ViTImageProcessorPil, get_linear_schedule_with_warmup)
from transformers.trainer_callback import PrinterCallback  # noqa: E402
from transformers.trainer_pt_utils import get_parameter_names  # noqa: E402

from clfa.configuration import CLFAConfig  # noqa: E402
from clfa.data.processing import CLFADataset, Collator, ImageTransform  # noqa: E402
from clfa.data.records import Record  # noqa: E402
from clfa.errors import OptionError  # noqa: E402
from clfa.modeling import CLFAModel  # noqa: E402
from clfa.options import TrainOptions  # noqa: E402
from clfa.patch_projection import PatchProjection  # noqa: E402
from clfa.precision import resolve_precision  # noqa: E402
from clfa.teacher import projected_embedding  # noqa: E402
from clfa.training import build_trainer  # noqa: E402

LABELS = ["negative", "positive"]


# --- model ------------------------------------------------------------------------------------------------------

def size_configs(size: str, dropout: float | None = None) -> dict:
    """Configs of the students, the teacher and the CLFA head. ``paper``: BERT-base, ViT-B/32 at 224, CLIP ViT-B/32
    teacher (projection 512), 3 cross-attention layers. ``tiny``: the same structure, a few thousand times smaller.
    ``dropout``: overrides every dropout (0 makes two runs comparable step by step)."""
    if size == "paper":
        text = BertConfig()
        image = ViTConfig(image_size=224, patch_size=32)
        teacher = CLIPConfig(
            text_config=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8, max_position_embeddings=77),
            vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=224, patch_size=32),
            projection_dim=512,
        )
        head = dict(align_dim=512, mapping_hidden_dim=1536, fusion_layers=3, fusion_heads=8, fusion_ffn_dim=2048, max_text_length=77)
        image_size, vocab = 224, 30522
    elif size == "tiny":
        small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
        text = BertConfig(vocab_size=1000, max_position_embeddings=64, **small)
        image = ViTConfig(image_size=32, patch_size=8, **small)
        teacher = CLIPConfig(
            text_config=dict(vocab_size=1000, max_position_embeddings=64, bos_token_id=1, eos_token_id=3, **small),
            vision_config=dict(image_size=32, patch_size=8, **small),
            projection_dim=32,
        )
        head = dict(align_dim=32, mapping_hidden_dim=64, fusion_layers=1, fusion_heads=2, fusion_ffn_dim=64, max_text_length=16)
        image_size, vocab = 32, 1000
    elif size == "overhead":
        # The paper's layers, heads and parameter tensors at widths so small that a step is almost all framework
        # overhead (Python, module calls, optimiser bookkeeping): the floor that bounds small-batch GPU steps.
        text_layers = dict(hidden_size=24, num_hidden_layers=12, num_attention_heads=12, intermediate_size=48)
        vision_layers = dict(hidden_size=24, num_hidden_layers=12, num_attention_heads=12, intermediate_size=48)
        text = BertConfig(vocab_size=1000, max_position_embeddings=64, **text_layers)
        image = ViTConfig(image_size=32, patch_size=8, **vision_layers)
        teacher = CLIPConfig(
            text_config=dict(vocab_size=1000, max_position_embeddings=64, bos_token_id=1, eos_token_id=3, hidden_size=16,
                             num_hidden_layers=12, num_attention_heads=8, intermediate_size=32),
            vision_config=dict(image_size=32, patch_size=8, hidden_size=24, num_hidden_layers=12, num_attention_heads=12, intermediate_size=48),
            projection_dim=16,
        )
        head = dict(align_dim=16, mapping_hidden_dim=48, fusion_layers=3, fusion_heads=8, fusion_ffn_dim=32, max_text_length=16)
        image_size, vocab = 32, 1000
    else:
        raise ValueError(f"unknown size {size!r}")
    if dropout is not None:
        for config in (text, image, teacher.text_config, teacher.vision_config):
            for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "attention_dropout", "dropout"):
                if hasattr(config, name):
                    setattr(config, name, dropout)
        head["dropout"] = dropout
    return {"text": text, "image": image, "teacher": teacher, "head": head, "image_size": image_size, "vocab": vocab}


def build_model(configs: dict, seed: int, attention: str = "sdpa") -> CLFAModel:
    """A randomly initialised CLFA model; the same ``seed`` gives the same weights whatever the attention kernel."""
    torch.manual_seed(seed)
    text = AutoModel.from_config(configs["text"], add_pooling_layer=False, attn_implementation=attention)
    image = AutoModel.from_config(configs["image"], add_pooling_layer=False, attn_implementation=attention)
    config = CLFAConfig(
        text_config=text.config.to_dict(),
        image_config=image.config.to_dict(),
        id2label=dict(enumerate(LABELS)),
        label2id={name: i for i, name in enumerate(LABELS)},
        **configs["head"],
    )
    return CLFAModel(config, text_model=text, image_model=image)


def build_teacher(configs: dict, seed: int, attention: str = "sdpa") -> CLIPModel:
    torch.manual_seed(seed + 1)
    return AutoModel.from_config(configs["teacher"], attn_implementation=attention).eval().requires_grad_(False)


@torch.no_grad()
def teacher_forward(teacher: CLIPModel, input_ids, attention_mask, pixel_values) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's projected (text, image) embeddings in fp32: what the cache holds and the naive path recomputes."""
    text = teacher.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
    image = teacher.get_image_features(pixel_values=pixel_values)
    return projected_embedding(text).float(), projected_embedding(image).float()


# --- data -------------------------------------------------------------------------------------------------------

class RandomTokenizer:
    """Stands in for a tokenizer: record ``i``'s text is ``str(i)`` and maps to row ``i % n`` of fixed random token
    ids with random lengths, padded to ``max_length`` like the real tokenisation."""

    def __init__(self, n: int, max_length: int, vocab: int, seed: int):
        rng = np.random.default_rng(seed)
        lengths = rng.integers(max(2, max_length // 4), max_length + 1, size=n)
        self.mask = torch.from_numpy((np.arange(max_length)[None] < lengths[:, None]).astype(np.int64))
        self.ids = torch.from_numpy(rng.integers(5, vocab, size=(n, max_length))) * self.mask

    def __call__(self, texts, **_):
        rows = torch.tensor([int(text) % len(self.ids) for text in texts])
        return {"input_ids": self.ids[rows], "attention_mask": self.mask[rows]}


def synthetic_batch(configs: dict, batch: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """One training batch of the model's inputs on ``device``, random and the same for the same configs and size."""
    generator = torch.Generator().manual_seed(0)
    size, align = configs["image_size"], configs["head"]["align_dim"]
    texts = RandomTokenizer(batch, configs["head"]["max_text_length"], configs["vocab"], seed=0)
    inputs = {
        "input_ids": texts.ids,
        "attention_mask": texts.mask,
        "pixel_values": torch.randn(batch, 3, size, size, generator=generator),
        "labels": torch.randint(0, 2, (batch,), generator=generator),
        "teacher_text_embeds": torch.randn(batch, align, generator=generator),
        "teacher_image_embeds": torch.randn(batch, align, generator=generator),
    }
    return {key: value.to(device) for key, value in inputs.items()}


class SyntheticData:
    """``total`` samples cycling over ``unique`` distinct ones: token ids, uint8 pixels, labels."""

    def __init__(self, configs: dict, total: int, unique: int, seed: int):
        size, length = configs["image_size"], configs["head"]["max_text_length"]
        rng = np.random.default_rng(seed)
        self.total, self.unique = total, unique
        self.pixels = rng.integers(0, 256, size=(unique, 3, size, size), dtype=np.uint8)
        labels = rng.integers(0, len(LABELS), size=unique)
        self.records = [Record(id=str(i), text=str(i), image=Path(f"synthetic/{i}.jpg"), label=LABELS[labels[i % unique]]) for i in range(total)]
        self.tokenizer = RandomTokenizer(unique, length, configs["vocab"], seed)
        self.transform = ImageTransform(ViTImageProcessorPil(size={"height": size, "width": size}))
        self.max_length = length

    def dataset(self, teacher_embeds: tuple[torch.Tensor, torch.Tensor] | None = None) -> CLFADataset:
        if teacher_embeds is not None:
            rows = torch.arange(self.total) % self.unique
            teacher_embeds = (teacher_embeds[0][rows], teacher_embeds[1][rows])
        label2id = {name: i for i, name in enumerate(LABELS)}
        # One real array, as the image cache is (numpy gathers batches from it): the distinct images repeated.
        images = self.pixels[np.arange(self.total) % self.unique]
        return CLFADataset(self.records, self.tokenizer, self.transform, self.max_length, label2id, images, teacher_embeds)

    def teacher_embeddings(self, teacher: CLIPModel, device: torch.device, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """The cache the fast path trains from: the teacher run once over the distinct samples."""
        teacher = teacher.to(device)
        texts, images = [], []
        for start in range(0, self.unique, batch_size):
            rows = torch.arange(start, min(start + batch_size, self.unique))
            pixels = self.transform.normalize(torch.from_numpy(self.pixels[rows.numpy()]))
            t, i = teacher_forward(teacher, self.tokenizer.ids[rows].to(device), self.tokenizer.mask[rows].to(device), pixels.to(device))
            texts.append(t.cpu())
            images.append(i.cpu())
        teacher.cpu()
        return torch.cat(texts), torch.cat(images)


# --- the two paths ----------------------------------------------------------------------------------------------

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def turn_step(warmup: int) -> int:
    """The step after which a run with ``--take-turns`` waits for its turn: the last warm-up step but one, so that
    one warm-up step runs in the turn, after :func:`take_turn`."""
    return max(1, warmup - 1)


def take_turn(turns, device: torch.device) -> None:
    """Waits for this run's turn (a :class:`turns.Turns`), having first given the GPU memory this process holds in
    its allocator's cache, unused, back to the driver: the runs that wait must fit in the GPU together, and one
    that captured a CUDA graph still caches what its eager warm-up steps used. The warm-up step that follows caches
    again what the timed steps need."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    turns.take()


# Checked in this order: Triton kernels first, as inductor names them after the operators they fuse
# ("triton_poi_fused_convolution_backward_..." is elementwise work, not a convolution), attention before matrix
# products (memory-efficient attention's kernels are named fmha_cutlass...).
KERNEL_FAMILIES = (
    ("Triton (inductor's fused elementwise and reductions)", ("triton_",)),
    ("attention", ("flash", "fmha", "attention", "sdpa")),
    ("matrix products and convolutions", ("gemm", "cutlass", "xmma", "nvjet", "cublas", "wgrad", "dgrad", "conv")),
    ("optimizer and other multi-tensor kernels", ("adam", "multi_tensor")),
    ("copies and fills", ("memcpy", "memset", "copy", "fill")),
)


def kernel_breakdown(kernels: list[tuple[str, float, int]], steps: int, top: int = 12) -> list[str]:
    """GPU time and kernels per step by kind of kernel, then the Triton kernels that take most: where elementwise
    time goes. ``kernels``: (name, total device microseconds, calls) over ``steps`` profiled steps."""
    families: dict[str, list[float]] = {}
    triton: dict[str, list[float]] = {}
    for name, micros, calls in kernels:
        lower = name.lower()
        family = next((label for label, marks in KERNEL_FAMILIES if any(mark in lower for mark in marks)), "other")
        tables = [(families, family)]
        if family == KERNEL_FAMILIES[0][0]:
            tables.append((triton, name.rstrip("0123456789").rstrip("_")))
        for table, key in tables:
            entry = table.setdefault(key, [0.0, 0])
            entry[0] += micros
            entry[1] += calls
    lines = ["GPU time by kind of kernel, ms/step (kernels/step): " + "; ".join(
        f"{label} {micros / 1000 / steps:.2f} ({calls / steps:.0f})"
        for label, (micros, calls) in sorted(families.items(), key=lambda item: -item[1][0]))]
    for name, (micros, calls) in sorted(triton.items(), key=lambda item: -item[1][0])[:top]:
        lines.append(f"  {micros / 1000 / steps:7.3f} ms/step {calls / steps:6.1f} calls/step  {name}")
    return lines


class StepProfiler:
    """torch.profiler over ``steps`` more steps after the timed ones, to tell where a step's time goes: how long the
    GPU computes per step against the wall time of a step (the rest is the GPU waiting for the host), and the
    operators that cost most on the device and on the host. The profiler slows the host, so the throughput figures
    come from the unprofiled steps before."""

    def __init__(self, device: torch.device, steps: int):
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
            # A CUDA graph captured before the profiler first starts can crash or hang when replayed under it
            # (pytorch/pytorch#75504); this starts the profiler once, before --cuda-graph captures its step.
            getattr(torch.profiler._utils, "_init_for_cuda_graphs", lambda: None)()
        self.device, self.steps = device, steps
        self.profile = torch.profiler.profile(activities=activities)
        self.seconds = 0.0

    def start(self) -> None:
        self.profile.start()
        self.seconds = time.perf_counter()

    def stop(self) -> None:
        sync(self.device)
        self.seconds = time.perf_counter() - self.seconds
        self.profile.stop()

    def summary(self, rows: int = 12) -> str:
        events, steps, seconds = self.profile.key_averages(), self.steps, self.seconds
        lines = [f"profiled {steps} steps: {1000 * seconds / steps:.2f} ms/step wall (profiler on)"]
        if self.device.type == "cuda":
            # Kernels only: user annotations (Optimizer.step#...) are GPU-side ranges over kernels counted already.
            kernels = [(e.key, e.self_device_time_total, e.count) for e in events
                       if e.device_type == torch.autograd.DeviceType.CUDA and not e.is_user_annotation]
            micros = sum(duration for _, duration, _ in kernels)
            calls = sum(count for _, _, count in kernels)
            # At small batches the number of kernels, more than their arithmetic, sets the GPU's time.
            lines.append(f"GPU kernels: {micros / 1000 / steps:.2f} ms/step ({micros / 1e4 / seconds:.0f}% of the profiled "
                         f"wall time), {calls / steps:.0f} kernels/step, {micros / max(calls, 1):.1f} us each on average")
            lines += kernel_breakdown(kernels, steps)
            lines.append(events.table(sort_by="self_device_time_total", row_limit=rows, max_name_column_width=70))
        lines.append(events.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=70))
        lines.append(events.table(sort_by="cpu_time_total", row_limit=rows, max_name_column_width=70))
        return "\n".join(lines)


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """The Trainer's AdamW groups: no weight decay on biases and norm weights."""
    decay = set(get_parameter_names(model, [nn.LayerNorm], [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]))
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in params if n in decay], "weight_decay": weight_decay},
        {"params": [p for n, p in params if n not in decay], "weight_decay": 0.0},
    ]


def run_naive(configs: dict, data: SyntheticData, batch_size: int, warmup: int, steps: int, device: torch.device,
              seed: int, lr: float = 1e-5, shuffle: bool = True, attention: str = "eager", profiler: StepProfiler | None = None,
              turns=None) -> dict:
    """fp32 eager loop; the teacher runs on every batch. Returns timings and the per-step losses. ``turns``: a
    :class:`turns.Turns`, taken before the last warm-up step (:func:`turn_step`)."""
    opts = TrainOptions()
    model = build_model(configs, seed, attention).to(device).train()
    for module in model.modules():
        if isinstance(module, PatchProjection):
            module.__class__ = nn.Conv2d  # the patch embedding as the convolution the encoders write it as
    teacher = build_teacher(configs, seed, attention).to(device)
    optimizer = torch.optim.AdamW(decay_groups(model, opts.weight_decay), lr=lr, foreach=False, fused=False)
    total = warmup + steps
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(total * opts.warmup_ratio), total)
    generator = torch.Generator().manual_seed(seed)
    # Sample by sample, as a plain Dataset is read (ConcatDataset hides CLFADataset's whole-batch __getitems__).
    samples = torch.utils.data.ConcatDataset([data.dataset()])
    loader = torch.utils.data.DataLoader(samples, batch_size=batch_size, shuffle=shuffle, generator=generator, collate_fn=Collator(data.transform))
    losses, start = [], None
    for step, batch in enumerate(loader):
        batch = {key: value.to(device) for key, value in batch.items()}
        teacher_text, teacher_image = teacher_forward(teacher, batch["input_ids"], batch["attention_mask"], batch["pixel_values"])
        loss = model(**batch, teacher_text_embeds=teacher_text, teacher_image_embeds=teacher_image).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # the Trainer's default max_grad_norm
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
        if turns and step + 1 == turn_step(warmup):
            take_turn(turns, device)
        if step + 1 == warmup:  # as in the fast path: timed from the end of the last warm-up step
            sync(device)
            start = time.perf_counter()
        if step + 1 == total:
            sync(device)
            elapsed = time.perf_counter() - start
            if profiler:
                profiler.start()
        if step + 1 == total + (profiler.steps if profiler else 0):
            break
    if profiler:
        profiler.stop()
    return {"seconds": elapsed, "losses": [float(x) for x in losses]}


class StepTimer(TrainerCallback):
    """Times optimiser steps ``warmup`` to ``warmup + steps``, collects logged losses, and keeps the benchmark from
    writing checkpoints.

    Also the host's side of those steps: ``host_stop`` is when the host had queued the last of them (before waiting
    for the device), and ``in_training_step`` the host time spent in the Trainer's ``training_step`` (with
    ``--cuda-graph`` on a GPU: copying a batch in and launching the graph); the rest of the host's time is the
    Trainer's loop, the data loader and the callbacks. A host that finishes well before the device is not what
    bounds the step.

    ``turns`` (a :class:`turns.Turns`) is taken before the last warm-up step (:func:`turn_step`)."""

    def __init__(self, warmup: int, steps: int, device: torch.device, profiler: StepProfiler | None = None, turns=None):
        self.warmup, self.end, self.device, self.profiler, self.turns = warmup, warmup + steps, device, profiler, turns
        self.start = self.stop = self.host_stop = None
        self.in_training_step = 0.0
        self.losses: list[float] = []

    def time_training_steps(self, trainer: Trainer) -> None:
        inner = trainer.training_step

        def training_step(*args, **kwargs):
            begin = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                if self.start is not None and self.host_stop is None:
                    self.in_training_step += time.perf_counter() - begin

        trainer.training_step = training_step

    def on_step_end(self, args, state, control, **kwargs):
        if self.turns and state.global_step == turn_step(self.warmup):
            take_turn(self.turns, self.device)
        if state.global_step in (self.warmup, self.end):
            if state.global_step == self.end:
                self.host_stop = time.perf_counter()
            sync(self.device)
            now = time.perf_counter()
            if state.global_step == self.warmup:
                self.start = now
            else:
                self.stop = now
                if self.profiler:
                    self.profiler.start()
        if self.profiler and state.global_step == self.end + self.profiler.steps:
            self.profiler.stop()
        control.should_save = False

    def on_epoch_end(self, args, state, control, **kwargs):
        control.should_save = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(logs["loss"])


def run_fast(configs: dict, data: SyntheticData, batch_size: int, warmup: int, steps: int, seed: int, lr: float = 1e-5,
             precision: str = "auto", compile: bool = False, compile_mode: str | None = None, cuda_graph: bool = False,
             overlap_towers: bool = False, fuse_linears: bool = False, workers: int = 2, sampling: str = "random", record_losses: bool = False, profiler: StepProfiler | None = None,
             turns=None, attention_backends: str | None = None) -> dict:
    """The project's training path on the synthetic data, with teacher embeddings cached before training."""
    model = build_model(configs, seed, "sdpa")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cached = data.teacher_embeddings(build_teacher(configs, seed, "sdpa"), device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)  # the one-off teacher pass is not part of training's memory
    with tempfile.TemporaryDirectory() as tmp:
        opts = TrainOptions(
            output_dir=tmp, batch_size=batch_size, max_steps=warmup + steps + (profiler.steps if profiler else 0), learning_rate=lr, seed=seed, precision=precision,
            compile=compile or compile_mode is not None, compile_mode=compile_mode, cuda_graph=cuda_graph, overlap_towers=overlap_towers, fuse_linears=fuse_linears, num_workers=workers, report_to="none",
            attention_backends=attention_backends,
            progress=False, logging_steps=1 if record_losses else 10**9, cache_dir=tmp,
        )
        timer = StepTimer(warmup, steps, device, profiler, turns)
        trainer = build_trainer(opts, model, data.transform, data.dataset(cached), callbacks=[timer])
        trainer.remove_callback(PrinterCallback)  # its samples/s would count the warm-up and compilation too
        trainer.args.train_sampling_strategy = sampling
        timer.time_training_steps(trainer)
        trainer.train()
    return {"seconds": timer.stop - timer.start, "losses": timer.losses, "precision": resolve_precision(precision),
            "host_seconds": timer.host_stop - timer.start, "training_step_seconds": timer.in_training_step}


# --- reporting --------------------------------------------------------------------------------------------------

def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(args, turns=None) -> dict:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.path == "fast":
        apply_inductor_settings(args.inductor)
    configs = size_configs(args.size)
    total = (args.warmup + args.steps + args.profile) * args.batch_size
    data = SyntheticData(configs, total, min(total, args.unique), args.seed)
    profiler = StepProfiler(device, args.profile) if args.profile else None
    if args.path == "naive":
        result = run_naive(configs, data, args.batch_size, args.warmup, args.steps, device, args.seed, profiler=profiler, turns=turns)
        precision = "fp32"
    else:
        result = run_fast(configs, data, args.batch_size, args.warmup, args.steps, args.seed, precision=args.precision,
                          compile=args.compile, compile_mode=args.compile_mode, cuda_graph=args.cuda_graph, overlap_towers=args.overlap_towers,
                          fuse_linears=args.fuse_linears, workers=args.workers, profiler=profiler, turns=turns,
                          attention_backends=args.attention_backends)
        precision = result["precision"]
    if profiler:
        print(profiler.summary(), flush=True)
    seconds = result["seconds"]
    return {
        "path": args.path,
        "size": args.size,
        "device": device.type,
        "machine": machine(device),
        "torch": torch.__version__,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "precision": precision,
        "compile": args.path == "fast" and (args.compile or args.compile_mode is not None),
        "compile_mode": args.compile_mode if args.path == "fast" else None,
        "cuda_graph": args.path == "fast" and args.cuda_graph,
        "overlap_towers": args.path == "fast" and args.overlap_towers,
        "fuse_linears": args.path == "fast" and args.fuse_linears,
        "attention_backends": args.attention_backends if args.path == "fast" else None,
        "inductor": dict(args.inductor) if args.path == "fast" else {},
        "workers": args.workers if args.path == "fast" else 0,
        "threads": torch.get_num_threads(),
        "samples_per_s": round(args.steps * args.batch_size / seconds, 2),
        "ms_per_step": round(1000 * seconds / args.steps, 2),
        # the fast path's host time per step (see StepTimer): all of it, and the part in the Trainer's training_step
        "host_ms_per_step": round(1000 * result["host_seconds"] / args.steps, 2) if "host_seconds" in result else None,
        "training_step_ms": round(1000 * result["training_step_seconds"] / args.steps, 2) if "host_seconds" in result else None,
        "peak_memory_mb": round(peak_memory_mb(device), 1),
        # with --take-turns: how long the run waited for the others and its turn, and the runs still warming up
        # while it was timed (none, unless the patience ran out)
        "turns": {"waited_s": round(turns.seconds_waited, 1), "timed_alongside": turns.waited_for} if turns else None,
    }


def setup(r: dict) -> str:
    """How a run computed, from its JSON object: precision, compilation and the fast path's options."""
    text = f"{r['precision']}" + (f", compile={r['compile_mode'] or 'default'}" if r["compile"] else ", eager")
    text += ", --cuda-graph" if r.get("cuda_graph") else ""
    text += ", --overlap-towers" if r.get("overlap_towers") else ""
    text += ", --fuse-linears" if r.get("fuse_linears") else ""
    text += f", --attention-backends {r['attention_backends']}" if r.get("attention_backends") else ""
    return text + "".join(f", {key}={value}" for key, value in r.get("inductor", {}).items())


def describe(r: dict) -> str:
    memory = "peak GPU memory" if r["device"] == "cuda" else "peak RSS"
    host = (f" (host busy {r['host_ms_per_step']:.1f}, of which {r['training_step_ms']:.1f} in training_step)"
            if r.get("host_ms_per_step") is not None else "")
    return (f"{r['path']:>5} ({setup(r)}): {r['samples_per_s']:.1f} samples/s, {r['ms_per_step']:.1f} ms/step{host}, "
            f"{memory} {r['peak_memory_mb']:.0f} MiB  [{r['size']}, batch {r['batch_size']}, {r['machine']}]")


def apply_inductor_settings(settings: list[tuple[str, object]]) -> None:
    """Sets what ``--inductor`` gave (see :func:`arguments.inductor_setting`), before anything compiles."""
    for key, value in settings:
        setattr(torch._inductor.config, key, value)


def main(args: argparse.Namespace, argv: list[str]) -> None:
    if args.device == "cpu" and torch.cuda.is_available():
        # The Trainer would pick the GPU, and torch counts the GPUs once per process, so hiding them now would come
        # too late: the run goes on in a process that never sees them.
        hidden = dict(os.environ, CUDA_VISIBLE_DEVICES="")
        sys.exit(subprocess.run([sys.executable, __file__, *argv], env=hidden).returncode)
    if args.path != "both":
        turns = None
        if args.take_turns:
            from turns import Turns  # beside this script

            turns = Turns(args.take_turns, patience=args.turn_patience)
        try:
            result = measure(args, turns)
        except OptionError as error:  # a fast-path option the training path refuses, as clfa train would
            sys.exit(f"error: {error}")
        print(describe(result), flush=True)
        if args.json:
            print(json.dumps(result), flush=True)
        # With --take-turns, the turn goes back when this process has ended (its lock closes with it), not before:
        # the profile's tables and the interpreter's exit keep the host busy for seconds.
        return
    # Each path in its own process: clean peak memory, no compiled state or allocator cache shared. The fast path
    # first, so that an option it refuses stops the run before the (long) naive one.
    results = {}
    forwarded = [a for a in argv if a != "--json"]
    for path in ("fast", "naive"):
        proc = subprocess.run([sys.executable, __file__, *forwarded, "--path", path, "--json"], capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{path} path failed:\n{proc.stderr[-4000:]}")
        *printed, last = proc.stdout.strip().splitlines()
        results[path] = json.loads(last)
        # Its figure, and with --profile where a step's time goes, which the run printed before its JSON line.
        print("\n".join(printed), flush=True)
    ratio = results["fast"]["samples_per_s"] / results["naive"]["samples_per_s"]
    print(f"fast / naive: {ratio:.2f}x")
    if args.json:
        print(json.dumps({**results, "speedup": round(ratio, 3)}))


if __name__ == "__main__":
    main(ARGS, sys.argv[1:])
