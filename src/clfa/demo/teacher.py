"""A tiny CLIP teacher for the demo world, trained from scratch on (image, caption) pairs in seconds.

No pretrained CLIP can be downloaded offline, so the demo trains its own: a random-initialised
``CLIPModel`` with small towers, the standard CLIP contrastive loss, and the demo's word-level BERT
tokenizer. It is saved like any CLIP checkpoint (model + tokenizer + image processor), so the rest of
the library loads it by directory through the ``transformers`` Auto classes, exactly as it would load
``openai/clip-vit-base-patch32``.

CLIP's text tower pools the hidden state at the *first* ``eos_token_id`` (``CLIPTextModel.forward`` in
transformers 5: any ``eos_token_id`` other than the legacy value 2 selects the first position equal to
it). With a BERT tokenizer every text ends in ``[SEP]``, so ``eos_token_id`` is set to its id and the
causal text tower pools the one position that has seen the whole text.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer, CLIPConfig, CLIPImageProcessorPil, CLIPModel
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from clfa.data.processing import load_image_processor
from clfa.data.records import Record
from clfa.teacher import projected_embedding
from clfa.demo.world import SCENES, filler_words, scene_of


def teacher_config(
    tokenizer,
    image_size: int = 32,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    patch_size: int = 8,
    projection_dim: int = 32,
) -> CLIPConfig:
    """A small CLIP config whose text tower matches ``tokenizer`` (vocabulary, length, pooling token)."""
    if tokenizer.sep_token_id == 2:
        raise ValueError("a [SEP] id of 2 would select CLIP's legacy argmax pooling; reorder the vocabulary")
    tower = dict(
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        projection_dim=projection_dim,
    )
    text = dict(
        tower,
        vocab_size=len(tokenizer),
        max_position_embeddings=max(40, min(int(tokenizer.model_max_length), 77)),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    vision = dict(tower, image_size=image_size, patch_size=patch_size)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)


def image_processor(image_size: int = 32) -> CLIPImageProcessorPil:
    """CLIP's preprocessing at the demo's resolution: resize (a no-op on demo images), CLIP mean/std."""
    return CLIPImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_center_crop=True,
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
    )


def _pixels(processor, records: list[Record]) -> torch.Tensor:
    images = []
    for record in records:
        with Image.open(record.image) as img:
            images.append(img.convert("RGB"))
    return processor(images=images, return_tensors="pt")["pixel_values"]


def add_filler(caption: str, rng: np.random.Generator, filler: list[str], p: float = 0.5, most: int = 8) -> str:
    """With probability ``p``, insert up to ``most`` random scene-free tweet words into ``caption``.

    A web-trained CLIP has read enough text to look past chatter; a teacher trained only on short literal
    captions has not, and random words (or positions it never saw) would sway it. Teaching it that
    sentiment, placeholders and hashtags carry no scene lets it embed tweets by the scenes they name.
    """
    if rng.random() >= p:
        return caption
    words = caption.split()
    for word in rng.choice(filler, size=int(rng.integers(1, most + 1))):
        words.insert(int(rng.integers(0, len(words) + 1)), str(word))
    return " ".join(words)


@contextmanager
def torch_threads(n: int | None):
    """Run the block with ``n`` intra-op threads (None: unchanged), then restore the previous setting.

    Tiny models gain little from intra-op parallelism, but lose badly to a busy machine: on 2 cores with
    another process running, 2 threads made this teacher's training 20x slower than 1 thread.
    """
    previous = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train_teacher(
    train_records: list[Record],
    out_dir: str | Path,
    tokenizer,
    image_size: int = 32,
    epochs: int = 5,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    progress: bool = True,
    threads: int | None = 1,
    report: Callable[[str], None] | None = None,
) -> Path:
    """Train a tiny CLIP on (image, caption) pairs of ``train_records`` and save it into ``out_dir``.

    Uses the standard symmetric CLIP loss (``return_loss=True``), AdamW, a linear warmup/decay and
    :func:`add_filler` on the captions. Runs under a forked RNG, so the caller's random state is left as it was,
    and on ``threads`` intra-op threads (see :func:`torch_threads`). ``report``, if given, receives one line per
    epoch (its mean loss and the time so far): the progress of a run whose bar is hidden.
    """
    missing = [r.id for r in train_records if not r.caption]
    if missing:
        raise ValueError(f"{len(missing)} record(s) lack a caption (first: {missing[0]}); the teacher trains on captions")
    out_dir = Path(out_dir)
    processor = image_processor(image_size)
    pixels = _pixels(processor, train_records)
    captions = [r.caption for r in train_records]
    filler = filler_words()
    rng = np.random.default_rng(seed)

    with torch.random.fork_rng(devices=[]), torch_threads(threads):
        torch.manual_seed(seed)
        model = CLIPModel(teacher_config(tokenizer, image_size))
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
        steps_per_epoch = math.ceil(len(train_records) / batch_size)
        total = epochs * steps_per_epoch
        warmup = max(1, total // 10)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup)))
        )
        bar = tqdm(total=total, desc="teacher (CLIP)", disable=not progress, unit="step")
        began = time.perf_counter()
        for epoch in range(epochs):
            order = torch.randperm(len(train_records))
            losses = []
            for start in range(0, len(order), batch_size):
                index = order[start : start + batch_size]
                if len(index) < 2:  # a contrastive batch needs negatives
                    continue
                texts = [add_filler(captions[i], rng, filler) for i in index]
                enc = tokenizer(texts, padding=True, return_tensors="pt")
                out = model(
                    input_ids=enc["input_ids"],
                    attention_mask=enc["attention_mask"],
                    pixel_values=pixels[index],
                    return_loss=True,
                )
                optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                optimizer.step()
                schedule.step()
                losses.append(out.loss.item())
                bar.update()
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if report is not None and losses:
                report(f"teacher (CLIP): epoch {epoch + 1}/{epochs}, loss {sum(losses) / len(losses):.3f} "
                       f"({time.perf_counter() - began:.0f} s)")
        bar.close()

    model.eval()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


@torch.no_grad()
def embed(teacher_dir: str | Path, texts: list[str], records: list[Record], batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised teacher embeddings of ``texts`` and of the images of ``records``, loaded via the Auto classes."""
    model = AutoModel.from_pretrained(teacher_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    processor = load_image_processor(teacher_dir)
    text, image = [], []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(texts[start : start + batch_size], padding=True, truncation=True, return_tensors="pt")
        text.append(projected_embedding(model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])))
    for start in range(0, len(records), batch_size):
        image.append(projected_embedding(model.get_image_features(pixel_values=_pixels(processor, records[start : start + batch_size]))))
    normalise = torch.nn.functional.normalize
    return normalise(torch.cat(text), dim=-1), normalise(torch.cat(image), dim=-1)


