"""Patch embeddings as the matrix products they are.

ViT's and CLIP's first layer is a ``Conv2d`` whose stride equals its kernel: each output pixel is one
non-overlapping patch times a weight matrix. GPU convolution libraries treat it as a general convolution; on one
H100 the weight gradient of ViT-B/32's patch embedding took 3.0 ms a step at batch 256 through cuDNN, for a 59 GFLOP
product that would take about 0.1 ms at the rate the step's other matrix products ran. :class:`PatchProjection`
computes the same layer as reshape, matmul and reshape, with the same parameters under the same names, so
checkpoints do not change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchProjection(nn.Conv2d):
    """A ``Conv2d`` with stride equal to its kernel, no padding, dilation or groups, computed as a matmul over
    patches. Its output has the convolution's shape and values, in a channels-last layout: ``flatten(2)`` and
    ``transpose(1, 2)``, what patch embeddings do next, are then views. Any other geometry, or an unbatched input,
    runs as the convolution."""

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.dim() != 4 or not _patch_geometry(self):
            return super().forward(pixels)
        (k_h, k_w), out = self.kernel_size, self.out_channels
        batch, channels, height, width = pixels.shape
        rows, cols = height // k_h, width // k_w
        # A strided convolution ignores the rows and columns that do not fill a whole patch.
        patches = pixels[:, :, : rows * k_h, : cols * k_w].reshape(batch, channels, rows, k_h, cols, k_w)
        patches = patches.permute(0, 2, 4, 1, 3, 5).reshape(batch, rows * cols, channels * k_h * k_w)
        embedded = F.linear(patches, self.weight.reshape(out, -1), self.bias)
        return embedded.reshape(batch, rows, cols, out).permute(0, 3, 1, 2)


def _patch_geometry(conv: nn.Conv2d) -> bool:
    return (
        conv.stride == conv.kernel_size
        and conv.padding in ((0, 0), "valid")
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
    )


def is_patch_embedding(module: nn.Module, in_channels: int | None = None) -> bool:
    """A plain ``Conv2d`` that cuts its input into non-overlapping patches larger than one pixel (1x1 convolutions
    and the strided ones inside convolutional networks are left alone), reading ``in_channels`` if given."""
    return (
        type(module) is nn.Conv2d
        and _patch_geometry(module)
        and module.kernel_size != (1, 1)
        and (in_channels is None or module.in_channels == in_channels)
    )


def use_patch_projections(model: nn.Module, in_channels: int | None = None) -> int:
    """Turns every patch embedding of ``model`` (reading ``in_channels``, the image's channels, if given) into a
    :class:`PatchProjection`, in place: the module keeps its parameters, buffers and hooks, only its class changes,
    as torch's parametrizations do. Returns how many."""
    convolutions = [module for module in model.modules() if is_patch_embedding(module, in_channels)]
    for module in convolutions:
        module.__class__ = PatchProjection
    return len(convolutions)
