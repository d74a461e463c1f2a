"""The demo's tiny CLIP teacher: loads like any CLIP checkpoint, pools at [SEP], and learns the scenes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer, CLIPModel

from clfa.data.custom import read_custom
from clfa.demo.teacher import add_filler, embed, teacher_retrieval_accuracy, train_teacher
from clfa.demo.tokenizer import build_tokenizer
from clfa.demo.world import filler_words, generate_world, scene_of
from clfa.teacher import compute_teacher_embeddings, projected_embedding, teacher_projection_dim


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A teacher trained for ~100 small steps (about 2 s on one thread), and held-out records."""
    root = tmp_path_factory.mktemp("demo_teacher")
    paths = generate_world(root / "world", n_train=192, n_dev=96, n_test=0, seed=0)
    tokenizer = build_tokenizer(root / "tokenizer")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # not the one thread the teacher trains on, so that a count left behind shows
    try:
        rng = torch.get_rng_state()
        teacher = train_teacher(read_custom(paths["train"]), root / "teacher", tokenizer, epochs=8, batch_size=16, progress=False)
        assert torch.equal(rng, torch.get_rng_state()), "training the teacher must not move the caller's RNG"
        assert torch.get_num_threads() == 2, "nor change its thread count"
    finally:
        torch.set_num_threads(threads)
    return teacher, read_custom(paths["dev"])


def test_loads_through_auto_classes(trained):
    teacher, _ = trained
    model = AutoModel.from_pretrained(teacher)
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    processor = AutoImageProcessor.from_pretrained(teacher)
    assert isinstance(model, CLIPModel)
    assert model.config.text_config.vocab_size == len(tokenizer)
    assert model.config.text_config.eos_token_id == tokenizer.sep_token_id != 2
    assert model.config.text_config.max_position_embeddings >= 40
    assert teacher_projection_dim(str(teacher)) == model.config.projection_dim
    assert processor.crop_size["height"] == processor.crop_size["width"] == model.config.vision_config.image_size


def test_text_tower_pools_at_sep(trained):
    teacher, records = trained
    model = AutoModel.from_pretrained(teacher).eval()
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    enc = tokenizer([r.text for r in records[:4]], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model.text_model(**enc).last_hidden_state
        sep = (enc["input_ids"] == tokenizer.sep_token_id).int().argmax(-1)
        expected = model.text_projection(hidden[torch.arange(len(sep)), sep])
        got = projected_embedding(model.get_text_features(**enc))
    assert torch.allclose(got, expected, atol=1e-5)
    assert (enc["attention_mask"].sum(-1) - 1 == sep).all()  # [SEP] is the last real token


def test_knows_the_scenes(trained):
    teacher, records = trained
    scores = teacher_retrieval_accuracy(teacher, records)
    assert scores["caption_to_image"] > 0.6, scores  # chance 0.25
    assert scores["tweet_scene"] > 0.5, scores  # chance 0.25
    assert scores["pair_auc"] > 0.75, scores  # chance 0.5


def test_embeddings_through_the_library(trained):
    teacher, records = trained
    text, image = compute_teacher_embeddings(records[:8], str(teacher), progress=False)
    assert text.shape == image.shape == (8, AutoModel.from_pretrained(teacher).config.projection_dim)
    # The library's cached embeddings are the demo teacher's own, in direction (the loss normalises them).
    own_text, own_image = embed(teacher, [record.text for record in records[:8]], records[:8])
    torch.testing.assert_close(torch.nn.functional.normalize(text, dim=-1), own_text, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.nn.functional.normalize(image, dim=-1), own_image, rtol=1e-4, atol=1e-5)


def test_filler_keeps_the_scene():
    rng = np.random.default_rng(0)
    caption = "a photo of a rainy street with falling rain"
    noisy = [add_filler(caption, rng, filler_words(), p=1.0) for _ in range(20)]
    assert all(len(n.split()) > len(caption.split()) and scene_of(n) == "rainy" for n in noisy)


def test_needs_captions(tmp_path):
    paths = generate_world(tmp_path / "world", 4, 0, 0)
    records = [replace(r, caption=None) for r in read_custom(paths["train"])]
    with pytest.raises(ValueError, match="caption"):
        train_teacher(records, tmp_path / "teacher", build_tokenizer(tmp_path / "tok"), epochs=1, progress=False)
