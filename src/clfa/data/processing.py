"""Records -> tensors: tokenisation, image decoding/resizing, normalisation, batching.

Images are decoded and resized once into uint8 (3, H, W) arrays (cacheable, 4x smaller than floats) and
normalised per batch, which gives the same pixels as the Hugging Face image processor they come from.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import PIL
import torch
import transformers
from PIL import ExifTags, Image
from transformers import AutoImageProcessor

from clfa.data.image_files import open_image, quiet_metadata, why_unreadable
from clfa.data.records import DataError, Record, url_instead_of_file



def load_image_processor(path: str | Path):
    """The image processor saved at ``path``, always its Pillow version: with torchvision installed transformers would
    pick its torchvision version, which resizes differently, so that a model trained on one machine would see other
    pixels on another."""
    return AutoImageProcessor.from_pretrained(path, backend="pil")


class ImageTransform:
    """Wraps a Hugging Face image processor: ``load`` decodes+resizes (+crops) to uint8, ``normalize`` finishes."""

    def __init__(self, image_processor):
        self.processor = image_processor
        # As the processor itself does: a step it is set not to take is not taken.
        rescale = getattr(image_processor, "do_rescale", True)
        self.rescale_factor = float(getattr(image_processor, "rescale_factor", 1 / 255)) if rescale else 1.0
        normalize = getattr(image_processor, "do_normalize", True)
        self.mean = torch.tensor(image_processor.image_mean if normalize else [0.0] * 3, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(image_processor.image_std if normalize else [1.0] * 3, dtype=torch.float32).view(1, 3, 1, 1)
        self._stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self.size = self._output_size()

    def __getstate__(self) -> dict:
        # Loader workers are sent the transform pickled. The copies of mean and std on a GPU, which only the main
        # process uses, would set up CUDA in each worker, or fail where CUDA tensors cannot be shared (Windows).
        return self.__dict__ | {"_stats": {}}

    def _output_size(self) -> tuple[int, int]:
        probe = Image.new("RGB", (97, 61))
        return tuple(self.load_image(probe).shape[1:])

    def fingerprint(self) -> str:
        """A short digest of every setting that changes the uint8 pixels, to key on-disk caches."""
        settings = {k: v for k, v in self.processor.to_dict().items() if k not in ("image_mean", "image_std", "rescale_factor")}
        # A new Pillow or transformers may resize differently, and so may another backend (PIL or torchvision) of
        # the same settings, which to_dict names alike: the versions and the class are part of the key.
        settings["versions"] = [PIL.__version__, transformers.__version__]
        settings["class"] = type(self.processor).__name__
        # Cached before, they were clipped white, and then scaled without the transparent grey their tRNS names.
        settings["16-bit greys"] = "scaled to 8 bits, tRNS as alpha"
        # Cached before, an image was taken as stored, not turned as its EXIF orientation says, and its transparent
        # pixels kept the colour they held.
        settings["orientation and transparency"] = "EXIF orientation applied, transparency on white"
        blob = json.dumps(settings, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def load_image(self, image: Image.Image) -> np.ndarray:
        pixels = self.processor(
            images=_rgb(_eight_bit(_upright(image))), do_rescale=False, do_normalize=False, return_tensors="np"
        )["pixel_values"][0]
        return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)

    def load(self, path: str | Path, source: str = "", image: Image.Image | None = None) -> np.ndarray:
        """Decode and resize one image file to uint8 (3, H, W); a bad file raises DataError naming it. ``image``: the
        file as already opened, or decoded by a check, read instead of opening and decoding the file again."""
        where = f" (record {source})" if source else ""
        if problem := url_instead_of_file(path):
            raise DataError(problem + where)
        try:
            if image is not None:
                return self.load_image(image)
            with open_image(path) as img:
                return self.load_image(img)
        except FileNotFoundError:
            raise DataError(f"missing image file{where}", file=path) from None
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # the file names itself
            raise DataError(f"unreadable image file{where} ({why_unreadable(path, exc)})", file=path) from exc

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> float pixel_values, exactly as the image processor would; works on any device
        (mean and std are copied to a device once, not at every batch)."""
        if pixels.device not in self._stats:
            self._stats[pixels.device] = (self.mean.to(pixels.device), self.std.to(pixels.device))
        mean, std = self._stats[pixels.device]
        return (pixels.float() * self.rescale_factor - mean) / std


