"""The fast training path computes what the plain one does.

benchmarks/train_throughput.py times a plain fp32 loop that runs the CLIP teacher on every batch ("naive") against
the project's Trainer path with cached teacher embeddings, fused AdamW, bf16 autocast and uint8 batches normalised
after the copy ("fast"), with or without whole steps in one CUDA graph. Speed is only worth having if the math is
the same: with the same init, the same batches in the same order and dropout off, the per-step losses must agree
exactly in fp32 and within bf16 rounding in bf16.
"""

from __future__ import annotations

import pytest
import torch

from clfa.data.processing import stack

STEPS, BATCH, LR = 50, 8, 1e-3  # a learning rate high enough that the loss moves a lot in 50 steps


@pytest.fixture(scope="module")
def runs(train_throughput):
    tt = train_throughput
    # Both paths on the device the Trainer picks, so that only the paths differ, not the kernels of two devices.
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models gain nothing from more, and a busy machine makes more much slower
    # On CUDA, cuDNN convolutions default to TF32, whose rounding would turn the paths' last-bit differences into
    # loss differences far above fp32's; the comparison is of fp32 arithmetic.
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        configs = tt.size_configs("tiny", dropout=0.0)
        data = tt.SyntheticData(configs, total=STEPS * BATCH, unique=100, seed=0)
        common = dict(batch_size=BATCH, warmup=1, steps=STEPS - 1, seed=0, lr=LR)
        naive = tt.run_naive(configs, data, device=device, shuffle=False, **common)["losses"]
        # (precision, whole steps, compiled, students side by side)
        variants = [(precision, cuda_graph, False, False) for precision in ("fp32", "bf16") for cuda_graph in (False, True)]
        variants.append(("fp32", True, False, True))
        if device.type == "cuda":  # compiling costs minutes on a CPU; on a GPU it is the configuration that runs
            variants += [("bf16", True, True, False), ("bf16", True, True, True)]
        fast = {
            (precision, cuda_graph, compile, overlap): tt.run_fast(
                configs, data, precision=precision, cuda_graph=cuda_graph, compile=compile, overlap_towers=overlap,
                workers=0, sampling="sequential", record_losses=True, **common,
            )["losses"]
            for precision, cuda_graph, compile, overlap in variants
        }
    finally:
        torch.set_num_threads(threads)
        torch.backends.cudnn.allow_tf32 = tf32
    return torch.tensor(naive), {k: torch.tensor(v) for k, v in fast.items()}


def test_runs_are_long_enough_to_mean_something(runs):
    naive, fast = runs
    assert len(naive) == STEPS and all(len(losses) == STEPS for losses in fast.values())
    assert len(fast) == (7 if torch.cuda.is_available() else 5)
    assert naive[-10:].mean() < 0.6 * naive[:10].mean()  # the model learns: a real trajectory is compared


# cuda_graph: whole steps (forward, backward, clipping, AdamW) as one function; on a GPU captured in a CUDA graph
# after 3 eager steps and replayed for the other 46, elsewhere run eagerly. overlap: the students on two CUDA streams
# (on a CPU one after the other).
@pytest.mark.parametrize("cuda_graph, overlap", [(False, False), (True, False), (True, True)],
                         ids=["trainer_step", "whole_step", "whole_step_side_by_side"])