def _auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC by ranks: the chance that a random positive scores above a random negative."""
    ranks = scores.argsort().argsort() + 1.0
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / max(1, n_pos * n_neg))


def teacher_retrieval_accuracy(teacher_dir: str | Path, records: list[Record]) -> dict[str, float]:
    """How well the teacher knows the scenes, on held-out demo ``records`` (chance: about 0.25, AUC 0.5):

    - ``caption_to_image``: a caption's most similar image shows the caption's scene;
    - ``image_to_caption``: an image's most similar caption names the image's scene;
    - ``tweet_to_image``: a *tweet's* most similar image shows the scene the tweet asserts (the teacher
      never saw tweets; this is what CLFA's text alignment relies on);
    - ``tweet_scene``: a tweet is closest to the mean direction of the images of the scene it asserts;
    - ``pair_auc``: tweet-image cosine ranks matching (``not_sarcastic``) pairs above mismatching ones.
    """
    captions = [r.caption or "" for r in records]
    tweets = [r.text for r in records]
    text, image = embed(teacher_dir, captions + tweets, records)
    caption_emb, tweet_emb = text[: len(records)], text[len(records) :]
    image_scene = np.array([SCENES.index(scene_of(c)) for c in captions])
    tweet_scene = np.array([SCENES.index(scene_of(t)) for t in tweets])
    # Scene directions: normalised sums (no bias toward frequent scenes; a scene with no image gets 0).
    centroids = torch.nn.functional.normalize(
        torch.stack([image[torch.from_numpy(image_scene == k)].sum(0) for k in range(len(SCENES))]), dim=-1
    )
    pair = (tweet_emb * image).sum(-1).numpy()
    return {
        "caption_to_image": float((image_scene[(caption_emb @ image.T).argmax(1).numpy()] == image_scene).mean()),
        "image_to_caption": float((image_scene[(image @ caption_emb.T).argmax(1).numpy()] == image_scene).mean()),
        "tweet_to_image": float((image_scene[(tweet_emb @ image.T).argmax(1).numpy()] == tweet_scene).mean()),
        "tweet_scene": float(((tweet_emb @ centroids.T).argmax(1).numpy() == tweet_scene).mean()),
        "pair_auc": _auc(pair, image_scene == tweet_scene),
    }


__all__ = ["add_filler", "embed", "image_processor", "teacher_config", "teacher_retrieval_accuracy", "torch_threads", "train_teacher"]