# How each EXIF orientation (2-8) turns a stored image upright: ImageOps.exif_transpose's table. exif_transpose itself
# also rewrites the image's EXIF without the tag, which fails on a malformed other tag; only the pixels are used here.
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}


def _upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says (a phone photo is often stored on its side), as transformers'
    load_image and a viewer show it; copied only then. EXIF that cannot be parsed leaves the image as stored, as a
    viewer shows it: its pixels are whole (the data checks decode them and pass the file), and refusing it here would
    stop a run at the batch that reads it."""
    # Decoded first: reading a PNG's EXIF may decode its pixels, and a failure there is the file's, not its EXIF's
    # (caught below, it would leave the pixels decoded so far to be used as the image).
    image.load()
    try:
        with quiet_metadata():
            turn = _UPRIGHT.get(image.getexif().get(ExifTags.Base.Orientation))
    except (SyntaxError, ValueError, OSError, struct.error):
        return image
    return image if turn is None else image.transpose(turn)


def _rgb(image: Image.Image) -> Image.Image:
    """The image on a white ground where it is transparent, as transformers' convert_to_rgb and a viewer show it:
    convert("RGB") drops the alpha and shows the colour transparent pixels happen to hold, most often black."""
    # Pillow 10.1's has_transparency_data also knows premultiplied alpha (RGBa) and a palette of RGBA colours.
    transparent = getattr(image, "has_transparency_data", "A" in image.getbands() or "transparency" in image.info)
    if not transparent:
        return image.convert("RGB")
    # Pillow converts premultiplied luminance (La) to LA alone; RGBa goes to RGBA directly.
    image = (image.convert("LA") if image.mode == "La" else image).convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image).convert("RGB")


def _eight_bit(image: Image.Image) -> Image.Image:
    """A 16-bit grey image on 8 bits, as convert("RGB") expects: it clips the values 0-65535 at 255, which turns all
    but the darkest 0.4% of the range white. Pillow opens a 16-bit PNG or TIFF as mode I;16, or (Pillow 10) as the
    32-bit mode I, whose file's raw mode still says 16 bits; an image of mode I already decoded is taken as 16-bit
    when its values pass 255 and stay within 16 bits."""
    if image.mode.startswith("I;16"):
        sixteen = True
    elif image.mode == "I":
        raw = " ".join(str(tile[3]) for tile in getattr(image, "tile", None) or ())
        values = image.getextrema()
        sixteen = "I;16" in raw or (not raw and 255 < values[1] <= 65535 and values[0] >= 0)
    else:
        return image
    if not sixteen:
        return image
    values = np.asarray(image).astype(np.int64)
    grey = Image.fromarray((values.clip(0, 65535) >> 8).astype(np.uint8), "L")
    # A PNG's tRNS names one 16-bit grey transparent: on 8 bits that value would name 256 greys, so it becomes an
    # alpha band instead, taken before the scaling.
    if isinstance(clear := image.info.get("transparency"), int):
        grey.putalpha(Image.fromarray(np.where(values == clear, 0, 255).astype(np.uint8), "L"))
    return grey


def tokenize(tokenizer, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """Pad every text to ``max_length``: static shapes let compiled kernels and CUDA graphs be reused."""
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


class BlankImages:
    """The images of records whose model never reads them (a text-only baseline): one black image for all, none
    decoded. The model's forward still takes pixels."""

    def __init__(self, count: int, size: tuple[int, int]):
        self.count, self.blank = count, np.zeros((3, *size), dtype=np.uint8)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> np.ndarray:
        if not -self.count <= index < self.count:
            raise IndexError(f"image {index} of {self.count}")
        return self.blank


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
        tokenize_per_batch: bool = False,
    ):
        """``tokenize_per_batch``: texts are tokenised as their batch is read, not all at once here (prediction over a
        file of any size: the tokens of all records, held from the start, grow with their number, and the first batch
        waits for all of them)."""
        self.records = records
        self.transform = transform
        self.images = images
        self.tokenizer, self.max_length = tokenizer, max_length
        self.encoded = tokenize(tokenizer, [r.text for r in records], max_length) if records and not tokenize_per_batch else None
        self.labels = None
        if label2id is not None and records and all(r.label is not None for r in records):
            self.labels = torch.tensor([label2id[r.label] for r in records])
        self.teacher_embeds = teacher_embeds
        if images is not None and len(images) != len(records):
            raise ValueError(f"{len(images)} cached images for {len(records)} records")

    def __len__(self) -> int:
        return len(self.records)

    def __getstate__(self) -> dict:
        # Loader workers started by spawn (macOS, Windows) are sent the dataset pickled, and a memory map pickles as
        # the array it maps: each worker would hold a copy of the whole image cache. Its file is sent instead.
        state = self.__dict__.copy()
        if _MappedFile.of(self.images):
            state["images"] = _MappedFile(self.images)
        return state

    def __setstate__(self, state: dict) -> None:
        if isinstance(state.get("images"), _MappedFile):
            state["images"] = state["images"].open()
        self.__dict__.update(state)

    def _pixels(self, i: int) -> torch.Tensor:
        record = self.records[i]
        pixels = self.images[i] if self.images is not None else self.transform.load(record.image, record.source)
        return torch.from_numpy(np.array(pixels))  # a copy: cached arrays are read-only memory maps

    def _tokens(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """input_ids and attention_mask of ``rows``; a row past the end raises IndexError."""
        if self.encoded is not None:
            return {key: self.encoded[key][rows] for key in ("input_ids", "attention_mask")}
        return tokenize(self.tokenizer, [self.records[i].text for i in rows.tolist()], self.max_length)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        tokens = self._tokens(torch.as_tensor([i], dtype=torch.long))
        item = {
            "input_ids": tokens["input_ids"][0],
            "attention_mask": tokens["attention_mask"][0],
            "pixels": self._pixels(i),
        }
        if self.labels is not None:
            item["labels"] = self.labels[i]
        if self.teacher_embeds is not None:
            item["teacher_text_embeds"] = self.teacher_embeds[0][i]
            item["teacher_image_embeds"] = self.teacher_embeds[1][i]
        return item

    def __getitems__(self, indices: list[int]) -> "SampleBatch":
        """The samples of a whole batch, which the DataLoader asks for instead of one sample at a time. From an image
        array (the cache) the pixels are one gather instead of a copy, a dict and five tensor views per sample: 3-4x
        more images/s at batch 256 in the main process, 1.3-1.8x through loader workers. The samples are those of
        ``__getitem__``, in the same order."""
        rows = torch.as_tensor(indices, dtype=torch.long)
        # Texts first: their indexing raises IndexError for a row past the end, before any pixels are gathered.
        batch = self._tokens(rows)
        if isinstance(self.images, np.ndarray):
            batch["pixels"] = _gather(self.images, rows.numpy())
        else:  # decoded on demand, or an image source numpy cannot index with an array
            batch["pixels"] = torch.stack([self._pixels(i) for i in indices])
        if self.labels is not None:
            batch["labels"] = self.labels[rows]
        if self.teacher_embeds is not None:
            batch["teacher_text_embeds"] = self.teacher_embeds[0][rows]
            batch["teacher_image_embeds"] = self.teacher_embeds[1][rows]
        return SampleBatch(batch)


class _MappedFile:
    """A memory-mapped array as its file and layout, to be mapped again in another process."""

    def __init__(self, array: np.memmap):
        self.filename, self.offset, self.mode = array.filename, array.offset, array.mode
        self.dtype, self.shape = array.dtype, array.shape
        self.order = "C" if array.flags.c_contiguous else "F"

    @staticmethod
    def of(array) -> bool:
        """Whether ``array`` is the whole array a file maps (a view of one has the file's offset, not its own), shared
        with the file: a copy-on-write map ("c") holds changes the file does not."""
        return (isinstance(array, np.memmap) and array.filename is not None and isinstance(array.base, mmap.mmap)
                and array.mode in ("r", "r+"))

    def open(self) -> np.memmap:
        return np.memmap(self.filename, dtype=self.dtype, mode=self.mode, offset=self.offset, shape=self.shape, order=self.order)


class SampleBatch(Sequence):
    """What :meth:`CLFADataset.__getitems__` returns: the sequence of samples the DataLoader's contract asks for
    (collate functions that index or iterate their samples, such as torch's and the Trainer's defaults, ``Subset``,
    ``StackDataset`` and pinned memory work on it), which also keeps the stacked tensors, so that :func:`stack` and
    :class:`Collator` take the batch as it is instead of splitting it into samples and stacking them again. Built
    from samples instead (as torch rebuilds a sequence it pins), it is a plain sequence of them."""

    def __init__(self, samples: dict[str, torch.Tensor] | Iterable[dict]):
        if isinstance(samples, dict):
            self.tensors, self._samples = samples, None
        else:
            self.tensors, self._samples = None, list(samples)

    def __len__(self) -> int:
        return len(self._samples) if self._samples is not None else len(self.tensors["input_ids"])

    def __getitem__(self, i):
        if self._samples is not None:
            return self._samples[i]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return {key: value[i] for key, value in self.tensors.items()}


def _gather(images: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    """``images[rows]`` as one tensor. In the main process numpy's fancy indexing is the fastest copy (about 4x faster
    at batch 256 than filling a fresh torch tensor, whose new pages all fault in). In a loader worker the batch must
    end in shared memory to reach the main process, so the rows are written there directly, as ``default_collate``
    does, instead of being copied a second time when the batch is sent."""
    if torch.utils.data.get_worker_info() is None:
        return torch.from_numpy(np.asarray(images[rows]))
    shape = (len(rows), *images.shape[1:])
    like = torch.from_numpy(np.zeros(0, dtype=images.dtype))
    out = like.new(like._typed_storage()._new_shared(int(np.prod(shape)), device=like.device)).resize_(shape)
    # The rows are in range (the caller indexed the texts with them); mode "wrap" keeps numpy from buffering `out`.
    np.take(images, rows, axis=0, out=out.numpy(), mode="wrap")
    return out


def stack(samples: Sequence[dict]) -> dict[str, torch.Tensor]:
    """The collate function of training and prediction: a batch as one dict of tensors, pixels left uint8. A
    :class:`SampleBatch` is already stacked; samples from a dataset that wraps :class:`CLFADataset` without passing
    ``__getitems__`` on (``ConcatDataset``) are stacked here."""
    if isinstance(samples, SampleBatch) and samples.tensors is not None:
        return dict(samples.tensors)
    return torch.utils.data.default_collate(list(samples))


class Collator:
    """Model-ready batches for a loop of your own: stacks and turns the uint8 pixels into normalised
    ``pixel_values`` on the host. Training and prediction use :func:`stack` and normalise on the device instead."""

    def __init__(self, transform: ImageTransform):
        self.transform = transform

    def __call__(self, samples: Sequence[dict]) -> dict[str, torch.Tensor]:
        batch = stack(samples)
        batch["pixel_values"] = self.transform.normalize(batch.pop("pixels"))
        return batch
