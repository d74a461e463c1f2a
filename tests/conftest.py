"""Shared fixtures: tiny random-initialised students and teacher saved like hub checkpoints, and small datasets
in the custom format. Tiny models keep the real loading code (Auto classes from a directory) under test."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (BertConfig, BertModel, BertTokenizerFast, CLIPConfig, CLIPImageProcessor, CLIPModel, TrainerCallback, ViTConfig,
                          ViTImageProcessorPil, ViTModel)

from clfa import CLFAModel
from clfa.options import TrainOptions

# The models under test are tiny: intra-op threads add only hand-offs, and on a machine whose other cores are busy each
# hand-off waits for a descheduled thread (training tests ran ten times slower on 2 threads than on 1). Tests that
# need another count set it themselves; the processes tests start (scripts, spawned workers) read it from OMP_NUM_THREADS.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

WORDS = "a the what lovely sunny rainy day night great love this weather snow storm cat dog photo of sky".split()
IMAGE_SIZE = 16


def _write_tokenizer(path: Path) -> BertTokenizerFast:
    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)
    tokenizer.save_pretrained(path)
    return tokenizer


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, str]:
    """Directories holding a tiny BERT (+tokenizer), ViT (+image processor) and CLIP teacher."""
    root = tmp_path_factory.mktemp("models")
    # Seeded here: the fixture is built by whichever test needs it first, whatever the random state then.
    torch.manual_seed(0)
    tokenizer = _write_tokenizer(root / "bert")
    small = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    BertModel(BertConfig(vocab_size=len(tokenizer), max_position_embeddings=64, **small)).save_pretrained(root / "bert")
    ViTModel(ViTConfig(image_size=IMAGE_SIZE, patch_size=8, **small), add_pooling_layer=False).save_pretrained(root / "vit")
    ViTImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(root / "vit")
    _write_tokenizer(root / "clip")
    clip = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), max_position_embeddings=64, eos_token_id=tokenizer.sep_token_id, **small),
        vision_config=dict(image_size=IMAGE_SIZE, patch_size=8, **small),
        projection_dim=24,
    )
    CLIPModel(clip).save_pretrained(root / "clip")
    CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(root / "clip")
    return {"text": str(root / "bert"), "image": str(root / "vit"), "teacher": str(root / "clip")}


@pytest.fixture(scope="session")
def other_students(tiny_models, tmp_path_factory) -> dict[str, str]:
    """Tiny text students of other kinds than BERT, each with the tiny BERT's vocabulary: a T5 saved whole (encoder
    and decoder, as on the hub), CLIP's causal text tower, a tokenizer without a padding token and one that pads on
    the left."""
    from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast, T5Config, T5Model

    root = tmp_path_factory.mktemp("other_students")
    torch.manual_seed(0)
    bert = BertTokenizerFast.from_pretrained(tiny_models["text"])
    small = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    T5Model(T5Config(vocab_size=len(bert), d_model=32, d_kv=16, d_ff=64, num_layers=1, num_heads=2, decoder_start_token_id=0)
            ).save_pretrained(root / "t5")
    bert.save_pretrained(root / "t5")
    CLIPTextModel(CLIPTextConfig(vocab_size=len(bert), max_position_embeddings=64, eos_token_id=bert.sep_token_id, **small)
                  ).save_pretrained(root / "clip_text")
    bert.save_pretrained(root / "clip_text")
    for name in ("no_pad", "left_padded"):
        shutil.copytree(tiny_models["text"], root / name)
    PreTrainedTokenizerFast(tokenizer_object=bert.backend_tokenizer, unk_token="[UNK]").save_pretrained(root / "no_pad")
    BertTokenizerFast.from_pretrained(tiny_models["text"], padding_side="left").save_pretrained(root / "left_padded")
    return {name: str(root / name) for name in ("t5", "clip_text", "no_pad", "left_padded")}


# A CLFA model on the tiny students, with three classes as MVSA has, and a batch of inputs for it: the models of the
# tests of clfa.modeling, clfa.fusion and clfa.configuration.
LABELS = ["negative", "neutral", "positive"]


def make_model(tiny_models, **kwargs) -> CLFAModel:
    defaults = dict(align_dim=24, mapping_hidden_dim=40, fusion_heads=2, fusion_ffn_dim=48)
    return CLFAModel.from_encoders(tiny_models["text"], tiny_models["image"], labels=LABELS, **(defaults | kwargs))


def batch(b=4, t=10, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[0, 4:] = 0
    return {
        "input_ids": torch.randint(5, 20, (b, t), generator=g),
        "attention_mask": mask,
        "pixel_values": torch.randn(b, 3, size, size, generator=g),
        "labels": torch.tensor([0, 1, 2, 0][:b]),
        "teacher_text_embeds": torch.randn(b, 24, generator=g),
        "teacher_image_embeds": torch.randn(b, 24, generator=g),
    }


# The checks of work on a GPU other than the first one: cuda:1, in a process that never made it current.
two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")


def on_a_fresh_process(script: str) -> dict:
    """Runs ``script``, which leaves a dict in ``result``, in a new Python process, and returns that dict with
    ``contexts`` (whether each GPU holds a CUDA context of that process), ``reserved_on_first`` (bytes the process's
    allocator holds on GPU 0) and ``current`` (its current GPU) at the end. This process has contexts on every GPU
    its other tests used: a context where none should be is seen only in a process of its own."""
    import subprocess
    import sys

    import clfa

    ending = ("\nimport json, torch\n"
              "result['contexts'] = [torch._C._cuda_hasPrimaryContext(i) for i in range(torch.cuda.device_count())]\n"
              "result['reserved_on_first'] = torch.cuda.memory_reserved(0)\n"
              "result['current'] = torch.cuda.current_device()\n"
              "print(json.dumps(result))\n")
    paths = [str(Path(clfa.__file__).parents[1]), str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(paths)}
    run = subprocess.run([sys.executable, "-c", script + ending], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.splitlines()[-1])


def write_dataset(root: Path, sizes: dict[str, int], labels=("negative", "positive"), seed: int = 0) -> Path:
    """A learnable custom-format dataset: the label is the image's brightness, the text is noise."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    n = 0
    for split, size in sizes.items():
        with (root / f"{split}.jsonl").open("w") as f:
            for _ in range(size):
                label = int(rng.integers(len(labels)))
                base = 40 + 170 * label / max(1, len(labels) - 1)
                pixels = np.clip(rng.normal(base, 20, (IMAGE_SIZE, IMAGE_SIZE, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / "images" / f"{n}.png")
                text = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 8))))
                f.write(json.dumps({"id": str(n), "text": text, "image": f"images/{n}.png", "label": labels[label]}) + "\n")
                n += 1
    return root


