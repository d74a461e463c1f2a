"""Linears that read one input become one matrix product in the compiled graph, with the same outputs and
gradients, and only where that is the same computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch._dynamo.utils import counters
from torch._inductor.custom_graph_pass import CustomGraphPass

from clfa.fused_linears import LINEAR, FuseSharedInputLinears, fuse_shared_input_linears, fusing_linears


class Attentionish(nn.Module):
    """Queries, keys and values of one input (values narrower), plus linears that must stay apart: one on another
    input, one without bias, and one whose output is viewed in a way a slice of a wider output cannot be."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 4)
        self.other_input = nn.Linear(8, 8)
        self.no_bias = nn.Linear(8, 6, bias=False)
        self.flattened = nn.Linear(8, 4)

    def forward(self, x):
        q, k = self.q(x).view(2, 3, 2, 4), self.k(x).view(2, 3, 2, 4)
        out = (q * k).sum(-1).mean() * self.v(x).tanh().mean()
        out = out + self.other_input(x * 2).sum() + self.no_bias(x).square().mean()
        return out + self.flattened(x).view(2, -1).cos().sum()


def _compiled_with_pass(module: nn.Module, x: torch.Tensor):
    """Output and gradients of ``module`` compiled with the pass applied to dynamo's graph (no code generation),
    and the graph's linear calls before and after."""
    found = {}

    def backend(gm, example_inputs):
        linears = lambda: sum(node.op == "call_function" and node.target in LINEAR for node in gm.graph.nodes)  # noqa: E731
        found["before"] = linears()
        found["fused"] = fuse_shared_input_linears(gm.graph)
        gm.recompile()
        found["after"] = linears()
        return gm

    torch._dynamo.reset()
    try:
        out = torch.compile(module, backend=backend, fullgraph=True)(x)
        out.backward()
    finally:
        torch._dynamo.reset()
    return out.detach(), _grads(module), found


def _grads(module: nn.Module) -> dict[str, torch.Tensor]:
    grads = {name: None if p.grad is None else p.grad.clone() for name, p in module.named_parameters()}
    module.zero_grad(set_to_none=True)
    return grads


def _eager(module: nn.Module, x: torch.Tensor):
    out = module(x)
    out.backward()
    return out.detach(), _grads(module)


def _assert_same(actual, expected):
    torch.testing.assert_close(actual[0], expected[0], rtol=1e-5, atol=1e-6)
    assert actual[1].keys() == expected[1].keys()
    for name, grad in expected[1].items():
        if grad is None:
            assert actual[1][name] is None, name
        else:
            torch.testing.assert_close(actual[1][name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_linears_on_one_input_become_one_product_with_the_same_outputs_and_gradients():
    torch.manual_seed(0)
    module, x = Attentionish(), torch.randn(2, 3, 8)
    expected = _eager(module, x)
    out, grads, found = _compiled_with_pass(module, x)
    # q, k and v fused; the other four linears left as they were
    assert found == {"before": 6, "fused": 1, "after": 4}
    _assert_same((out, grads), expected)


def test_linears_in_different_autocast_or_grad_modes_or_with_later_weights_stay_apart():
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c, self.d = (nn.Linear(8, 8) for _ in range(4))

        def forward(self, x):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                a = self.a(x)  # bf16, the others fp32
            with torch.no_grad():
                b = self.b(x)  # no gradient flows to b
            c = self.c(x)
            d = F.linear(x, self.d.weight * 2, self.d.bias)  # a weight computed after c: not there yet where c was
            return a.float().sum() + (b * c).sum() + d.sum()

    torch.manual_seed(0)
    module, x = Mixed(), torch.randn(4, 8)
    expected = _eager(module, x)
    out, grads, found = _compiled_with_pass(module, x)
    assert found == {"before": 4, "fused": 0, "after": 4}
    _assert_same((out, grads), expected)
    assert grads["b.weight"] is None


def test_the_pass_runs_under_inductor_alongside_passes_already_set():
    class Counting(CustomGraphPass):
        calls = 0

        def __call__(self, graph):
            Counting.calls += 1

        def uuid(self):
            return b"counting"

    torch.manual_seed(0)
    module, x = Attentionish(), torch.randn(2, 3, 8)
    expected = _eager(module, x)
    config = torch._inductor.config
    # force_disable_caches: a graph from inductor's cache would not pass through the passes again.
    with config.patch(pre_grad_custom_pass=Counting(), force_disable_caches=True):
        before = config.pre_grad_custom_pass
        torch._dynamo.reset()
        counters.clear()
        try:
            with fusing_linears():
                passes = config.pre_grad_custom_pass
                out = torch.compile(module, fullgraph=True)(x)
            out.backward()
        finally:
            torch._dynamo.reset()
        assert config.pre_grad_custom_pass is before  # restored
    assert [type(p) for p in passes] == [Counting, FuseSharedInputLinears]
    assert Counting.calls == 1
    assert counters["inductor"]["fused_linear_groups"] == 1
    _assert_same((out.detach(), _grads(module)), expected)


def test_the_pass_is_known_by_its_source_so_cached_graphs_follow_changes_to_it():
    assert FuseSharedInputLinears().uuid() == FuseSharedInputLinears().uuid()
    assert isinstance(FuseSharedInputLinears().uuid(), bytes)


@pytest.mark.parametrize("view", ["split_last", "merge_last"])
def test_a_view_that_merges_the_output_width_keeps_a_linear_out(view):
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

        def forward(self, x):
            a = self.a(x).view(4, 2, 4) if view == "split_last" else self.a(x).view(-1)
            return a.sum() * self.b(x).sum()

    torch.manual_seed(0)
    module, x = Pair(), torch.randn(4, 8)
    expected = _eager(module, x)
    out, grads, found = _compiled_with_pass(module, x)
    assert found["fused"] == (1 if view == "split_last" else 0)
    _assert_same((out, grads), expected)
