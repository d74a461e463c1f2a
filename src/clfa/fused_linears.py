"""Linear layers that read the same input, computed as one matrix product in a compiled model.

Attention projects one input three times, to queries, keys and values: three matrix products forward, and backward
three for the input gradient (then summed), three for the weight gradients and three bias reductions. At the
paper's batch of 8 each of those products is small (616 text tokens by 768), so on a GPU each launches a kernel that
leaves most of the device idle, and a step is made of some 1,600 such kernels. With the three weights (and biases)
concatenated, one product computes all three outputs and the backward needs one product of each kind: every output
element is the same dot product as before, only the kernels that compute it are fewer and larger.

:class:`FuseSharedInputLinears` is an inductor graph pass that does this to every group of ``linear`` calls on one
input, wherever they come from (BERT's, ViT's and CLIP's attention alike), without touching the modules, their
parameters or their checkpoints. :func:`fusing_linears` installs it while models compile.

Linears are left apart where fusing would change anything: across an in-place change or an autocast or grad-mode
switch, when an output is changed in place, returned from the graph, viewed in a way a slice cannot be, or does not
reach the graph's result with its gradient. One difference remains possible, outside what the pass can see: if
backward starts from one of a graph's results only, a fused weight whose output reaches only another result gets a
zero gradient where it would have had none.
"""

from __future__ import annotations

import contextlib
import operator
import uuid as uuids
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch._dynamo.utils import counters
from torch._inductor import custom_graph_pass
from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files
from torch.multiprocessing.reductions import StorageWeakRef

# Whether inductor takes a list of pre-autograd passes (newer torch); where it takes one, they are chained into one.
PASS_LISTS = hasattr(custom_graph_pass, "get_custom_graph_passes")

LINEAR = {torch._C._nn.linear, F.linear}
# Calls that change how what follows them computes: a linear before one and a linear after it are never fused,
# so that each keeps its own autocast and grad mode.
MODE_SWITCH_NAMES = ("autocast", "grad_enabled", "inference_mode")
IN_PLACE_OPERATORS = {operator.setitem, operator.iadd, operator.isub, operator.imul, operator.itruediv,
                      operator.ifloordiv, operator.imod, operator.ipow, operator.imatmul, operator.iand, operator.ior,
                      operator.ixor, operator.ilshift, operator.irshift}
VIEWS = {"view", "view_as", torch.Tensor.view, torch.Tensor.view_as}


def _name(node: torch.fx.Node) -> str:
    name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
    return name.split(".")[0]  # aten.add_.Tensor's __name__ is "add_.Tensor"


def _is_mode_switch(node: torch.fx.Node) -> bool:
    return node.op == "call_function" and any(part in _name(node) for part in MODE_SWITCH_NAMES)


def _mutates(node: torch.fx.Node) -> bool:
    """Whether a call may change a tensor in place (``add_``, ``+=``, ``x[i] = ...``, ``out=``, ``inplace=True``)."""
    if node.op not in ("call_function", "call_method"):
        return False
    name = _name(node)
    return ((name.endswith("_") and not name.endswith("__")) or node.target in IN_PLACE_OPERATORS
            or node.kwargs.get("inplace") is True or "out" in node.kwargs)


def _linear_parts(node: torch.fx.Node):
    """(input, weight, bias) of a linear call, whether given by position or by name."""
    args = list(node.args) + [None] * (3 - len(node.args))
    return (node.kwargs.get("input", args[0]), node.kwargs.get("weight", args[1]), node.kwargs.get("bias", args[2]))


def _example(value):
    """The fake tensor (or tuple of them) dynamo recorded for a node's value."""
    return value.meta.get("example_value", value.meta.get("val")) if isinstance(value, torch.fx.Node) else None


def _requires_grad(value) -> bool:
    if isinstance(value, (tuple, list)):
        return any(_requires_grad(v) for v in value)
    return isinstance(value, torch.Tensor) and value.requires_grad


def _shares_storage(value, storage: StorageWeakRef) -> bool:
    if isinstance(value, (tuple, list)):
        return any(_shares_storage(v, storage) for v in value)
    return isinstance(value, torch.Tensor) and StorageWeakRef(value.untyped_storage()) == storage


def _output_can_be_a_slice(node: torch.fx.Node) -> bool:
    """Whether this linear's output can become a slice of a wider one: nothing returns it or a view of it from the
    graph or changes them in place (autograd forbids that on the views ``split`` makes), and every ``view`` of them
    keeps its leading dimensions (one that merges the last with others needs a tensor of its own)."""
    out = _example(node)
    if not isinstance(out, torch.Tensor):
        return False
    storage = StorageWeakRef(out.untyped_storage())
    aliases, todo = {node}, [node]
    while todo:
        alias = todo.pop()
        for user in alias.users:
            if user.op == "output" or _mutates(user):
                return False
            if user.target in VIEWS:
                viewed = _example(user)
                if viewed is None or tuple(viewed.shape[: out.dim() - 1]) != tuple(out.shape[:-1]):
                    return False
            if user not in aliases and _shares_storage(_example(user), storage):
                aliases.add(user)
                todo.append(user)
    return True