def write_pairs(path: Path, images: list[str]) -> Path:
    """A file of labelled pairs, one for each image named, and the images, in the formats their suffixes say. The data
    checks verify PNG and JPEG without decoding them, and decode the others (WebP, GIF)."""
    lines = []
    for i, name in enumerate(images):
        if not (path.parent / name).exists():
            Image.fromarray(np.random.default_rng(i).integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(path.parent / name)
        lines.append(json.dumps({"id": str(i), "text": "what a lovely day", "image": name, "label": ("negative", "positive")[i % 2]}))
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    return write_dataset(tmp_path / "data", {"train": 48, "dev": 16, "test": 16})


@pytest.fixture(scope="session")
def train_throughput():
    """benchmarks/train_throughput.py as a module: its CLFA models at the paper's structure, synthetic data and the
    naive and fast training paths."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "train_throughput.py"
    spec = importlib.util.spec_from_file_location("train_throughput", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FusedAttentionKernels:
    """Counts the fused attention kernels that ran, by name, from the profiler's record of ATen operators (the math
    backend is ``_scaled_dot_product_attention_math``, matrix products, not a fused kernel). A dispatch mode would not
    do: under ``torch.inference_mode`` it sees only the ``scaled_dot_product_attention`` entry point."""

    def __enter__(self):
        self.profile = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
        self.profile.__enter__()
        return self

    def __exit__(self, *exc):
        self.profile.__exit__(*exc)
        self.calls = Counter({event.key: event.count for event in self.profile.key_averages()
                              if event.key.startswith("aten::_scaled_dot_product_") and "_math" not in event.key})


@pytest.fixture
def fused_attention_kernels():
    """``with fused_attention_kernels() as kernels:`` counts, in ``kernels.calls``, the fused attention kernels run."""
    return FusedAttentionKernels


class Decodes:
    """Counts, by file name, the images whose pixels PIL decodes: load() of an image it has already decoded is none."""

    def __init__(self, monkeypatch):
        from PIL import ImageFile

        self.counts, load = Counter(), ImageFile.ImageFile.load

        def counting(image):
            if image.tile:  # what is left to decode
                self.counts[Path(image.filename).name] += 1
            return load(image)

        monkeypatch.setattr(ImageFile.ImageFile, "load", counting)

    def taken(self) -> dict:
        counts = dict(self.counts)
        self.counts.clear()
        return counts


@pytest.fixture
def decodes(monkeypatch) -> Decodes:
    """The image decodings from here on, by file name: ``decodes.taken()`` gives those since it was last asked."""
    return Decodes(monkeypatch)


@pytest.fixture
def pixels_made(monkeypatch) -> Counter:
    """The image files this process makes into a model's pixels (decoded, turned upright and resized) from here on, by
    file name; a loader worker's are its own, not counted here."""
    from clfa.data.processing import ImageTransform

    counts, load_image = Counter(), ImageTransform.load_image

    def counting(transform, image):
        if name := getattr(image, "filename", ""):  # not the blank image a transform measures its output size with
            counts[Path(name).name] += 1
        return load_image(transform, image)

    monkeypatch.setattr(ImageTransform, "load_image", counting)
    return counts


