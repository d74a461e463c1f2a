"""Whole training steps in one CUDA graph: the optimizer that updates inside the step, and the capture itself
(on a GPU; tests/test_fast_path.py checks whole CLFA training runs against the plain loop on any device)."""

import gc
import traceback
from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import TrainerCallback

from clfa.cuda_graph import GraphableAdamW, StepGraph
from clfa.data.processing import stack
from conftest import on_a_fresh_process, two_gpus


def _groups(model: torch.nn.Module) -> list[dict]:
    return [{"params": [model.weight], "weight_decay": 0.1}, {"params": [model.bias], "weight_decay": 0.0}]


def _model(device="cpu") -> torch.nn.Linear:
    torch.manual_seed(0)
    return torch.nn.Linear(6, 3).to(device)


def test_update_is_adamw_at_the_scheduled_learning_rate():
    model, reference = _model(), _model()
    optimizer = GraphableAdamW(_groups(model), lr=0.1, fused=True)
    stock = torch.optim.AdamW(_groups(reference), lr=0.1, fused=True)
    schedules = [torch.optim.lr_scheduler.LambdaLR(o, lambda step: 1 / (1 + step)) for o in (optimizer, stock)]
    for step in range(4):
        x = torch.randn(5, 6)
        for m in (model, reference):
            m.zero_grad()
            m(x).square().mean().backward()
        optimizer.refresh_lr()
        optimizer.update()
        optimizer.mark_updated()
        optimizer.step()  # what the Trainer calls after the step: acknowledges, does not update again
        stock.step()
        for schedule in schedules:
            schedule.step()
        torch.testing.assert_close(model.weight, reference.weight)
        torch.testing.assert_close(model.bias, reference.bias)
    assert [g["lr"] for g in optimizer.param_groups] == [g["lr"] for g in stock.param_groups] == [pytest.approx(0.1 / 5)] * 2
    assert all(isinstance(g["lr"], float) for g in optimizer.param_groups)  # what schedulers and logs read


@pytest.mark.parametrize(
    "device, fused",
    [("cpu", True), ("cpu", False),
     pytest.param("cuda", True, marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"))],
    ids=["fused", "per-tensor", "cuda-fused"],
)
def test_update_applies_the_clipping_factor_as_clip_grad_norm_does(device, fused):
    model, reference = _model(device), _model(device)
    optimizer = GraphableAdamW(_groups(model), lr=0.1, fused=fused, foreach=False)
    stock = torch.optim.AdamW(_groups(reference), lr=0.1, fused=True)
    for _ in range(3):
        x = torch.randn(5, 6, device=device)
        for m in (model, reference):
            m.zero_grad()
            (10 * m(x)).square().mean().backward()
        norm = torch.nn.utils.get_total_norm([model.weight.grad, model.bias.grad])
        assert norm > 1.0  # so that clipping to 0.5 changes every gradient
        optimizer.refresh_lr()
        optimizer.update(grad_factor=torch.clamp(0.5 / (norm + 1e-6), max=1.0))
        torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.5)
        stock.step()
        for mine, theirs in ((model.weight, reference.weight), (model.bias, reference.bias)):
            torch.testing.assert_close(mine, theirs)
            torch.testing.assert_close(mine.grad, theirs.grad)  # left clipped, as clip_grad_norm_ leaves them
    assert optimizer.grad_scale is None


def test_learning_rate_reaches_a_group_left_empty():
    model = _model()
    model.bias.requires_grad_(False)  # the Trainer's no-decay group then has no parameter
    optimizer = GraphableAdamW([{"params": [model.weight]}, {"params": []}], lr=0.1, fused=True)
    optimizer.refresh_lr()
    model(torch.randn(5, 6)).square().mean().backward()
    before = model.weight.detach().clone()
    optimizer.update()
    assert not torch.equal(model.weight, before)


def test_capture_needs_an_eager_step_first():
    with pytest.raises(ValueError, match="at least 1 eager warm-up step"):
        StepGraph(lambda batch: (), "cpu", warmup=0)


def test_step_without_an_update_in_the_training_step_is_an_error():
    optimizer = GraphableAdamW(_groups(_model()), lr=0.1)
    with pytest.raises(RuntimeError, match="without such an update"):
        optimizer.step()
    with pytest.raises(RuntimeError, match="before refresh_lr"):
        optimizer.update()


def _train(device, steps: int, warmup: int | None):
    """``steps`` steps of a small regression with a decaying learning rate; ``warmup=None``: plain eager loop."""
    model = _model(device)
    optimizer = GraphableAdamW(_groups(model), lr=0.05, fused=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (1 + step))

    def step(batch):
        loss = torch.nn.functional.mse_loss(model(batch["x"]), batch["y"])
        loss.backward()
        norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])
        optimizer.update(grad_factor=torch.clamp(0.5 / (norm + 1e-6), max=1.0))  # clipped to 0.5 in the update
        return loss.detach(), norm

    def before_capture():
        optimizer.make_capturable()
        model.zero_grad(set_to_none=True)

    graph = StepGraph(step, device, warmup, before_capture) if warmup is not None else None
    generator = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        batch = {"x": torch.randn(4, 6, generator=generator), "y": torch.randn(4, 3, generator=generator)}
        optimizer.refresh_lr()
        loss, _ = graph(batch) if graph else step({k: v.to(device) for k, v in batch.items()})
        optimizer.mark_updated()
        optimizer.step()
        schedule.step()
        model.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses, model, graph


