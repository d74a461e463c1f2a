"""The demo world: deterministic, balanced so that neither modality alone predicts the label, readable as
custom-format data, and fully covered by the demo tokenizer."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from transformers import AutoTokenizer

from clfa.data.custom import read_custom
from clfa.demo.tokenizer import SPECIAL_TOKENS, build_tokenizer, texts_with_unk
from clfa.demo.world import LABELS, SCENES, demo_vocabulary, filler_words, generate_world, scene_of


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    return generate_world(tmp_path_factory.mktemp("world"), n_train=480, n_dev=48, n_test=240, seed=3)


def test_deterministic_for_a_seed(tmp_path):
    a = generate_world(tmp_path / "a", 30, 6, 6, seed=1)
    b = generate_world(tmp_path / "b", 30, 6, 6, seed=1)
    c = generate_world(tmp_path / "c", 30, 6, 6, seed=2)
    for split in ("train", "dev", "test"):
        assert a[split].read_text() == b[split].read_text()
        assert a[split].read_text() != c[split].read_text()
    for row in _rows(a["train"]):
        assert (a["train"].parent / row["image"]).read_bytes() == (b["train"].parent / row["image"]).read_bytes()


def test_label_is_scene_mismatch(world):
    for split, path in world.items():
        for row in _rows(path):
            assert row["label"] == LABELS[int(row["text_scene"] != row["image_scene"])]
            assert scene_of(row["text"]) == row["text_scene"], row["text"]
            assert scene_of(row["caption"]) == row["image_scene"], row["caption"]


def test_balanced_per_scene_in_each_modality(world):
    rows = _rows(world["train"])  # 480 = 20 exactly balanced blocks of 24
    for key in ("text_scene", "image_scene"):
        counts = Counter((row[key], row["label"]) for row in rows)
        assert set(counts.values()) == {480 // 8}, (key, counts)
    odd = _rows(generate_world(world["train"].parent / "odd", 101, 0, 0)["train"])
    for key in ("text_scene", "image_scene"):
        counts = Counter((row[key], row["label"]) for row in odd)
        assert max(counts.values()) - min(counts.values()) <= 3, counts


def _bag_of_words(texts: list[str], vocab: list[str]) -> np.ndarray:
    index = {word: i for i, word in enumerate(vocab)}
    out = np.zeros((len(texts), len(vocab)))
    for row, text in enumerate(texts):
        for word in text.split():
            out[row, index[word]] += 1
    return out


def _pixels(paths: list[Path]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p).convert("RGB").resize((4, 4)), dtype=np.float32).ravel() / 255 for p in paths])


def test_neither_modality_alone_predicts_the_label(world):
    """Linear probes read the scene from either modality almost perfectly, and the label from neither."""
    train, test = _rows(world["train"]), _rows(world["test"])
    vocab = sorted({w for row in train + test for w in row["text"].split()})
    features = {
        "text": (_bag_of_words([r["text"] for r in train], vocab), _bag_of_words([r["text"] for r in test], vocab)),
        "image": (
            _pixels([world["train"].parent / r["image"] for r in train]),
            _pixels([world["test"].parent / r["image"] for r in test]),
        ),
    }
    for modality, (x_train, x_test) in features.items():
        scene_key = f"{modality}_scene"
        probe = LogisticRegression(max_iter=2000).fit(x_train, [r[scene_key] for r in train])
        assert probe.score(x_test, [r[scene_key] for r in test]) > 0.9, modality
        probe = LogisticRegression(max_iter=2000).fit(x_train, [r["label"] for r in train])
        assert abs(probe.score(x_test, [r["label"] for r in test]) - 0.5) < 0.1, modality


def test_reads_as_custom_format(world):
    for split, path in world.items():
        records = read_custom(path, labels=list(LABELS))
        assert len(records) == len(_rows(path))
        assert all(r.caption and r.image.is_file() for r in records)
    with Image.open(records[0].image) as img:
        assert img.size == (32, 32)


def test_image_size_is_configurable(tmp_path):
    paths = generate_world(tmp_path, 8, 0, 0, image_size=48)
    with Image.open(tmp_path / _rows(paths["train"])[0]["image"]) as img:
        assert img.size == (48, 48)


def test_tokenizer_covers_every_text(world, tmp_path):
    build_tokenizer(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert tokenizer.convert_ids_to_tokens(list(range(len(SPECIAL_TOKENS)))) == SPECIAL_TOKENS
    assert len(tokenizer) == len(SPECIAL_TOKENS) + len(demo_vocabulary())
    rows = [row for path in world.values() for row in _rows(path)]
    assert texts_with_unk(tokenizer, [r["text"] for r in rows] + [r["caption"] for r in rows]) == []
    ids = tokenizer(["hey <user> what a lovely sunny summer day #blessed :)"])["input_ids"][0]
    assert tokenizer.convert_ids_to_tokens(ids) == [
        "[CLS]", "hey", "<", "user", ">", "what", "a", "lovely", "sunny", "summer", "day", "#", "blessed", ":", ")", "[SEP]",
    ]


def test_filler_words_name_no_scene():
    for word in filler_words():
        with pytest.raises(ValueError, match=r"names 0 scenes \(\[\]\), expected exactly one"):
            scene_of(word)
    assert set(filler_words()) <= set(demo_vocabulary())
    assert {scene_of(s) for s in ("sunny", "rain", "snowfall", "moonlit")} == set(SCENES)
