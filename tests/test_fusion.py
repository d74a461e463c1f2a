"""The fusions of the aligned text and image features (clfa.fusion): each trains, and the cross-attention fusion is
post-norm attention from text queries to image keys and values."""

import pytest
import torch

from clfa.fusion import FUSIONS
from conftest import batch, make_model


@pytest.mark.parametrize("fusion", sorted(FUSIONS))
def test_every_fusion_trains(tiny_models, fusion):
    model = make_model(tiny_models, fusion=fusion)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    inputs = batch()
    losses = []
    for _ in range(5):
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_the_fusion_is_post_norm_cross_attention_from_text_queries_to_image_keys_and_values(tiny_models):
    """Each layer: x = LN(x + attention(queries x, keys and values image)); x = LN(x + FFN(x)); the next layer takes
    x as its queries; the classifier reads the masked mean of the last x. Attention by torch's own multi-head
    attention, on the layer's weights."""
    import torch.nn.functional as F

    model = make_model(tiny_models, fusion_layers=3, initializer_range=0.3).eval()
    inputs = batch()  # its first text is padded after 4 tokens
    mask = inputs["attention_mask"]
    with torch.no_grad():
        out = model(**inputs)
        states = model.text_model(input_ids=inputs["input_ids"], attention_mask=mask).last_hidden_state
        x, image = model.text_mapping(states), model.image_mapping(model.image_model(pixel_values=inputs["pixel_values"]).last_hidden_state)
        d = x.shape[-1]
        for layer in model.fusion.layers:
            k_weight, v_weight = layer.kv.weight.chunk(2)
            attended, _ = F.multi_head_attention_forward(
                x.transpose(0, 1), image.transpose(0, 1), image.transpose(0, 1), d, layer.heads, None,
                torch.cat([layer.q.bias, layer.kv.bias]), None, None, False, 0.0, layer.out.weight, layer.out.bias,
                training=False, need_weights=False, use_separate_proj_weight=True,
                q_proj_weight=layer.q.weight, k_proj_weight=k_weight, v_proj_weight=v_weight)
            x = layer.norm1(x + attended.transpose(0, 1))
            x = layer.norm2(x + layer.ffn(x))
        pooled = (x * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        torch.testing.assert_close(out.logits, model.classifier(pooled), rtol=1e-5, atol=1e-5)
        # Padded text tokens are queries whose outputs no pooled state reads: what they hold changes nothing.
        changed = dict(inputs, input_ids=inputs["input_ids"].clone())
        changed["input_ids"][0, 4:] = 5
        torch.testing.assert_close(model(**changed).logits[0], out.logits[0], rtol=1e-5, atol=1e-5)
