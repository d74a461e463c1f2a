"""Parts of a paper-size training step, each timed more than one way:

patch:  ViT-B/32's patch embedding (a 3 -> 768 convolution with a 32x32 kernel and stride) forward and backward,
        as torch's convolution against :class:`clfa.patch_projection.PatchProjection` (the same layer as a matmul
        over patches); on a GPU also the convolution with ``cudnn.benchmark``. In fp32 on a GPU torch runs
        convolutions in TF32 by default and matmuls in full fp32 (the JSON records both flags), so there the two
        ways differ in arithmetic as well; in bf16 they do not.
update: gradient clipping and fused AdamW over the paper-size model's 210 M parameters (449 tensors), as
        ``clip_grad_norm_`` then ``step()`` against the norm then :meth:`clfa.cuda_graph.GraphableAdamW.update`, which
        applies the clipping coefficient inside the fused kernel (what ``--cuda-graph`` steps do).
towers: the two students' (BERT-base, ViT-B/32) forward and backward in bf16, captured in a CUDA graph and replayed
        as ``--cuda-graph`` replays a whole step, with the towers one after the other against side by side on two
        streams (:meth:`clfa.modeling.CLFAModel.encode`, as ``--overlap-towers`` trains). They are independent until
        the fusion layers, and at small batches a kernel may leave much of the GPU idle: this measures what running
        them concurrently saves, uncompiled. (On a CPU: one after the other, eagerly.)
attention: every attention call of a paper-size training forward (recorded from the model: BERT's masked
        self-attention, ViT's, the fusion's cross-attention, with their dropout), forward and backward, a step's
        calls of one kind together in a CUDA graph, with the kernel PyTorch picks (default) against each SDPA backend
        forced, and the fastest backend of each kind of call. At these short sequences (77 text, 50 image tokens)
        attention kernels are far from their best.

    python benchmarks/step_parts.py --device cuda
    python benchmarks/step_parts.py --threads 1 --batch-size 8 64 --repeats 5

Prints ms per call or per step for each; ``--json`` adds one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext

from arguments import add_device_argument, device_or_default  # beside this script
from clfa.attention_backends import BACKENDS
from clfa.options import positive_int


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parts = ("patch", "update", "towers", "attention")
    parser.add_argument("--part", choices=parts, nargs="+", default=list(parts))
    add_device_argument(parser)
    parser.add_argument("--batch-size", type=positive_int, nargs="+", default=[8, 256], help="batch sizes (all parts but update)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), nargs="+", default=["fp32", "bf16"],
                        help="patch embedding precisions (towers and attention run in bf16, as the fast path does)")
    parser.add_argument("--repeats", type=positive_int, default=20)
    parser.add_argument("--threads", type=positive_int, help="torch CPU threads")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.device = device_or_default(parser, args.device)
    return args


# The command line is read before the imports below, which take seconds: --help and a refused option answer at once.
ARGS = parse_args() if __name__ == "__main__" else None

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402

from clfa.cuda_graph import GraphableAdamW, StepGraph  # noqa: E402
from clfa.patch_projection import PatchProjection  # noqa: E402
from train_throughput import build_model, decay_groups, size_configs, sync, synthetic_batch  # noqa: E402


def timed(step: Callable[[], None], device: torch.device, repeats: int, warmup: int = 3) -> float:
    """ms per call of ``step``, after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    sync(device)
    return 1000 * (time.perf_counter() - start) / repeats


def patch_embedding(device: torch.device, batch_sizes: list[int], precisions: list[str], repeats: int) -> list[dict]:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 768, kernel_size=32, stride=32).to(device)
    projection = copy.deepcopy(conv)
    projection.__class__ = PatchProjection
    layers = {"convolution": conv, "projection": projection}
    if device.type == "cuda":
        layers["convolution, cudnn.benchmark"] = conv
    rows = []
    for batch in batch_sizes:
        pixels = torch.randn(batch, 3, 224, 224, device=device)  # no gradient, as in training
        for precision in precisions:
            row = {"part": "patch", "batch_size": batch, "precision": precision}
            for name, layer in layers.items():
                def step(layer=layer):
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                        embedded = layer(pixels).flatten(2).transpose(1, 2)
                    embedded.float().square().mean().backward()  # stands in for the rest of the model
                    layer.zero_grad(set_to_none=True)

                torch.backends.cudnn.benchmark = name.endswith("cudnn.benchmark")
                row[name] = timed(step, device, repeats)
            torch.backends.cudnn.benchmark = False
            rows.append(row)
            figures = ", ".join(f"{name} {row[name]:.3f}" for name in layers)
            print(f"patch embedding, batch {batch:>3}, {precision}: ms per forward + backward: {figures}; "
                  f"convolution / projection {row['convolution'] / row['projection']:.2f}x", flush=True)
    return rows


