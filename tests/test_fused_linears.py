"""Linears that read one input become one matrix product in the compiled graph, with the same outputs and
gradients, and only where that is the same computation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch._dynamo.utils import counters
from torch._inductor.custom_graph_pass import CustomGraphPass

import clfa.fused_linears
from clfa.fused_linears import (LINEAR, PASS_LISTS, FuseSharedInputLinears, PassSequence, fuse_shared_input_linears,
                                fusing_linears, pre_grad_passes)


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


def _compiled_with_pass(module: nn.Module, x: torch.Tensor, loss=lambda out: out):
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
        loss(out).backward()
    finally:
        torch._dynamo.reset()
    return _detached(out), _grads(module), found


def _detached(out):
    return tuple(o.detach() for o in out) if isinstance(out, tuple) else out.detach()


def _grads(module: nn.Module) -> dict[str, torch.Tensor]:
    grads = {name: None if p.grad is None else p.grad.clone() for name, p in module.named_parameters()}
    module.zero_grad(set_to_none=True)
    return grads


def _eager(module: nn.Module, x: torch.Tensor, loss=lambda out: out):
    out = module(x)
    loss(out).backward()
    return _detached(out), _grads(module)


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


def test_linears_in_different_autocast_or_grad_modes_or_dtypes_or_with_later_weights_stay_apart():
    class Mixed(nn.Module):
        """Each neighbouring pair is kept apart by one rule alone."""

        def __init__(self):
            super().__init__()
            self.b, self.d, self.g = (nn.Linear(8, 8) for _ in range(3))
            # bias-free, so that only the autocast region tells a from c, and only the weights' dtype a from e
            self.a, self.c = nn.Linear(8, 8, bias=False), nn.Linear(8, 8, bias=False)
            self.e = nn.Linear(8, 8, bias=False).to(torch.bfloat16)

        def forward(self, x):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                a = self.a(x)
                e = self.e(x)  # bf16 weights where a's are fp32
            c = self.c(x)  # fp32, just after the autocast region
            with torch.no_grad():
                b = self.b(x)  # no gradient flows to b
            g = self.g(x)  # gradients again, just after
            d = F.linear(x, self.d.weight * 2, self.d.bias)  # a weight computed after g: not there yet where g was
            return a.float().sum() + e.float().sum() + (b * c).sum() + g.sum() + d.sum()

    torch.manual_seed(0)
    module, x = Mixed(), torch.randn(4, 8)
    expected = _eager(module, x)
    out, grads, found = _compiled_with_pass(module, x)
    assert found == {"before": 6, "fused": 0, "after": 6}
    _assert_same((out, grads), expected)
    assert grads["b.weight"] is None


# Inductor takes a list of pre-autograd passes in newer torch, one pass in older: both ways, where the torch has them.
@pytest.mark.parametrize("pass_lists", [
    pytest.param(True, marks=pytest.mark.skipif(not PASS_LISTS, reason="this torch takes one pass")), False],
    ids=["list", "sequence"])
def test_the_pass_runs_under_inductor_alongside_passes_already_set(monkeypatch, pass_lists):
    monkeypatch.setattr(clfa.fused_linears, "PASS_LISTS", pass_lists)

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
    assert isinstance(passes, list if pass_lists else PassSequence)
    assert [type(p) for p in pre_grad_passes(passes)] == [Counting, FuseSharedInputLinears]
    assert Counting.calls == 1
    assert counters["inductor"]["fused_linear_groups"] == 1
    _assert_same((out.detach(), _grads(module)), expected)


def test_the_pass_is_known_by_its_source_so_cached_graphs_follow_changes_to_it(tmp_path):
    """Inductor caches compiled graphs under the identity of their passes: a changed pass must not find the graphs
    the old one made."""
    import importlib.util

    import clfa.fused_linears

    source = Path(clfa.fused_linears.__file__).read_text()
    changed = tmp_path / "fused_linears_changed.py"
    changed.write_text(source.replace("MODE_SWITCH_NAMES = (", "MODE_SWITCH_NAMES = ('changed', "))
    spec = importlib.util.spec_from_file_location("fused_linears_changed", changed)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert FuseSharedInputLinears().uuid() == FuseSharedInputLinears().uuid()
    assert module.FuseSharedInputLinears().uuid() != FuseSharedInputLinears().uuid()
    # Chained with other passes (torch that takes one pass), the chain is known by its members.
    assert PassSequence([FuseSharedInputLinears()]).uuid() == PassSequence([FuseSharedInputLinears()]).uuid()
    assert PassSequence([module.FuseSharedInputLinears()]).uuid() != PassSequence([FuseSharedInputLinears()]).uuid()
    # A member with no identity (a plain function) must never find graphs cached for another chain.
    unknown = [lambda graph: None, FuseSharedInputLinears()]
    assert PassSequence(unknown).uuid() != PassSequence(unknown).uuid()


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


class SharedInput(nn.Module):
    """Two linears of one input, and between or after them what must keep them apart."""

    def __init__(self, case: str):
        super().__init__()
        self.case = case
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)
        if case == "input_changed_in_place":
            self.a.weight.requires_grad_(False)  # so that a's backward does not need the input as it was

    def forward(self, x):
        if self.case == "input_changed_in_place":
            a = self.a(x)
            x.add_(1)  # b reads the changed input
            return a.sum() * self.b(x).sum()
        a, b = self.a(x), self.b(x)
        if self.case == "output_changed_in_place":
            a.mul_(2)
        elif self.case == "view_of_a_view":
            a = a.unsqueeze(0).view(-1)  # merges the width with the rows, through another view
        elif self.case == "detached":
            return a.square().sum() * b.detach().sum()  # b's weight gets no gradient at all
        elif self.case == "returned":
            return a, b.sum()  # the caller gets a, and may view it as it likes
        return a.square().sum() * b.sum()


@pytest.mark.parametrize("case", ["input_changed_in_place", "output_changed_in_place", "view_of_a_view", "detached",
                                  "returned"])
def test_linears_whose_fusion_would_change_something_stay_apart(case):
    torch.manual_seed(0)
    module, x = SharedInput(case), torch.randn(4, 8)
    loss = (lambda out: out[0].sum() + out[1]) if case == "returned" else (lambda out: out)
    expected = _eager(module, x.clone(), loss)
    out, grads, found = _compiled_with_pass(module, x.clone(), loss)
    assert found == {"before": 2, "fused": 0, "after": 2}
    _assert_same((out[0] if case == "returned" else out, grads), (expected[0][0] if case == "returned" else expected[0], expected[1]))
    if case == "detached":
        assert grads["b.weight"] is None and grads["b.bias"] is None
    if case == "returned":
        assert out[0].is_contiguous()


def test_weights_computed_by_linears_that_were_fused_themselves():
    class Generated(nn.Module):
        def __init__(self):
            super().__init__()
            self.h1, self.h2 = nn.Linear(4, 8), nn.Linear(4, 8)

        def forward(self, x, z):
            w1, w2 = self.h1(z), self.h2(z)  # (8, 8) weights made from z, then used on x
            return (F.linear(x, w1) * F.linear(x, w2)).sum()

    torch.manual_seed(0)
    module, x, z = Generated(), torch.randn(3, 8), torch.randn(8, 4)
    out = module(x, z)
    out.backward()
    expected = (out.detach(), _grads(module))
    fused = []

    def backend(gm, example_inputs):
        fused.append(fuse_shared_input_linears(gm.graph))
        gm.recompile()
        return gm

    torch._dynamo.reset()
    try:
        compiled = torch.compile(module, backend=backend, fullgraph=True)(x, z)
        compiled.backward()
    finally:
        torch._dynamo.reset()
    assert fused == [2]  # h1 and h2 on z, then the two products on x over their split output
    _assert_same((compiled.detach(), _grads(module)), expected)
