"""Records -> tensors: tokenisation, image decoding/resizing, normalisation, batching.

Images are decoded and resized once into uint8 (3, H, W) arrays (cacheable, 4x smaller than floats) and
normalised per batch, which gives the same pixels as the Hugging Face image processor they come from.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import PIL
import torch
import transformers
from PIL import Image

from clfa.data.records import DataError, Record


class ImageTransform:
    """Wraps a Hugging Face image processor: ``load`` decodes+resizes (+crops) to uint8, ``normalize`` finishes."""

    def __init__(self, image_processor):
        self.processor = image_processor
        self.rescale_factor = float(getattr(image_processor, "rescale_factor", 1 / 255))
        self.mean = torch.tensor(image_processor.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(image_processor.image_std, dtype=torch.float32).view(1, 3, 1, 1)
        self._stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self.size = self._output_size()

    def _output_size(self) -> tuple[int, int]:
        probe = Image.new("RGB", (97, 61))
        return tuple(self.load_image(probe).shape[1:])

    def fingerprint(self) -> str:
        """A short digest of every setting that changes the uint8 pixels, to key on-disk caches."""
        settings = {k: v for k, v in self.processor.to_dict().items() if k not in ("image_mean", "image_std", "rescale_factor")}
        # A new Pillow or transformers may resize differently: their versions are part of the key.
        settings["versions"] = [PIL.__version__, transformers.__version__]
        blob = json.dumps(settings, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def load_image(self, image: Image.Image) -> np.ndarray:
        pixels = self.processor(
            images=image.convert("RGB"), do_rescale=False, do_normalize=False, return_tensors="np"
        )["pixel_values"][0]
        return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)

    def load(self, path: str | Path, source: str = "") -> np.ndarray:
        """Decode and resize one image file to uint8 (3, H, W); a bad file raises DataError naming it."""
        try:
            with Image.open(path) as img:
                return self.load_image(img)
        except (OSError, ValueError, SyntaxError) as exc:
            where = f" (record {source})" if source else ""
            raise DataError(f"unreadable image file {path}{where}: {exc}", file=path) from exc

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> float pixel_values, exactly as the image processor would; works on any device
        (mean and std are copied to a device once, not at every batch)."""
        if pixels.device not in self._stats:
            self._stats[pixels.device] = (self.mean.to(pixels.device), self.std.to(pixels.device))
        mean, std = self._stats[pixels.device]
        return (pixels.float() * self.rescale_factor - mean) / std

def tokenize(tokenizer, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """Pad every text to ``max_length``: static shapes let compiled kernels and CUDA graphs be reused."""
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


class CLFADataset(torch.utils.data.Dataset):
    """Tokenised texts, uint8 images (from an in-memory/memory-mapped array, or decoded on demand),
    labels and, for training, the cached teacher embeddings of each record."""

    def __init__(
        self,
        records: list[Record],
        tokenizer,
        transform: ImageTransform,
        max_length: int,
        label2id: dict[str, int] | None = None,
        images: np.ndarray | None = None,
        teacher_embeds: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        self.records = records
        self.transform = transform
        self.images = images
        self.encoded = tokenize(tokenizer, [r.text for r in records], max_length) if records else None
        self.labels = None
        if label2id is not None and records and all(r.label is not None for r in records):
            self.labels = torch.tensor([label2id[r.label] for r in records])
        self.teacher_embeds = teacher_embeds
        if images is not None and len(images) != len(records):
            raise ValueError(f"{len(images)} cached images for {len(records)} records")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        record = self.records[i]
        pixels = self.images[i] if self.images is not None else self.transform.load(record.image, record.source)
        item = {
            "input_ids": self.encoded["input_ids"][i],
            "attention_mask": self.encoded["attention_mask"][i],
            "pixels": torch.from_numpy(np.array(pixels)),  # a copy: cached arrays are read-only memory maps
        }
        if self.labels is not None:
            item["labels"] = self.labels[i]
        if self.teacher_embeds is not None:
            item["teacher_text_embeds"] = self.teacher_embeds[0][i]
            item["teacher_image_embeds"] = self.teacher_embeds[1][i]
        return item


class Collator:
    """Stacks items and turns uint8 pixels into normalised ``pixel_values``."""

    def __init__(self, transform: ImageTransform):
        self.transform = transform

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        batch = {key: torch.stack([item[key] for item in items]) for key in items[0]}
        batch["pixel_values"] = self.transform.normalize(batch.pop("pixels"))
        return batch