def _reaching_the_output_with_grad(graph: torch.fx.Graph) -> set[torch.fx.Node]:
    """Nodes from which a chain of values that require grad leads to the graph's output."""
    reach: set[torch.fx.Node] = set()
    for node in reversed(graph.nodes):
        if node.op != "output" and _requires_grad(_example(node)):
            if any(user.op == "output" or user in reach for user in node.users):
                reach.add(node)
    return reach


def _key(node: torch.fx.Node, region: int, reach: set[torch.fx.Node]):
    """What linears must share to be fused, or None for a linear that cannot be."""
    x, weight, bias = _linear_parts(node)
    w, b = _example(weight), _example(bias)
    if not isinstance(x, torch.fx.Node) or not isinstance(w, torch.Tensor) or w.dim() != 2:
        return None
    if bias is not None and not isinstance(b, torch.Tensor):
        return None
    if not _output_can_be_a_slice(node):
        return None
    # A weight whose output never reaches the result (detached, say) gets no gradient; fused, it would get zeros.
    if _requires_grad(_example(node)) and node not in reach:
        return None
    bias_kind = None if bias is None else (b.dtype, b.device)
    return x, region, w.shape[1], w.dtype, w.device, bias_kind


def _set_example(node: torch.fx.Node, value) -> None:
    if value is not None:
        node.meta["example_value"] = value


def fuse_shared_input_linears(graph: torch.fx.Graph) -> int:
    """Rewrites each group of linear calls on the same input (between the same in-place changes, in one autocast
    and grad mode, with weights of one dtype and width, all with or all without bias) as one linear over the
    concatenated weights, whose output is split back into the parts. Returns how many groups were fused."""
    reach = _reaching_the_output_with_grad(graph)
    groups: dict[tuple, list[torch.fx.Node]] = defaultdict(list)
    region = 0
    for node in graph.nodes:
        if _is_mode_switch(node) or _mutates(node):
            region += 1
        elif node.op == "call_function" and node.target in LINEAR:
            key = _key(node, region, reach)
            if key is not None:
                groups[key].append(node)
    fused = 0
    for members in groups.values():
        if len(members) < 2:
            continue
        # Recounted for each group: an earlier group's split may now compute a later group's weights.
        order = {node: i for i, node in enumerate(graph.nodes)}
        first = members[0]
        # The concatenation goes where the first linear was: a weight or bias computed after it stays apart.
        members = [m for m in members if all(order[p] < order[first] for p in _linear_parts(m)[1:] if isinstance(p, torch.fx.Node))]
        if len(members) < 2:
            continue
        weights = [_linear_parts(m)[1] for m in members]
        biases = [_linear_parts(m)[2] for m in members]
        outputs = [_example(m) for m in members]
        widths = [out.shape[-1] for out in outputs]
        with graph.inserting_before(first):
            weight = graph.call_function(torch.cat, (weights, 0))
            bias = graph.call_function(torch.cat, (biases, 0)) if biases[0] is not None else None
            out = graph.call_function(torch._C._nn.linear, (_linear_parts(first)[0], weight, bias))
            parts = graph.call_function(torch.split, (out, widths, -1))
            # The values dynamo would have recorded, for any later pass that reads them.
            wide = outputs[0].new_empty((*outputs[0].shape[:-1], sum(widths))).requires_grad_(_requires_grad(outputs))
            sliced = wide.split(widths, -1)
            _set_example(out, wide)
            _set_example(parts, sliced)
            for node, tensors in ((weight, weights), (bias, biases)):
                if node is not None and all(isinstance(_example(t), torch.Tensor) for t in tensors):
                    _set_example(node, torch.cat([_example(t) for t in tensors]))
            for i, member in enumerate(members):
                part = graph.call_function(operator.getitem, (parts, i))
                part.meta.update({k: v for k, v in member.meta.items() if k not in ("example_value", "val")})
                _set_example(part, sliced[i])
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


class PassSequence(CustomGraphPass):
    """Several pre-autograd passes run in order, as the single pass that older torch (2.11 among them) takes."""

    def __init__(self, passes):
        self.passes = tuple(passes)
        # A member without an identity of its own gives the sequence one unique to this object: a cached graph is
        # then never reused for it, rather than reused after that member changed.
        ids = [p.uuid() if isinstance(p, CustomGraphPass) else None for p in self.passes]
        self._uuid = repr(ids).encode() if all(i is not None for i in ids) else uuids.uuid4().bytes

    def __call__(self, graph: torch.fx.Graph) -> None:
        for graph_pass in self.passes:
            graph_pass(graph)

    def uuid(self) -> bytes:
        return self._uuid


def pre_grad_passes(setting) -> tuple:
    """The passes an inductor ``pre_grad_custom_pass`` setting holds, in the order they run."""
    if setting is None:
        return ()
    if isinstance(setting, PassSequence):
        return setting.passes
    return tuple(setting) if isinstance(setting, (list, tuple)) else (setting,)


@contextlib.contextmanager
def fusing_linears():
    """While active, models that torch.compile compiles (with inductor) get :class:`FuseSharedInputLinears`, after
    any pre-autograd pass already set."""
    config = torch._inductor.config
    passes = [p for p in pre_grad_passes(config.pre_grad_custom_pass) if not isinstance(p, FuseSharedInputLinears)]
    passes.append(FuseSharedInputLinears())
    setting = passes[0] if len(passes) == 1 else passes if PASS_LISTS else PassSequence(passes)
    with config.patch(pre_grad_custom_pass=setting):
        yield