def update(device: torch.device, repeats: int) -> dict:
    model = build_model(size_configs("paper"), seed=0).to(device)
    parameters = [p for p in model.parameters() if p.requires_grad]
    generator = torch.Generator(device).manual_seed(0)
    for p in parameters:
        p.grad = torch.randn(p.shape, device=device, generator=generator)
    # Both ways read and write every gradient whatever its values: after the first steps have clipped them, the
    # coefficient is 1 and the work per step unchanged.
    max_norm = 1.0  # the Trainer's default
    separate = torch.optim.AdamW(decay_groups(model, 0.01), lr=1e-5, fused=True)
    folded = GraphableAdamW(decay_groups(model, 0.01), lr=1e-5, fused=True)
    folded.refresh_lr()

    def clip_then_step():
        torch.nn.utils.clip_grad_norm_(parameters, max_norm)
        separate.step()

    def folded_update():
        norm = torch.nn.utils.get_total_norm([p.grad for p in parameters])
        folded.update(grad_factor=torch.clamp(max_norm / (norm + 1e-6), max=1.0))

    names = {"clip_grad_norm_, then step()": clip_then_step, "norm, then update(grad_factor)": folded_update}
    row = {"part": "update", "parameters": sum(p.numel() for p in parameters), "tensors": len(parameters)}
    for name, step in list(names.items()) * 2:
        row.setdefault(name, []).append(timed(step, device, repeats))
    print(f"clipping + AdamW over {row['parameters'] / 1e6:.0f} M parameters ({row['tensors']} tensors), ms per step "
          f"(two alternating rounds): " + "; ".join(f"{name} {', '.join(f'{t:.2f}' for t in row[name])}" for name in names),
          flush=True)
    return row


def timed_in_graph(step: Callable[[], tuple], device: torch.device, repeats: int,
                   before_capture: Callable[[], None] | None = None) -> float:
    """ms per replay of ``step`` captured in a CUDA graph by :class:`clfa.cuda_graph.StepGraph`, as ``--cuda-graph``
    runs a training step (eagerly on a CPU). ``step`` must return detached tensors only: an autograd node that
    outlived a warm-up step would carry the warm-up's stream into the capture."""
    graph = StepGraph(lambda _: step(), device, before_capture=before_capture)
    return timed(lambda: graph({}), device, repeats, warmup=graph.warmup + 2)  # the warm-up, capture, one replay


def timed_in_graph_or_why_not(step: Callable[[], tuple], device: torch.device, repeats: int,
                              before_capture: Callable[[], None] | None = None) -> tuple[float | None, str | None]:
    """:func:`timed_in_graph`, or None and the first line of the error if the capture or a replay fails: one way
    that cannot be captured must not cost the other ways' figures (the JSON is printed at the end)."""
    try:
        return timed_in_graph(step, device, repeats, before_capture), None
    except RuntimeError as error:
        return None, first_line(error)


def first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def towers(device: torch.device, batch_sizes: list[int], repeats: int) -> list[dict]:
    configs = size_configs("paper")
    model = build_model(configs, seed=0).to(device).train()

    def forward_backward(batch: dict, two_streams: bool) -> tuple:
        model.overlap_towers = two_streams  # what --overlap-towers sets
        # As training's whole steps: no autocast cast cache inside a captured region (PyTorch's CUDA graph notes).
        with torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False):
            text_states, image_states = model.encode(batch["input_ids"], batch["attention_mask"], batch["pixel_values"])
        # Stands in for the fusion layers and losses.
        loss = text_states.float().square().mean() + image_states.float().square().mean()
        loss.backward()
        return (loss.detach(),)

    def no_gradients():  # so that the captured backward writes them anew at each replay instead of adding to them
        model.zero_grad(set_to_none=True)

    on_gpu = device.type == "cuda"
    ways = {"one after the other": False} | ({"two streams": True} if on_gpu else {})
    rows = []
    for size in batch_sizes:
        batch = synthetic_batch(configs, size, device)
        row = {"part": "towers", "batch_size": size, "precision": "bf16"}
        for name, two_streams in ways.items():
            row[name], failed = timed_in_graph_or_why_not(lambda: forward_backward(batch, two_streams), device, repeats,
                                                          no_gradients)
            if failed:
                row.setdefault("failed", {})[name] = failed
        rows.append(row)
        figures = ", ".join(f"{name} " + ("failed" if row[name] is None else f"{row[name]:.3f}") for name in ways)
        both = on_gpu and None not in (row["two streams"], row["one after the other"])
        saved = f"; two streams save {1 - row['two streams'] / row['one after the other']:.0%}" if both else ""
        saved += "".join(f"; {name} failed: {why}" for name, why in row.get("failed", {}).items())
        print(f"students' forward + backward, batch {size:>3}, bf16, "
              f"{'each step one CUDA graph' if on_gpu else 'eager'}: ms per step: {figures}{saved}", flush=True)
    return rows


def copy_with_strides(tensor: torch.Tensor) -> torch.Tensor:
    """A copy laid out as the original (``clone`` packs a view such as a slice of a fused projection densely)."""
    return torch.empty_strided(tensor.size(), tensor.stride(), dtype=tensor.dtype, device=tensor.device).copy_(tensor)


