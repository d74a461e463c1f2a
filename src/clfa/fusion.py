"""Aggregation of mapped text and image tokens into one vector for the classifier, chosen by name.

Every fusion module takes ``text`` (B, T, D), ``text_mask`` (B, T) and ``image`` (B, P, D) and returns
(B, output_dim). New methods register with :func:`register_fusion`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from clfa.errors import OptionError
from clfa.losses import pool_tokens

FUSIONS: dict[str, type[nn.Module]] = {}


def register_fusion(name: str):
    def wrap(cls):
        FUSIONS[name] = cls
        return cls

    return wrap


def build_fusion(config) -> nn.Module:
    if config.fusion not in FUSIONS:
        raise OptionError(f"unknown fusion '{config.fusion}'; choose from {', '.join(sorted(FUSIONS))}")
    return FUSIONS[config.fusion](config)


class CrossAttentionLayer(nn.Module):
    """Post-norm transformer layer whose attention takes queries from text and keys/values from the image."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim))
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.attn_dropout = dropout

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, t, d = query.shape
        h = self.heads
        q = self.q(query).view(b, t, h, d // h).transpose(1, 2)
        k, v = self.kv(context).view(b, context.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
        # Image tokens are never padded, so no attention mask is needed and SDPA can pick its fastest kernel.
        attn = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_dropout if self.training else 0.0)
        attn = attn.transpose(1, 2).reshape(b, t, d)
        x = self.norm1(query + self.dropout(self.out(attn)))
        return self.norm2(x + self.dropout(self.ffn(x)))


@register_fusion("cross_attention")
class CrossAttentionFusion(nn.Module):
    """The paper's aggregation: text tokens attend to image tokens, layer after layer; pooled fused text out."""

    def __init__(self, config):
        super().__init__()
        self.layers = nn.ModuleList(
            CrossAttentionLayer(config.align_dim, config.fusion_heads, config.fusion_ffn_dim, config.dropout)
            for _ in range(config.fusion_layers)
        )
        self.pooling = config.classifier_pooling
        self.output_dim = config.align_dim

    def forward(self, text, text_mask, image):
        x = text
        for layer in self.layers:
            x = layer(x, image)
        return pool_tokens(x, text_mask, self.pooling)


@register_fusion("concat")
class ConcatFusion(nn.Module):
    """Pooled text and pooled image features side by side."""

    def __init__(self, config):
        super().__init__()
        self.pooling = config.classifier_pooling
        self.output_dim = 2 * config.align_dim

    def forward(self, text, text_mask, image):
        return torch.cat([pool_tokens(text, text_mask, self.pooling), pool_tokens(image, None, self.pooling)], dim=-1)


@register_fusion("co_attention")
class CoAttentionFusion(nn.Module):
    """Parallel co-attention (Lu et al. 2016): an affinity matrix C = tanh(Q W_b V^T) lets each modality's
    attention over its own tokens be guided by the other; the attended text and image vectors are concatenated."""

    def __init__(self, config):
        super().__init__()
        d, k = config.align_dim, config.align_dim
        self.w_b = nn.Linear(d, d, bias=False)
        self.w_q = nn.Linear(d, k, bias=False)
        self.w_v = nn.Linear(d, k, bias=False)
        self.h_q = nn.Linear(k, 1, bias=False)
        self.h_v = nn.Linear(k, 1, bias=False)
        self.dropout = nn.Dropout(config.dropout)
        self.output_dim = 2 * d

    def forward(self, text, text_mask, image):
        affinity = torch.tanh(self.w_b(text) @ image.transpose(1, 2))  # (B, T, P)
        pad = ~text_mask.bool()
        affinity = affinity.masked_fill(pad.unsqueeze(-1), 0.0)
        wq, wv = self.w_q(text), self.w_v(image)
        h_v = torch.tanh(wv + affinity.transpose(1, 2) @ wq)  # (B, P, k)
        h_q = torch.tanh(wq + affinity @ wv)  # (B, T, k)
        a_v = torch.softmax(self.h_v(self.dropout(h_v)).squeeze(-1), dim=-1)
        a_q = torch.softmax(self.h_q(self.dropout(h_q)).squeeze(-1).masked_fill(pad, float("-inf")), dim=-1)
        return torch.cat([(a_q.unsqueeze(-1) * text).sum(1), (a_v.unsqueeze(-1) * image).sum(1)], dim=-1)


@register_fusion("text_only")
class TextOnly(nn.Module):
    """Baseline: the text alone (without alignment, the image student is not run)."""

    def __init__(self, config):
        super().__init__()
        self.pooling = config.classifier_pooling
        self.output_dim = config.align_dim

    def forward(self, text, text_mask, image):
        return pool_tokens(text, text_mask, self.pooling)


@register_fusion("image_only")
class ImageOnly(nn.Module):
    """Baseline: the image alone (without alignment, the text student is not run)."""

    def __init__(self, config):
        super().__init__()
        self.pooling = config.classifier_pooling
        self.output_dim = config.align_dim

    def forward(self, text, text_mask, image):
        return pool_tokens(image, None, self.pooling)
