import copy

import pytest
import torch
from torch import nn
from transformers import AutoModel, CLIPVisionConfig, ViTConfig

from clfa.patch_projection import PatchProjection, is_patch_embedding, use_patch_projections


def _projection_of(conv: nn.Conv2d) -> PatchProjection:
    """A copy of ``conv`` as a PatchProjection, whatever its geometry (use_patch_projections would refuse some)."""
    projection = copy.deepcopy(conv)
    projection.__class__ = PatchProjection
    return projection


@pytest.mark.parametrize(
    "channels, out, kernel, size, bias",
    [
        (3, 48, 8, (32, 32), True),  # ViT-style, the image a whole number of patches
        (3, 40, 8, (30, 37), False),  # CLIP-style (no bias); rows and columns left over, as a strided conv drops them
        (2, 16, (4, 6), (17, 25), True),  # rectangular patches
    ],
)
def test_patch_projection_equals_the_convolution_in_values_and_gradients(channels, out, kernel, size, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(channels, out, kernel, stride=kernel, bias=bias)
    projection = _projection_of(conv)
    pixels = torch.randn(5, channels, *size, requires_grad=True)
    expected = conv(pixels)
    got = projection(pixels)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # What a patch embedding does next is a view of the projection's output.
    assert got.flatten(2).transpose(1, 2).is_contiguous()

    upstream = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, [pixels, *conv.parameters()], upstream)
    got_grads = torch.autograd.grad(got, [pixels, *projection.parameters()], upstream)
    for want, have in zip(expected_grads, got_grads, strict=True):
        torch.testing.assert_close(have, want, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(3, 8, 4, stride=2),
        nn.Conv2d(3, 8, 4, stride=4, padding=1),
        nn.Conv2d(4, 8, 4, stride=4, groups=2),
        nn.Conv2d(3, 8, 2, stride=2, dilation=2),
        nn.Conv2d(3, 8, 4, stride=4, padding_mode="reflect"),
        nn.Conv2d(3, 8, 1),
    ],
    ids=["overlapping", "padded", "grouped", "dilated", "reflect-padded", "1x1"],
)
def test_only_patch_embeddings_are_replaced(conv):
    assert not is_patch_embedding(conv)
    model = nn.Sequential(conv, nn.Conv2d(8, 8, 2, stride=2, padding="valid"))
    assert use_patch_projections(model) == 1
    assert type(model[0]) is nn.Conv2d and type(model[1]) is PatchProjection
    # Only the one reading the image's channels, when they are given: a ConvNeXt-style downsampling layer stays.
    model = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.Conv2d(8, 16, 2, stride=2))
    assert use_patch_projections(model, in_channels=3) == 1
    assert type(model[0]) is PatchProjection and type(model[1]) is nn.Conv2d


def test_a_projection_of_another_geometry_or_an_unbatched_input_runs_as_the_convolution():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 4, stride=2, padding=1)
    pixels = torch.randn(2, 3, 12, 12)
    torch.testing.assert_close(_projection_of(conv)(pixels), conv(pixels), rtol=0, atol=0)
    patch = nn.Conv2d(3, 8, 4, stride=4)
    torch.testing.assert_close(_projection_of(patch)(pixels[0]), patch(pixels[0]), rtol=0, atol=0)


@pytest.mark.parametrize(
    "config",
    [
        ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
        CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
    ],
    ids=["vit", "clip-vision"],
)
def test_image_encoders_give_the_same_states_with_patch_projections(config):
    torch.manual_seed(0)
    encoder = AutoModel.from_config(config).eval()
    projected = copy.deepcopy(encoder)
    assert use_patch_projections(projected) == 1
    assert projected.state_dict().keys() == encoder.state_dict().keys()
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(projected(pixel_values=pixels).last_hidden_state,
                                   encoder(pixel_values=pixels).last_hidden_state, atol=1e-5, rtol=1e-5)


def test_the_model_builds_and_reloads_its_patch_embedding_as_a_projection(tiny_models, tmp_path):
    from clfa import CLFAModel

    model = CLFAModel.from_encoders(tiny_models["text"], tiny_models["image"], labels=["a", "b"], align_dim=24)
    projections = [module for module in model.image_model.modules() if isinstance(module, PatchProjection)]
    assert len(projections) == 1
    model.save_pretrained(tmp_path)
    reloaded = CLFAModel.from_pretrained(tmp_path)
    [reloaded_projection] = [module for module in reloaded.image_model.modules() if isinstance(module, PatchProjection)]
    torch.testing.assert_close(reloaded_projection.weight, projections[0].weight)