def attention_calls(model: nn.Module, batch: dict, device: torch.device) -> list[dict]:
    """Each distinct SDPA call of one bf16 training forward (shapes, mask, dropout): how often a step makes it,
    and a copy of its arguments."""
    calls: dict[tuple, dict] = {}
    original = F.scaled_dot_product_attention

    def recording(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
        mask = None if attn_mask is None else (tuple(attn_mask.shape), str(attn_mask.dtype))
        signature = (tuple(query.shape), tuple(key.shape), mask, dropout_p, is_causal, scale, tuple(sorted(kwargs.items())))
        if signature not in calls:
            calls[signature] = {
                "info": {"query": tuple(query.shape), "key": tuple(key.shape), "mask": mask, "dropout_p": dropout_p,
                         "scale": scale, "count": 0},
                "tensors": [copy_with_strides(t.detach()) for t in (query, key, value)],
                "kwargs": dict(attn_mask=None if attn_mask is None else copy_with_strides(attn_mask), dropout_p=dropout_p,
                               is_causal=is_causal, scale=scale, **kwargs),
            }
        calls[signature]["info"]["count"] += 1
        return original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, **kwargs)

    F.scaled_dot_product_attention = recording
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            model(**batch)
    finally:
        F.scaled_dot_product_attention = original
    return list(calls.values())


def attention(device: torch.device, batch_sizes: list[int], repeats: int) -> list[dict]:
    configs = size_configs("paper")
    model = build_model(configs, seed=0).to(device).train()
    # Under the names --attention-backends takes, so that the fastest found here can be asked for in training.
    ways = {"default": None, **BACKENDS}
    rows = []
    for size in batch_sizes:
        row = {"part": "attention", "batch_size": size, "precision": "bf16", "calls": []}
        for call in attention_calls(model, synthetic_batch(configs, size, device), device):
            info, kwargs = call["info"], call["kwargs"]
            query, key, value = (t.requires_grad_() for t in call["tensors"])
            chosen = torch._fused_sdp_choice(query, key, value, **kwargs)
            info["default backend"] = next((name for name, b in BACKENDS.items() if int(b) == chosen), str(chosen))
            grad = torch.randn_like(query)

            def forward_backward(backend: SDPBackend | None) -> tuple:
                with sdpa_kernel(backend) if backend is not None else nullcontext():
                    out = F.scaled_dot_product_attention(query, key, value, **kwargs)
                return torch.autograd.grad(out, (query, key, value), grad)

            def all_calls(backend: SDPBackend | None) -> tuple:  # a step's worth, so one replay is not all launch
                return sum((forward_backward(backend) for _ in range(info["count"])), ())

            for name, backend in ways.items():
                try:  # eagerly first: a backend that refuses these inputs must do so outside a capture
                    with warnings.catch_warnings():  # SDPA warns why each backend it cannot use does not apply
                        warnings.simplefilter("ignore", UserWarning)
                        forward_backward(backend)
                except RuntimeError as error:
                    info[name] = None
                    info.setdefault("unavailable", {})[name] = first_line(error)
                    continue
                info[name], failed = timed_in_graph_or_why_not(lambda: all_calls(backend), device, repeats)
                if failed:
                    info.setdefault("unavailable", {})[name] = f"capture: {failed}"
            available = {name: info[name] for name in BACKENDS if info[name] is not None}
            info["fastest"] = min(available, key=available.get, default="default")
            row["calls"].append(info)
        for name in ways:
            times = [info[name] for info in row["calls"]]
            row[name] = None if None in times else sum(times)
        fastest = [info[info["fastest"]] for info in row["calls"]]
        row["fastest per call"] = None if None in fastest else sum(fastest)
        rows.append(row)
        kinds = "; ".join(f"{info['count']} x q{list(info['query'])} k{list(info['key'])}"
                          f"{' masked' if info['mask'] else ''}, dropout {info['dropout_p']}: default "
                          f"{info['default backend']}, fastest {info['fastest']}" for info in row["calls"])
        figures = ", ".join(f"{name} " + ("n/a" if row[name] is None else f"{row[name]:.3f}") for name in [*ways, "fastest per call"])
        graphed = "a step's calls of each kind one CUDA graph" if device.type == "cuda" else "eager"
        print(f"attention, batch {size:>3}, bf16 ({kinds}): ms per step, forward + backward ({graphed}): {figures}",
              flush=True)
    return rows


def main(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type != "cuda":  # each timed way would warn again that it runs eagerly: the figures say so once
        logging.getLogger("clfa.cuda_graph").setLevel(logging.ERROR)
    results = []
    if "patch" in args.part:
        results += patch_embedding(device, args.batch_size, args.precision, args.repeats)
    if "update" in args.part:
        results.append(update(device, args.repeats))
    if "towers" in args.part:
        results += towers(device, args.batch_size, args.repeats)
    if "attention" in args.part:
        results += attention(device, args.batch_size, args.repeats)
    if args.json:
        print(json.dumps({"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                          "torch": torch.__version__, "results": results,
                          "tf32": {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32}}))


if __name__ == "__main__":
    main(ARGS)
