"""Two parts of a paper-size training step, each timed the plain way and the way clfa computes it:

patch:  ViT-B/32's patch embedding (a 3 -> 768 convolution with a 32x32 kernel and stride) forward and backward,
        as torch's convolution against :class:`clfa.patch_projection.PatchProjection` (the same layer as a matmul
        over patches); on a GPU also the convolution with ``cudnn.benchmark``. In fp32 on a GPU torch runs
        convolutions in TF32 by default and matmuls in full fp32 (the JSON records both flags), so there the two
        ways differ in arithmetic as well; in bf16 they do not.
update: gradient clipping and fused AdamW over the paper-size model's 210 M parameters (449 tensors), as
        ``clip_grad_norm_`` then ``step()`` against the norm then :meth:`clfa.cuda_graph.GraphableAdamW.update`, which
        applies the clipping coefficient inside the fused kernel (what ``--cuda-graph`` steps do).

    python benchmarks/step_parts.py --device cuda
    python benchmarks/step_parts.py --threads 1 --batch-size 8 64 --repeats 5

Prints ms per call for each; ``--json`` adds one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable

import torch
from torch import nn

from clfa.cuda_graph import GraphableAdamW
from clfa.patch_projection import PatchProjection
from train_throughput import build_model, decay_groups, size_configs, sync


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("patch", "update"), nargs="+", default=["patch", "update"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[8, 256], help="patch embedding batch sizes")
    parser.add_argument("--precision", choices=("fp32", "bf16"), nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results = []
    if "patch" in args.part:
        results += patch_embedding(device, args.batch_size, args.precision, args.repeats)
    if "update" in args.part:
        results.append(update(device, args.repeats))
    if args.json:
        print(json.dumps({"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                          "torch": torch.__version__, "results": results,
                          "tf32": {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32}}))


if __name__ == "__main__":
    main()
