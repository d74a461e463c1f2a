"""The bytes a compiled training step's own kernels move: where the non-matmul time of a large-batch step goes.

Compiles the paper-size (``--size``) training forward and backward (train mode, bf16 autocast by default) with
torch.compile and takes inductor's own count of the bytes each kernel it generates reads and writes, grouped by
what the kernel computes (layer norms, GELU, dropout, casts and copies, gradient reductions, ...). Matrix products
and attention run in library kernels (cuBLAS, cuDNN, ATen) and are listed apart, as are inductor's Triton matmul
templates under max-autotune, with whatever they fuse. Counts at two batch sizes give a fixed part
(the bf16 casts of the weights, the embedding gradient) and a part per sample; both are projected to
``--target-batch`` and turned into the time the bytes would take at ``--bandwidth`` GB/s (the H100 SXM's by
default): what these kernels would cost if every one of them ran at full bandwidth. The count is inductor's own
(each buffer a kernel reads or writes, once), not a measurement.

On a CPU inductor generates C++ rather than Triton kernels and splits some work differently: it computes the text
encoder's attention (padding mask and dropout) as matmuls, a softmax and copies, which on a GPU are one attention
kernel (cuDNN, flash or memory-efficient). On a CPU the generated kernels that come from an attention call are
therefore counted as their own kind, listed, and kept out of the projection (with whatever else inductor fused into
them, which may be a little more), and the matrix products include attention's.

It also counts the kernels of each kind, which do not depend on the batch: at small batches their number, more than
their bytes, sets a step's GPU time. ``--fuse-linears`` compiles with clfa's shared-input linear fusion. On a CPU
inductor copies concatenated weights into a buffer of their own, where a GPU's code reads them in the cast that
follows; ``--inductor force_pointwise_cat=True`` counts the GPU's way.

    python benchmarks/step_bytes.py --threads 2                      # CPU codegen, batches 16 and 32
    python benchmarks/step_bytes.py --device cuda --batch-size 32 64
    python benchmarks/step_bytes.py --threads 2 --batch-size 8 16 --fuse-linears --inductor force_pointwise_cat=True

Compiling takes about 2 minutes per batch size on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json

from arguments import add_device_argument, device_or_default, inductor_setting, positive_number  # beside this script
from clfa.options import positive_int

H100_SXM_BANDWIDTH = 3350  # GB/s, HBM3


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--size", choices=("paper", "tiny"), default="paper")
    add_device_argument(parser)
    parser.add_argument("--batch-size", type=positive_int, nargs=2, default=[16, 32], metavar=("SMALL", "LARGE"))
    parser.add_argument("--target-batch", type=positive_int, default=256)
    parser.add_argument("--bandwidth", type=positive_number, default=H100_SXM_BANDWIDTH,
                        help="memory bandwidth, GB/s (default: the H100 SXM's)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    parser.add_argument("--mode", choices=("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
                        help="torch.compile mode")
    parser.add_argument("--fuse-linears", action="store_true", help="compile with clfa's shared-input linear fusion")
    parser.add_argument("--inductor", type=inductor_setting, action="append", default=[], metavar="KEY=VALUE",
                        help="set one of torch._inductor.config's values first (for example force_pointwise_cat=True, "
                             "the lowering a GPU picks for the concatenated weights of --fuse-linears); repeatable")
    parser.add_argument("--threads", type=positive_int, help="torch CPU threads")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if len(set(args.batch_size)) == 1:
        parser.error("--batch-size needs two different batch sizes")
    args.device = device_or_default(parser, args.device)
    return args


# The command line is read before the imports below, which take seconds: --help and a refused option answer at once.
ARGS = parse_args() if __name__ == "__main__" else None

import torch  # noqa: E402

from clfa.fused_linears import fusing_linears  # noqa: E402
from train_throughput import apply_inductor_settings, build_model, size_configs, synthetic_batch  # noqa: E402

# Kinds of kernel by the ATen / prims operators inductor fused into them, first match wins.
KINDS = (
    ("embedding gradient", {"index_put", "_unsafe_masked_index_put_accumulate", "embedding_dense_backward"}),
    ("GELU", {"erf", "gelu"}),
    ("layer norm", {"var_mean", "rsqrt", "native_layer_norm"}),
    ("dropout", {"inductor_random", "native_dropout", "bernoulli"}),
)
LIBRARY_KINDS = (("matrix products", {"mm", "addmm", "bmm", "baddbmm", "convolution"}),)
COPIES = {"convert_element_type", "permute", "reshape", "view", "clone", "t", "transpose", "expand", "squeeze",
          "unsqueeze", "slice", "select", "cat", "copy", "_to_copy", "full", "zeros", "getitem"}
# Attention a CPU computes in generated kernels (a masked softmax, its backward, layout copies of q, k and v): the
# kernels that come from a scaled_dot_product_attention call in the model's code.
CPU_ATTENTION = "attention as softmax and copies (CPU)"
# GELU backward kernels that fuse the bias gradient of the linear before the GELU count as GELU.
REDUCTIONS = "reductions (norm backward, bias grads, losses)"


def _origins(node):
    for inner in node.get_nodes():
        yield from (inner.node.origins if inner.node is not None else ())


def _operators(node) -> set[str]:
    names = set()
    for origin in _origins(node):
        if isinstance(origin.target, torch._ops.OpOverload):  # aten.add.Tensor -> add
            names.add(origin.target.__name__.split(".")[0])
        else:  # operator.getitem -> getitem
            names.add(getattr(origin.target, "__name__", str(origin.target)))
    return names


def _from_attention(node) -> bool:
    """Whether the model code line a kernel's operators come from is an attention call (the stack traces' last lines
    that are not markers)."""
    for origin in _origins(node):
        lines = [line for line in (origin.meta.get("stack_trace") or "").splitlines() if line.strip(" ^~")]
        if lines and "scaled_dot_product_attention(" in lines[-1]:
            return True
    return False


def kind_of(node, cpu: bool = False) -> str:
    operators = _operators(node)
    # Matmul templates (max-autotune) are generated, with any epilogue fused in, but count as matrix products.
    if node.is_extern() or node.is_template():
        if any("attention" in name for name in operators):
            return "attention"
        for kind, names in LIBRARY_KINDS:
            if operators & names:
                return kind
        return "other library kernels"
    if cpu and _from_attention(node):
        return CPU_ATTENTION
    for kind, names in KINDS:
        if operators & names:
            return kind
    if operators <= COPIES:
        return "casts and copies"
    if "sum" in operators:
        return REDUCTIONS
    return "other pointwise"


@contextlib.contextmanager
def kernel_bytes(graphs: list[dict], cpu: bool):
    """While active, every graph inductor compiles appends {"backward": bool, "kinds": {kind: bytes},
    "kernels": {kind: number of kernels}}."""
    from torch._inductor.graph import GraphLowering

    compile_to_module = GraphLowering.compile_to_module

    def counting(self):
        module = compile_to_module(self)
        # Autotuning compiles candidate subgraphs of its own to time them; they are not part of the step.
        if not (self.name or "").startswith("benchmark_"):
            kinds: collections.Counter[str] = collections.Counter()
            kernels: collections.Counter[str] = collections.Counter()
            for node in self.scheduler.nodes:
                # inductor's metric (what count_bytes sums): the bytes of every buffer a kernel reads or writes
                nbytes = node.get_read_write_buffers_sizes()
                if nbytes:
                    kind = kind_of(node, cpu)
                    kinds[kind] += nbytes
                    kernels[kind] += 1
            graphs.append({"backward": bool(self.is_backward), "kinds": dict(kinds), "kernels": dict(kernels)})
        return module

    GraphLowering.compile_to_module = counting
    try:
        # A cached graph is not lowered again, and so would not be counted.
        with torch._inductor.config.patch(force_disable_caches=True):
            yield
    finally:
        GraphLowering.compile_to_module = compile_to_module


def count_step(size: str, batch_size: int, device: torch.device, precision: str, mode: str | None,
               fuse_linears: bool = False) -> list[dict]:
    """Compiles one training forward + backward at ``batch_size`` and returns inductor's counts for its graphs."""
    torch._dynamo.reset()
    configs = size_configs(size)
    model = build_model(configs, seed=0).to(device).train()
    batch = synthetic_batch(configs, batch_size, device)
    compiled = torch.compile(model, fullgraph=True, mode=mode)
    graphs: list[dict] = []
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    fusing = fusing_linears() if fuse_linears else contextlib.nullcontext()
    with kernel_bytes(graphs, cpu=device.type == "cpu"), fusing, autocast:
        compiled(**batch).loss.backward()
    if not any(g["backward"] for g in graphs) or not any(not g["backward"] for g in graphs):
        raise RuntimeError(f"expected a forward and a backward graph from inductor, got {len(graphs)} graphs")
    return graphs


