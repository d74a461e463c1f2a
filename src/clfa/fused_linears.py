"""Linear layers that read the same input, computed as one matrix product in a compiled model.

Attention projects one input three times, to queries, keys and values: three matrix products forward, and backward
three for the input gradient (then summed), three for the weight gradients and three bias reductions. At the
paper's batch of 8 each of those products is small (616 text tokens by 768), so on a GPU each launches a kernel that
leaves most of the device idle, and a step is made of a few thousand such kernels. With the three weights (and
biases) concatenated, one product computes all three outputs and the backward needs one product of each kind: every
output element is the same dot product as before, only the kernels that compute it are fewer and larger.

:class:`FuseSharedInputLinears` is an inductor graph pass that does this to every group of ``linear`` calls on one
input, wherever they come from (BERT's, ViT's and CLIP's attention alike), without touching the modules, their
parameters or their checkpoints. :func:`fusing_linears` installs it while models compile.
"""

from __future__ import annotations

import contextlib
import operator
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch._dynamo.utils import counters
from torch._inductor.custom_graph_pass import CustomGraphPass, get_custom_graph_passes, get_hash_for_files

LINEAR = {torch._C._nn.linear, F.linear}
# Calls that change how what follows them computes: a linear before one and a linear after it are never fused,
# so that each keeps its own autocast and grad mode.
MODE_SWITCH_NAMES = ("autocast", "grad_enabled", "inference_mode")


def _is_mode_switch(node: torch.fx.Node) -> bool:
    name = getattr(node.target, "__name__", "")
    return node.op == "call_function" and any(part in name for part in MODE_SWITCH_NAMES)


def _linear_parts(node: torch.fx.Node):
    """(input, weight, bias) of a linear call, whether given by position or by name."""
    args = list(node.args) + [None] * (3 - len(node.args))
    return (node.kwargs.get("input", args[0]), node.kwargs.get("weight", args[1]), node.kwargs.get("bias", args[2]))


def _example(value):
    return value.meta.get("example_value", value.meta.get("val")) if isinstance(value, torch.fx.Node) else None


def _views_keep_leading_dims(node: torch.fx.Node) -> bool:
    """Whether every ``view`` of this linear's output only splits its last dimension. A fused output is a slice of
    a wider tensor, which such views can address; one that merges the last dimension with others cannot."""
    out = _example(node)
    for user in node.users:
        if (user.op == "call_method" and user.target in ("view", "view_as")) or user.target in (torch.Tensor.view, torch.Tensor.view_as):
            viewed = _example(user)
            if out is None or viewed is None or tuple(viewed.shape[: out.dim() - 1]) != tuple(out.shape[:-1]):
                return False
    return True


def _key(node: torch.fx.Node, region: int):
    """What linears must share to be fused, or None for a linear that cannot be."""
    x, weight, bias = _linear_parts(node)
    w, b = _example(weight), _example(bias)
    if not isinstance(x, torch.fx.Node) or w is None or w.dim() != 2 or (bias is not None and b is None):
        return None
    if not _views_keep_leading_dims(node):
        return None
    bias_kind = None if bias is None else (b.dtype, b.device)
    return x, region, w.shape[1], w.dtype, w.device, bias_kind


def fuse_shared_input_linears(graph: torch.fx.Graph) -> int:
    """Rewrites each group of linear calls on the same input (in one autocast and grad mode, with weights of one
    dtype and width, all with or all without bias) as one linear over the concatenated weights, whose output is
    split back into the parts. Returns how many groups were fused."""
    order = {node: i for i, node in enumerate(graph.nodes)}
    groups: dict[tuple, list[torch.fx.Node]] = defaultdict(list)
    region = 0
    for node in graph.nodes:
        if _is_mode_switch(node):
            region += 1
        elif node.op == "call_function" and node.target in LINEAR:
            key = _key(node, region)
            if key is not None:
                groups[key].append(node)
    fused = 0
    for members in groups.values():
        first = members[0]
        # The concatenation goes where the first linear was: a weight or bias computed after it stays apart.
        members = [m for m in members if all(order[p] < order[first] for p in _linear_parts(m)[1:] if isinstance(p, torch.fx.Node))]
        if len(members) < 2:
            continue
        weights = [_linear_parts(m)[1] for m in members]
        biases = [_linear_parts(m)[2] for m in members]
        widths = [_example(w).shape[0] for w in weights]
        with graph.inserting_before(first):
            weight = graph.call_function(torch.cat, (weights, 0))
            bias = graph.call_function(torch.cat, (biases, 0)) if biases[0] is not None else None
            out = graph.call_function(torch._C._nn.linear, (_linear_parts(first)[0], weight, bias))
            parts = graph.call_function(torch.split, (out, widths, -1))
            for i, member in enumerate(members):
                part = graph.call_function(operator.getitem, (parts, i))
                part.meta.update(member.meta)
                member.replace_all_uses_with(part)
        for member in members:
            graph.erase_node(member)
        fused += 1
    return fused


class FuseSharedInputLinears(CustomGraphPass):
    """:func:`fuse_shared_input_linears` as an inductor pre-autograd pass (``pre_grad_custom_pass``): autograd
    then derives the fused backward."""

    def __call__(self, graph: torch.fx.Graph) -> None:
        counters["inductor"]["fused_linear_groups"] += fuse_shared_input_linears(graph)

    def uuid(self) -> bytes:
        # Compiled graphs are cached under their passes' identity: a change to this file must not reuse old ones.
        return get_hash_for_files((__file__,))


@contextlib.contextmanager
def fusing_linears():
    """While active, models that torch.compile compiles (with inductor) get :class:`FuseSharedInputLinears`, after
    any pre-autograd pass already set."""
    config = torch._inductor.config
    passes = [p for p in get_custom_graph_passes(config.pre_grad_custom_pass) if not isinstance(p, FuseSharedInputLinears)]
    with config.patch(pre_grad_custom_pass=[*passes, FuseSharedInputLinears()] if passes else FuseSharedInputLinears()):
        yield
