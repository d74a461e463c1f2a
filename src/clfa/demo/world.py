"""A small synthetic image+text sarcasm world, written in the custom JSONL format.

Each sample pairs a rendered weather scene (sunny, rainy, snowy, night) with a templated tweet that
asserts a scene. The label is ``sarcastic`` exactly when the tweet's scene differs from the image's.
Every scene, every tweet template and every image type occurs equally often with both labels, so a
text-only or image-only classifier can do no better than chance: only the *pair* decides the label,
which is the situation CLFA's cross-modal alignment is meant for.

Each record also carries a literal ``caption`` of its image; captions and tweets share the scene words,
so a CLIP teacher trained on (image, caption) pairs maps tweets near images of the scene they assert.
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from clfa.data.records import SPLITS

SCENES: tuple[str, ...] = ("sunny", "rainy", "snowy", "night")
LABELS: tuple[str, ...] = ("not_sarcastic", "sarcastic")

# Scene words shared by tweets and captions: the link a caption-trained teacher needs to read tweets.
# Every scene has its own words of each kind, so that no scene is easier to spot in text than another.
SCENE_WORDS: dict[str, dict[str, list[str]]] = {
    "sunny": {"adj": ["sunny", "bright"], "noun": ["sunshine", "sun"], "time": ["summer day", "hot afternoon"]},
    "rainy": {"adj": ["rainy", "wet"], "noun": ["rain", "drizzle"], "time": ["grey day", "autumn morning"]},
    "snowy": {"adj": ["snowy", "frosty"], "noun": ["snow", "snowfall"], "time": ["winter day", "cold morning"]},
    "night": {"adj": ["starry", "moonlit"], "noun": ["stars", "moonlight"], "time": ["night", "late evening"]},
}

# Tweet skeletons shared by all scenes, plus a few scene-specific ones. Each asserts its scene through
# {adj} / {noun} (often twice, e.g. as a hashtag) and keeps the filler short: in a short text the scene
# words dominate, which lets students trained from scratch find them quickly. Sentiment and filler are
# drawn independently of the label.
TWEET_TEMPLATES: list[str] = [
    "what a {lovely} {adj} {time} {tail}",
    "love this {noun} #{adj}",
    "{user} perfect {adj} weather {tail}",
    "so {happy} about the {noun} #{noun}",
    "nothing beats a {adj} {time} {tag}",
    "{user} look at that {noun} {tail}",
    "another {lovely} {adj} {time} #{noun}",
    "woke up to {noun} , so {happy} {tag}",
]
SCENE_TWEET_TEMPLATES: dict[str, list[str]] = {
    "sunny": ["{noun} and ice cream #{adj}", "{user} sunglasses on , {adj} skies {tail}"],
    "rainy": ["forgot my umbrella in the {noun} {tail}", "{user} {noun} on the window #{adj}"],
    "snowy": ["building a snowman in the {noun} {tail}", "let it snow #{adj} {tag}"],
    "night": ["just me and the {noun} #{adj}", "{user} a calm {adj} {time} {tail}"],
}
TWEET_SLOTS: dict[str, list[str]] = {
    "lovely": ["lovely", "beautiful", "gorgeous", "great", "perfect"],
    "happy": ["happy", "thrilled", "excited", "glad"],
    "user": ["<user>", "hey <user>"],
    "tail": ["", "!", "!!", ":)", "lol"],
    "tag": ["", "#blessed", "#mood", "#nofilter"],
}

CAPTION_TEMPLATES: list[str] = [
    "a photo of a {adj} {place} with {detail}",
    "a {adj} {time} over the {place}",
    "{noun} over a {place} with {detail}",
    "a picture of {detail} on a {adj} {time}",
]
CAPTION_DETAILS: dict[str, list[str]] = {
    "sunny": ["a yellow sun", "a blue sky", "bright sunshine"],
    "rainy": ["heavy clouds", "falling rain", "a grey sky"],
    "snowy": ["falling snow", "white ground", "a white sky"],
    "night": ["a pale moon", "a black sky", "tiny stars"],
}
CAPTION_PLACES: list[str] = ["street", "park", "field", "hill", "town"]

_TOKEN = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def basic_split(text: str) -> list[str]:
    """Lowercase and split off every punctuation character, as BERT's basic tokenizer does for ASCII."""
    return _TOKEN.findall(text.lower())


def _literals(template: str) -> str:
    return " ".join(literal for literal, *_ in string.Formatter().parse(template))