def test_step_graph_runs_every_step_eagerly_off_cuda():
    eager, model, _ = _train("cpu", 8, warmup=None)
    stepped, stepped_model, graph = _train("cpu", 8, warmup=2)
    assert graph.graph is None
    assert stepped == eager and eager[-1] != eager[0]
    torch.testing.assert_close(stepped_model.weight, model.weight, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_captured_step_replays_training_with_new_batches_and_learning_rates():
    eager, model, _ = _train("cuda", 12, warmup=None)
    replayed, replayed_model, graph = _train("cuda", 12, warmup=3)
    assert graph.graph is not None  # steps 5-12 were replays of the captured fourth
    torch.testing.assert_close(torch.tensor(replayed), torch.tensor(eager), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(replayed_model.weight, model.weight, rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="'x' is \\(2, 6\\)"):
        graph({"x": torch.randn(2, 6), "y": torch.randn(2, 3)})


@two_gpus
def test_a_step_captured_on_the_second_gpu_replays_there_and_leaves_the_first_alone():
    """A StepGraph for cuda:1 in a process whose current GPU is the first: torch.cuda.graph synchronizes and captures
    on the current GPU, and by default on a capture stream made once per process on the GPU current then. Captured
    after a capture on cuda:0, the step must still replay on cuda:1; and in a process of its own, no context and no
    graph memory may land on GPU 0."""
    first, _, _ = _train("cuda:0", 6, warmup=3)  # the process's first capture, made with GPU 0 current
    eager, model, _ = _train("cuda:1", 12, warmup=None)
    with torch.cuda.device(0):
        replayed, replayed_model, graph = _train("cuda:1", 12, warmup=3)
    assert graph.graph is not None and first[-1] != first[0]
    torch.testing.assert_close(torch.tensor(replayed), torch.tensor(eager), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(replayed_model.weight, model.weight, rtol=1e-5, atol=1e-6)

    result = on_a_fresh_process(
        "from test_cuda_graph import _train\n"
        "losses, _, graph = _train('cuda:1', 12, warmup=3)\n"
        "result = {'losses': losses, 'captured': graph.graph is not None}\n")
    assert result["contexts"][:2] == [False, True] and result["reserved_on_first"] == 0
    assert result["current"] == 0 and result["captured"]
    torch.testing.assert_close(torch.tensor(result["losses"]), torch.tensor(eager), rtol=1e-5, atol=1e-6)


# Reading a device value on the host (.item(), bool(tensor), data-dependent shapes) cannot be captured; torch.tensor
# from Python data would copy pageable memory, which capture also forbids. On a CPU nothing fails, so the whole step
# is run under a dispatch mode that records such operators, as it would run during capture.
HOST_READS = {"aten::_local_scalar_dense", "aten::is_nonzero", "aten::nonzero", "aten::masked_select", "aten::unique2",
              "aten::lift_fresh", "aten::lift_fresh_copy"}


class HostReads(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.seen: dict[str, str] = {}
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._schema.name in HOST_READS:
            self.seen.setdefault(func._schema.name, "".join(traceback.format_stack(limit=8)[:-1]))
            self.counts[func._schema.name] += 1
        return func(*args, **(kwargs or {}))


@pytest.fixture
def as_if_capturing(monkeypatch):
    """transformers skips its data-dependent checks (e.g. "is any token padded?") while a CUDA stream captures."""
    import transformers.utils.import_utils as import_utils

    monkeypatch.setattr(import_utils, "is_cuda_stream_capturing", lambda: True)


def _trainer(tt, tmp_path, samples: int, **options):
    from clfa.options import TrainOptions
    from clfa.training import build_trainer

    configs = tt.size_configs("tiny")
    data = tt.SyntheticData(configs, total=samples, unique=16, seed=0)
    dataset = data.dataset(data.teacher_embeddings(tt.build_teacher(configs, 0), torch.device("cpu")))
    model = tt.build_model(configs, seed=0).train()
    opts = TrainOptions(output_dir=str(tmp_path), cuda_graph=True, report_to="none", progress=False, cache_dir=str(tmp_path),
                        num_workers=0, **options)
    return build_trainer(opts, model, data.transform, dataset), dataset


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_whole_step_reads_nothing_back_to_the_host(train_throughput, as_if_capturing, tmp_path, precision):
    trainer, dataset = _trainer(train_throughput, tmp_path, 16)
    model = trainer.model
    trainer.create_optimizer()
    trainer._graphable_optimizer().refresh_lr()
    # Where the Trainer put the model (a GPU if there is one); StepGraph, bypassed here, would move the batch there.
    device = trainer.args.device
    batch = {key: value.to(device) for key, value in stack(dataset.__getitems__(list(range(8)))).items()}
    before = [p.detach().clone() for p in model.parameters()]
    reads = HostReads()
    with reads, torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16", cache_enabled=False):
        loss, ce_loss, alignment_loss, grad_norm = trainer._whole_step(model, batch)
    assert not reads.seen, "\n\n".join(f"{name} at\n{where}" for name, where in reads.seen.items())
    assert loss > 0 and ce_loss > 0 and alignment_loss > 0 and grad_norm > 0
    assert all(not torch.equal(p, b) for p, b in zip(model.parameters(), before) if p.grad is not None)  # it updated
    # Nothing returned keeps the step's autograd graph alive into the next step, which may be the capture.
    assert not any(value.requires_grad for value in (loss, ce_loss, alignment_loss, grad_norm))


def test_training_loop_waits_for_no_device_value_at_any_step(train_throughput, as_if_capturing, tmp_path):
    """The host queues step after step only if nothing in the loop or the step reads a device value back (a .item()
    waits for the GPU to finish). Reads once per run (the loader's seed, the final loss) are fine: a run twice as
    long must read no more."""
    reads = {}
    for steps in (6, 12):
        trainer, _ = _trainer(train_throughput, tmp_path / str(steps), steps * 8, max_steps=steps, logging_steps=10**6)
        with HostReads() as mode:
            trainer.train()
        reads[steps] = mode.counts["aten::_local_scalar_dense"] + mode.counts["aten::is_nonzero"]
    assert 0 < reads[6] == reads[12], reads


def _accumulator(parameter: torch.nn.Parameter):
    """The node that accumulates the parameter's gradient: the one alive, or a new one (with empty metadata)."""
    return parameter.view_as(parameter).grad_fn.next_functions[0][0]


def test_no_autograd_node_outlives_its_training_step(train_throughput, tmp_path):
    """torch (2.11 and later) accumulates a gradient on the stream where the parameter's accumulator node was made,
    and its torch.cuda.graph no longer collects garbage before capturing: a node of a warm-up step kept alive by the
    loop, a log or a reference cycle would carry the warm-up's stream into the capture. Checked with the collector
    off, so that a cycle counts as alive."""
    trainer, _ = _trainer(train_throughput, tmp_path, 48, max_steps=5, logging_steps=2)
    parameters = [p for p in trainer.model.parameters() if p.requires_grad]
    held, alive = [], []

    def mark(module, args):
        if torch.is_grad_enabled():
            for p in parameters:
                node = _accumulator(p)
                node.metadata["forward"] = True
                held.append(node)  # until the forward's own graph holds them

    class AfterEachStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            alive.append(sum("forward" in _accumulator(p).metadata for p in parameters))

    trainer.model.register_forward_pre_hook(mark)
    trainer.model.register_forward_hook(lambda module, args, output: held.clear())
    trainer.add_callback(AfterEachStep())
    gc.disable()
    try:
        trainer.train()
    finally:
        gc.enable()
    assert alive == [0] * 5


def test_side_by_side_students_refuse_a_full_graph_compile(train_throughput, tmp_path, monkeypatch):
    """The students sit outside the model's compiled graph; a compile that must capture the model whole would fail
    at the first step with dynamo's own message, so it is refused when the trainer is built."""
    monkeypatch.setenv("ACCELERATE_DYNAMO_USE_FULLGRAPH", "true")
    with pytest.raises(ValueError, match="--overlap-towers .* one full graph"):
        _trainer(train_throughput, tmp_path, 16, compile=True, overlap_towers=True)