def test_fast_path_fp32_matches_naive_loss_for_loss(runs, cuda_graph, overlap):
    naive, fast = runs
    torch.testing.assert_close(fast["fp32", cuda_graph, False, overlap], naive, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cuda_graph", [False, True], ids=["trainer_step", "whole_step"])
def test_fast_path_bf16_matches_naive_within_bf16_tolerance(runs, cuda_graph):
    naive, fast = runs
    _assert_within_bf16_tolerance(fast["bf16", cuda_graph, False, False], naive)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiled and captured: the GPU configuration")
@pytest.mark.parametrize("overlap", [False, True], ids=["one_stream", "side_by_side"])
def test_compiled_whole_step_in_a_cuda_graph_matches_naive_within_bf16_tolerance(runs, overlap):
    naive, fast = runs
    _assert_within_bf16_tolerance(fast["bf16", True, True, overlap], naive)


def _assert_within_bf16_tolerance(losses, naive):
    relative = (losses - naive).abs() / naive.abs()
    assert relative.max() < 0.03, relative
    assert relative.mean() < 0.01, relative


def test_training_step_is_one_graph_compiled_once(train_throughput):
    """CUDA graphs (``--compile-mode reduce-overhead``) cover only what torch.compile captures: a graph break splits
    the step, and a recompilation per batch would make every step slow. Checked with dynamo's ``fullgraph`` and
    ``error_on_recompile`` on the AOT-autograd backend (no code generation, so it runs in seconds on a CPU)."""
    tt = train_throughput
    configs = tt.size_configs("tiny", dropout=0.0)
    data = tt.SyntheticData(configs, total=4 * BATCH, unique=4 * BATCH, seed=0)
    dataset = data.dataset(data.teacher_embeddings(tt.build_teacher(configs, 0), torch.device("cpu")))
    model = tt.build_model(configs, seed=0).train()
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    try:
        with torch._dynamo.config.patch(error_on_recompile=True):
            for step in range(4):
                batch = stack(dataset.__getitems__(list(range(step * BATCH, (step + 1) * BATCH))))
                batch["pixel_values"] = data.transform.normalize(batch.pop("pixels"))
                loss = compiled(**batch).loss
                loss.backward()
                grads = [p.grad.clone() for p in model.parameters()]
                model.zero_grad()
                eager = model(**batch).loss
                eager.backward()
                torch.testing.assert_close(loss.detach(), eager.detach(), rtol=1e-5, atol=1e-6)
                for compiled_grad, p in zip(grads, model.parameters()):
                    torch.testing.assert_close(compiled_grad, p.grad, rtol=1e-4, atol=1e-6)
                model.zero_grad()
    finally:
        torch._dynamo.reset()


def test_side_by_side_students_are_each_compiled_and_train_as_the_model_does(train_throughput, tmp_path):
    """--overlap-towers puts the students outside the model's compiled graph (one graph runs on one stream), so the
    Trainer compiles each on its own: they must be compiled, once, and the run must be the plain one, loss for loss.
    AOT-autograd backend (no code generation) on a CPU, where the students run one after the other."""
    from torch._dynamo.utils import counters

    from clfa.options import TrainOptions
    from clfa.training import build_trainer, training_arguments

    tt = train_throughput
    configs = tt.size_configs("tiny", dropout=0.0)
    data = tt.SyntheticData(configs, total=6 * BATCH, unique=6 * BATCH, seed=0)
    dataset = data.dataset(data.teacher_embeddings(tt.build_teacher(configs, 0), torch.device("cpu")))
    losses, students = {}, {}
    for overlap in (False, True):
        opts = TrainOptions(output_dir=str(tmp_path / str(overlap)), batch_size=BATCH, max_steps=6, learning_rate=LR,
                            seed=0, precision="fp32", compile=overlap, cuda_graph=True, overlap_towers=overlap,
                            num_workers=0, report_to="none", progress=False, logging_steps=1, cache_dir=str(tmp_path))
        args = training_arguments(opts, has_dev=False)
        args.torch_compile_backend = "aot_eager"
        args.train_sampling_strategy = "sequential"
        model = tt.build_model(configs, seed=0)
        trainer = build_trainer(opts, model, data.transform, dataset, args=args)
        torch._dynamo.reset()
        counters.clear()
        try:
            trainer.train()
        finally:
            torch._dynamo.reset()
        losses[overlap] = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        students[overlap] = [student._compiled_call_impl is not None for student in (model.text_model, model.image_model)]
        assert model.overlap_towers == overlap
    assert students == {False: [False, False], True: [True, True]}
    # The model's own graph (fusion, head, losses) and one per student, over 6 steps: nothing recompiled per batch.
    # (Both students enter through the same transformers wrapper, so the second one counts as a recompilation.)
    assert counters["stats"]["unique_graphs"] == 3, dict(counters["stats"])
    assert len(losses[True]) == 6
    torch.testing.assert_close(torch.tensor(losses[True]), torch.tensor(losses[False]), rtol=1e-4, atol=1e-4)


def test_fused_linears_compile_one_product_per_shared_input_and_train_as_the_naive_path(runs, train_throughput):
    """--fuse-linears rewrites the graph inductor compiles: each student layer's queries, keys and values become one
    matrix product (tiny: 2 BERT and 2 ViT layers; one fusion layer, whose keys and values are one layer already).
    The Trainer's compiled fp32 run must then be the naive run, loss for loss. Compiling takes about a minute here."""
    from torch._dynamo.utils import counters

    tt = train_throughput
    naive, _ = runs
    configs = tt.size_configs("tiny", dropout=0.0)
    data = tt.SyntheticData(configs, total=STEPS * BATCH, unique=100, seed=0)
    threads, tf32 = torch.get_num_threads(), torch.backends.cudnn.allow_tf32
    torch.set_num_threads(1)
    torch.backends.cudnn.allow_tf32 = False  # as for the runs it is compared with
    torch._dynamo.reset()
    counters.clear()
    try:
        # A graph from inductor's cache would not pass through the pass again, and so would not be counted. The pass
        # rewrites the graph before code generation: scalar C++ kernels run the same rewritten graph, and compile in
        # about 60% of the time of vectorised ones.
        with torch._inductor.config.patch({"force_disable_caches": True, "cpp.vec_isa_ok": False}):
            losses = tt.run_fast(configs, data, batch_size=BATCH, warmup=1, steps=STEPS - 1, seed=0, lr=LR, precision="fp32",
                                 compile=True, fuse_linears=True, workers=0, sampling="sequential", record_losses=True)["losses"]
    finally:
        torch.set_num_threads(threads)
        torch.backends.cudnn.allow_tf32 = tf32
        torch._dynamo.reset()
    assert counters["inductor"]["fused_linear_groups"] == 4, dict(counters["inductor"])
    torch.testing.assert_close(torch.tensor(losses), naive, rtol=1e-4, atol=1e-4)