def _tweet_fragments() -> list[str]:
    """The fixed words of every tweet template and the words of every non-scene slot."""
    fragments = [_literals(t) for t in TWEET_TEMPLATES] + [_literals(t) for ts in SCENE_TWEET_TEMPLATES.values() for t in ts]
    return fragments + [w for words in TWEET_SLOTS.values() for w in words]


def demo_vocabulary() -> list[str]:
    """Every word piece a demo tweet or caption can contain, sorted: the vocabulary of a word-level tokenizer."""
    fragments = _tweet_fragments() + [_literals(t) for t in CAPTION_TEMPLATES]
    fragments += [w for scene in SCENE_WORDS.values() for words in scene.values() for w in words]
    fragments += [w for words in CAPTION_DETAILS.values() for w in words] + CAPTION_PLACES
    return sorted({token for fragment in fragments for token in basic_split(fragment)})


def filler_words() -> list[str]:
    """Tweet words that name no scene (sentiment, placeholders, punctuation, hashtags): noise for a scene reader."""
    scene = {t for kinds in SCENE_WORDS.values() for words in kinds.values() for w in words for t in basic_split(w)}
    return sorted({t for fragment in _tweet_fragments() for t in basic_split(fragment)} - scene)


def scene_of(text: str) -> str:
    """The one scene a demo tweet or caption asserts, read from its scene words (each belongs to one scene)."""
    words = set(basic_split(text))
    found = [scene for scene, kinds in SCENE_WORDS.items() if words & {w for w in kinds["adj"] + kinds["noun"]}]
    if len(found) != 1:
        raise ValueError(f"text names {len(found)} scenes ({found}), expected exactly one: {text!r}")
    return found[0]


def _fill(template: str, rng: np.random.Generator, choices: dict[str, list[str]]) -> str:
    """Fill each {slot} independently (the same slot twice may get different words); squeeze spaces."""
    filled = "".join(
        literal + (str(rng.choice(choices[field])) if field is not None else "")
        for literal, field, *_ in string.Formatter().parse(template)
    )
    return " ".join(filled.split())


def tweet_templates(scene: str) -> list[str]:
    return TWEET_TEMPLATES + SCENE_TWEET_TEMPLATES[scene]


def make_tweet(scene: str, template: str, rng: np.random.Generator) -> str:
    return _fill(template, rng, {**TWEET_SLOTS, **SCENE_WORDS[scene]})


def make_caption(scene: str, rng: np.random.Generator) -> str:
    template = str(rng.choice(CAPTION_TEMPLATES))
    choices = {**SCENE_WORDS[scene], "detail": CAPTION_DETAILS[scene], "place": CAPTION_PLACES}
    return _fill(template, rng, choices)


# ---------------------------------------------------------------- images

_PALETTE = {  # sky, ground, (feature colour)
    "sunny": ((80, 155, 250), (70, 175, 45), (255, 225, 40)),
    "rainy": ((120, 118, 112), (105, 85, 60), (150, 175, 235)),
    "snowy": ((195, 200, 212), (238, 240, 246), (255, 255, 255)),
    "night": ((20, 25, 62), (22, 36, 28), (240, 235, 190)),
}


def _jitter(colour: tuple[int, ...], rng: np.random.Generator, amount: int = 18) -> tuple[int, ...]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


