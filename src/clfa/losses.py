"""The CLFA alignment loss: in-batch symmetric InfoNCE between student features and frozen teacher embeddings."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def pool_tokens(features: torch.Tensor, mask: torch.Tensor | None = None, method: str = "mean") -> torch.Tensor:
    """(B, T, D) -> (B, D). ``mean`` averages the tokens where ``mask`` is 1 (all tokens without a mask);
    ``cls`` takes the first token. Padded tokens get no weight, hence no gradient."""
    if features.dim() == 2:
        return features
    if method == "cls":
        return features[:, 0]
    if method != "mean":
        raise ValueError(f"unknown pooling '{method}' (use 'mean' or 'cls')")
    if mask is None:
        return features.mean(dim=1)
    weights = mask.to(features.dtype).unsqueeze(-1)
    return (features * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def _gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every process; gradients flow back to each process's own slice."""
    # A functional collective: unlike torch.distributed.nn's all_gather (deprecated) it also traces under
    # torch.compile. Its name changed in torch 2.13, and the older one warns there.
    import torch.distributed._functional_collectives as collectives

    gather = getattr(collectives, "all_gather_single_autograd", None) or collectives.all_gather_tensor_autograd
    return gather(x.contiguous(), gather_dim=0, group=dist.group.WORLD)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def contrastive_alignment_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    temperature: float = 0.1,
    mask: torch.Tensor | None = None,
    pooling: str = "mean",
    gather: bool | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE aligning student features with teacher embeddings of the same samples.

    ``student``: (B, D), or (B, T, D) pooled with ``mask`` (B, T) (``pooling`` = mean or cls).
    ``teacher``: (B, D); treated as a constant (no gradient reaches it).
    Both are L2-normalised, logits = cosine similarity / temperature, and the loss is
    0.5 * CE(student -> teacher) + 0.5 * CE(teacher -> student) with the matching pairs as targets.

    ``gather``: in a multi-process run, use the samples of all processes as negatives (default: on
    whenever torch.distributed is initialised with more than one process), so that the loss equals the
    single-process loss on the global batch.
    """
    pooled = pool_tokens(student, mask, pooling).float()
    if gather is None:
        gather = _distributed()
    # Autocast would run the similarity matmuls in bf16 even on these fp32 inputs: at temperature 0.1 the logits
    # reach +-10, where bf16 steps by 0.06, enough to move the loss and its gradient by a percent or two.
    with torch.autocast(pooled.device.type, enabled=False):
        s = F.normalize(pooled, dim=-1)
        t = F.normalize(teacher.detach().float(), dim=-1)
        offset = 0
        if gather:
            local = s.shape[0]
            offset = dist.get_rank() * local
            s_all = _gather_with_grad(s)
            t_all = _gather_with_grad(t)
            # Each process scores its own rows against all columns, so the mean over processes is the global loss.
            logits_st = s @ t_all.T / temperature
            logits_ts = t @ s_all.T / temperature
        else:
            logits_st = s @ t.T / temperature
            logits_ts = logits_st.T
        targets = torch.arange(s.shape[0], device=s.device) + offset
        return 0.5 * F.cross_entropy(logits_st, targets) + 0.5 * F.cross_entropy(logits_ts, targets)