@pytest.fixture
def broken_png(tmp_path) -> Path:
    """A PNG whose chunks all check out and whose pixels do not decompress: a cheap check passes it, decoding fails."""
    path = tmp_path / "broken_pixels.png"
    Image.effect_noise((64, 48), 60).convert("RGB").save(path)
    path.write_bytes(_zeroed_pixel_data(path.read_bytes()))
    return path


def _zeroed_pixel_data(png: bytes) -> bytes:
    """The PNG with its compressed pixel data zeroed and each chunk's checksum made right again: every chunk checks
    out, and the pixels do not decompress."""
    out, at = bytearray(png[:8]), 8
    while at < len(png):
        size = int.from_bytes(png[at:at + 4], "big")
        kind, body = png[at + 4:at + 8], png[at + 8:at + 8 + size]
        if kind == b"IDAT":
            body = bytes(size)
        out += size.to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
        at += 12 + size
    return bytes(out)


def tiny_options(tiny_models, tmp_path, **kwargs) -> TrainOptions:
    """Options that train the tiny models in seconds, with the run in ``tmp_path/run`` and its caches beside it."""
    base = dict(
        output_dir=str(tmp_path / "run"),
        text_model=tiny_models["text"],
        image_model=tiny_models["image"],
        teacher=tiny_models["teacher"],
        mapping_hidden_dim=32,
        fusion_layers=1,
        fusion_heads=2,
        fusion_ffn_dim=32,
        epochs=4,
        batch_size=8,
        learning_rate=1e-3,
        num_workers=0,
        cache_dir=str(tmp_path / "cache"),
        report_to="none",
        progress=False,
        logging_steps=5,
        # Layers this small, trained from scratch, learn reliably from any initialisation only with a wider one.
        initializer_range=0.1,
    )
    return TrainOptions(**(base | kwargs))


class Interrupt(TrainerCallback):
    """Stops a run as Ctrl-C would, right after its first checkpoint (or its ``saves``-th) is saved."""

    def __init__(self, saves: int = 1):
        self.saves = saves

    def on_save(self, args, state, control, **kwargs):
        self.saves -= 1
        if not self.saves:
            raise KeyboardInterrupt("simulated interruption after a checkpoint")