def render_scene(scene: str, rng: np.random.Generator, size: int = 32) -> Image.Image:
    """One scene, with nuisance variation (horizon, positions, sizes, a random object, colour jitter,
    pixel noise) so that a model has to learn the scene type rather than memorise pixels."""
    sky, ground, feature = (_jitter(c, rng) for c in _PALETTE[scene])
    img = Image.new("RGB", (size, size), sky)
    draw = ImageDraw.Draw(img)
    s = size / 32
    horizon = int(size * rng.uniform(0.55, 0.78))
    draw.rectangle([0, horizon, size, size], fill=ground)

    # A house or a tree of random colour in every scene type: present, but uninformative.
    x = rng.uniform(0.05, 0.75) * size
    w = rng.uniform(4, 8) * s
    obj = _jitter((150, 90, 60), rng, 60)
    if rng.random() < 0.5:
        draw.rectangle([x, horizon - w, x + w, horizon + s], fill=obj)
        draw.polygon([(x - s, horizon - w), (x + w / 2, horizon - 1.7 * w), (x + w + s, horizon - w)], fill=_jitter(obj, rng, 50))
    else:
        draw.rectangle([x + w / 2 - s, horizon - w / 2, x + w / 2 + s, horizon + s], fill=(90, 60, 40))
        draw.ellipse([x, horizon - 1.5 * w, x + w, horizon - w / 2], fill=_jitter((40, 110, 50), rng, 30))

    if scene in ("sunny", "night"):  # sun or moon
        r = rng.uniform(2.5, 4.5) * s
        cx, cy = rng.uniform(r, size - r), rng.uniform(r, max(r + 1, horizon - 2 * r))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=feature)
    if scene == "night":  # stars
        for _ in range(rng.integers(4, 10)):
            px, py = rng.uniform(0, size), rng.uniform(0, horizon - 2)
            draw.point((px, py), fill=(255, 255, 255))
    if scene == "rainy":  # clouds, then slanted streaks
        for _ in range(rng.integers(1, 4)):
            cx, cy, cw = rng.uniform(0, size), rng.uniform(0, 0.3 * size), rng.uniform(6, 12) * s
            draw.ellipse([cx - cw, cy - cw / 3, cx + cw, cy + cw / 3], fill=_jitter((80, 82, 90), rng, 12))
        for _ in range(rng.integers(12, 22)):
            px, py, ln = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(2, 4) * s
            draw.line([(px, py), (px - ln / 2, py + ln)], fill=feature, width=max(1, int(s)))
    if scene == "snowy":  # flakes
        for _ in range(rng.integers(15, 30)):
            px, py, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(0.4, 1.0) * s
            draw.ellipse([px - r, py - r, px + r, py + r], fill=feature)

    pixels = np.asarray(img, dtype=np.float32) * rng.uniform(0.85, 1.15)
    pixels += rng.normal(0.0, 6.0, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


# ---------------------------------------------------------------- records


def _pair_plan(n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """(text scene, image scene) index pairs, built from shuffled blocks of 24 that are balanced exactly:
    per text scene and per image scene, 3 matching and 3 mismatching pairs (one per other scene)."""
    k = len(SCENES)
    block = [(t, t) for t in range(k) for _ in range(k - 1)] + [(t, v) for t in range(k) for v in range(k) if v != t]
    plan: list[tuple[int, int]] = []
    while len(plan) < n:
        plan += [block[i] for i in rng.permutation(len(block))]
    return plan[:n]


def _split_records(split: str, n: int, rng: np.random.Generator, image_dir: Path, image_size: int) -> list[dict]:
    records = []
    # Templates are dealt round-robin per (text scene, label), so each template sits equally on both labels.
    decks: dict[tuple[str, str], list[str]] = {}
    for i, (t, v) in enumerate(_pair_plan(n, rng)):
        text_scene, image_scene = SCENES[t], SCENES[v]
        label = LABELS[int(t != v)]
        deck = decks.get((text_scene, label))
        if not deck:
            templates = tweet_templates(text_scene)
            deck = decks[(text_scene, label)] = [templates[j] for j in rng.permutation(len(templates))]
        template = deck.pop()
        name = f"{split}-{i:05d}"
        render_scene(image_scene, rng, image_size).save(image_dir / f"{name}.png")
        records.append(
            {
                "id": name,
                "text": make_tweet(text_scene, template, rng),
                "image": f"images/{name}.png",
                "label": label,
                "caption": make_caption(image_scene, rng),
                "text_scene": text_scene,
                "image_scene": image_scene,
            }
        )
    return records


def generate_world(
    out_dir: str | Path, n_train: int, n_dev: int, n_test: int, seed: int = 0, image_size: int = 32
) -> dict[str, Path]:
    """Write ``{train,dev,test}.jsonl`` (+ PNGs under ``images/``) into ``out_dir``; return the split paths.

    Deterministic for a given seed and sizes. Records carry ``text_scene`` / ``image_scene`` besides the
    custom-format fields, for analysis; readers ignore them.
    """
    out_dir = Path(out_dir)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for index, (split, n) in enumerate(zip(SPLITS, (n_train, n_dev, n_test))):
        rng = np.random.default_rng([seed, index])
        records = _split_records(split, n, rng, image_dir, image_size)
        path = paths[split] = out_dir / f"{split}.jsonl"
        with path.open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
    return paths


__all__ = ["LABELS", "SCENES", "basic_split", "demo_vocabulary", "generate_world", "filler_words", "render_scene", "scene_of"]