def _size(nbytes: float) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.1f} MB"


def totals(graphs: list[dict], field: str = "kinds") -> dict[str, dict[str, float]]:
    """{"forward" / "backward": {kind: bytes}} (or, with ``field="kernels"``, {kind: number of kernels})."""
    out = {"forward": collections.Counter(), "backward": collections.Counter()}
    for graph in graphs:
        for kind, value in graph[field].items():
            out["backward" if graph["backward"] else "forward"][kind] += value
    return {part: dict(counts) for part, counts in out.items()}


def project(small: dict, large: dict, b_small: int, b_large: int, target: int) -> dict[str, dict[str, float]]:
    """Bytes at ``target`` from a straight line through the two counts, per part and kind."""
    projected = {}
    for part in ("forward", "backward"):
        kinds = set(small[part]) | set(large[part])
        projected[part] = {}
        for kind in kinds:
            a, b = small[part].get(kind, 0), large[part].get(kind, 0)
            per_sample = (b - a) / (b_large - b_small)
            projected[part][kind] = max(0.0, a + per_sample * (target - b_small))
    return projected


def main(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    apply_inductor_settings(args.inductor)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    # The H100 SXM's name ends in its memory, HBM3; the PCIe and NVL cards have other bandwidths.
    if device.type == "cuda" and not ("H100" in name and "HBM3" in name) and args.bandwidth == H100_SXM_BANDWIDTH:
        print(f"note: the times below use the H100 SXM's bandwidth, not the {name}'s; pass --bandwidth", flush=True)
    small_b, large_b = sorted(args.batch_size)
    counts, kernels = {}, {}
    for batch in (small_b, large_b):
        graphs = count_step(args.size, batch, device, args.precision, args.mode, args.fuse_linears)
        counts[batch], kernels[batch] = totals(graphs), totals(graphs, "kernels")
        for part, kinds in counts[batch].items():
            ranked = sorted(kinds.items(), key=lambda kv: -kv[1])
            print(f"batch {batch:>4}, {part:>8}: " + ", ".join(f"{kind} {_size(nbytes)}" for kind, nbytes in ranked),
                  flush=True)
            ranked = sorted(kernels[batch][part].items(), key=lambda kv: -kv[1])
            print(f"{'':>10}{sum(kernels[batch][part].values()):>6} kernels: " + ", ".join(f"{kind} {n}" for kind, n in ranked),
                  flush=True)
    projected = project(counts[small_b], counts[large_b], small_b, large_b, args.target_batch)
    print(f"\nprojected to batch {args.target_batch} ({args.precision}, {name} code generation), GB per step, and ms at "
          f"{args.bandwidth:,.0f} GB/s:")
    generated = 0.0
    for part in ("forward", "backward"):
        for kind, nbytes in sorted(projected[part].items(), key=lambda kv: -kv[1]):
            library = kind in ("matrix products", "attention", "other library kernels")
            note = "library kernels" if library else "CPU only" if kind == CPU_ATTENTION else ""
            note = f"  ({note}: not counted below)" if note else ""
            print(f"  {part:>8}  {kind:<48} {nbytes / 1e9:7.2f} GB  {nbytes / args.bandwidth / 1e6:6.2f} ms{note}")
            if not library and kind != CPU_ATTENTION:
                generated += nbytes
    print(f"generated kernels, forward + backward: {generated / 1e9:.1f} GB per step, "
          f"{generated / args.bandwidth / 1e6:.1f} ms if all ran at {args.bandwidth:,.0f} GB/s")
    if args.json:
        print(json.dumps({"device": name, "bandwidth_gb_s": args.bandwidth,
                          "torch": torch.__version__, "precision": args.precision, "mode": args.mode,
                          "fuse_linears": args.fuse_linears, "inductor": dict(args.inductor),
                          "counts": {str(b): c for b, c in counts.items()},
                          "kernels": {str(b): c for b, c in kernels.items()}, "target_batch": args.target_batch,
                          "projected": projected, "generated_gb": generated / 1e9,
                          "full_bandwidth_ms": generated / args.bandwidth / 1e6}))


if __name__ == "__main__":
    main(ARGS)
