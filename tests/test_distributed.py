"""The alignment loss across processes: with negatives gathered from every process (with gradient), two processes
on half a batch each must train exactly like one process on the whole batch.

DDP averages parameter gradients over processes, so what must hold is: mean over processes of the local losses ==
the single-process loss, and mean over processes of the per-process parameter gradients == the single-process
gradient. For the student features themselves each process owns its rows; after DDP's division by the world
size, their gradients must equal the matching rows of the single-process gradient.
"""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from clfa.losses import contrastive_alignment_loss

WORLD = 2
BATCH, TOKENS, PATCHES, WIDTH, DIM = 8, 6, 5, 12, 16


def _inputs():
    """The global batch: student tokens before a shared projection, a text mask with padding, teacher embeddings."""
    g = torch.Generator().manual_seed(0)
    text = torch.randn(BATCH, TOKENS, WIDTH, generator=g)
    image = torch.randn(BATCH, PATCHES, WIDTH, generator=g)
    lengths = torch.randint(1, TOKENS + 1, (BATCH,), generator=g)
    mask = (torch.arange(TOKENS)[None] < lengths[:, None]).long()
    teacher_text = torch.randn(BATCH, DIM, generator=g)
    teacher_image = torch.randn(BATCH, DIM, generator=g)
    return text, image, mask, teacher_text, teacher_image


def _loss_and_grads(rows: slice, compiled: bool = False) -> dict[str, torch.Tensor]:
    """Alignment loss (text + image, as in CLFAModel) on ``rows`` of the global batch; gradients w.r.t. the shared
    projection and the mapped student features. In a process group the loss gathers negatives by default.
    ``compiled``: the loss is compiled as one graph, the gathering included (as a --compile run traces it)."""
    alignment_loss = torch.compile(contrastive_alignment_loss, fullgraph=True) if compiled else contrastive_alignment_loss
    text, image, mask, teacher_text, teacher_image = (x[rows] for x in _inputs())
    torch.manual_seed(1)
    projection = torch.nn.Linear(WIDTH, DIM)  # stands in for the shared student weights
    text_features = projection(text)
    image_features = projection(image)
    text_features.retain_grad()
    image_features.retain_grad()
    loss = alignment_loss(text_features, teacher_text, 0.1, mask=mask) + alignment_loss(image_features, teacher_image, 0.1)
    loss.backward()
    return {
        "loss": loss.detach().reshape(1),
        "weight_grad": projection.weight.grad,
        "bias_grad": projection.bias.grad,
        "text_grad": text_features.grad,
        "image_grad": image_features.grad,
    }


def _worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        local = BATCH // WORLD
        rows = slice(rank * local, (rank + 1) * local)
        results = _loss_and_grads(rows) | {f"compiled_{k}": v for k, v in _loss_and_grads(rows, compiled=True).items()}
        save_file({k: v.contiguous() for k, v in results.items()}, f"{out_dir}/rank{rank}.safetensors")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def per_process(tmp_path_factory) -> list[dict[str, torch.Tensor]]:
    out = tmp_path_factory.mktemp("dist")
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    return [load_file(out / f"rank{rank}.safetensors") for rank in range(WORLD)]


def test_gathered_loss_equals_single_process_loss_on_the_global_batch(per_process):
    single = _loss_and_grads(slice(None))
    mean_loss = torch.stack([r["loss"] for r in per_process]).mean(0)
    torch.testing.assert_close(mean_loss, single["loss"])
    # Without gathering, each process would see only its own negatives: a different (smaller) loss.
    local = BATCH // WORLD
    local_only = torch.stack([_loss_and_grads(slice(r * local, (r + 1) * local))["loss"] for r in range(WORLD)]).mean(0)
    assert not torch.allclose(local_only, single["loss"])


def test_ddp_averaged_gradients_equal_single_process_gradients(per_process):
    single = _loss_and_grads(slice(None))
    for name in ("weight_grad", "bias_grad"):
        averaged = torch.stack([r[name] for r in per_process]).mean(0)  # what DDP's all-reduce gives each process
        torch.testing.assert_close(averaged, single[name], msg=name)
    for name in ("text_grad", "image_grad"):
        rows = torch.cat([r[name] for r in per_process]) / WORLD
        torch.testing.assert_close(rows, single[name], msg=name)


def test_the_gathering_compiles_into_the_loss_graph_and_computes_the_same(per_process):
    for rank, results in enumerate(per_process):
        for name in ("loss", "weight_grad", "bias_grad", "text_grad", "image_grad"):
            torch.testing.assert_close(results[f"compiled_{name}"], results[name], msg=f"process {rank}: {name}")
