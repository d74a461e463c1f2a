"""Images per second into training batches: decoding JPEG files every epoch against reading the preprocessing cache.

Both go through the real path: :class:`clfa.data.processing.CLFADataset` + a torch DataLoader + a collator. The
cache is :func:`clfa.data.image_cache.cached_images` (decoded and resized once into a memory-mapped uint8 array).
Three ways of reading the cache are timed: whole uint8 batches (``CLFADataset.__getitems__`` and
:func:`clfa.data.processing.stack`: what training and prediction use, normalised later on the device), the same
one sample at a time (the DataLoader's default, through a ``ConcatDataset`` that hides ``__getitems__``), and
float batches normalised on the host (:class:`clfa.data.processing.Collator`). Synthetic JPEGs (default 500x400, like tweet photos) are written to a temporary folder; the
image processor is the paper's ViT-B/32 one (resize to 224x224). Files and cache are in the page cache when read,
as they are from the second epoch on: each figure is timed after an untimed epoch.

    python benchmarks/data_throughput.py --images 2000 --workers 0 2
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from clfa.options import positive_int, whole_number


def image_size(text: str) -> tuple[int, int]:
    """argparse type: WIDTHxHEIGHT in pixels."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, for example 500x400, got {text!r}") from None
    if min(width, height) < 1:
        raise argparse.ArgumentTypeError(f"each side must be at least 1 pixel, got {text!r}")
    return width, height


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=positive_int, default=2000, help="synthetic JPEG files")
    parser.add_argument("--image-size", type=image_size, default="500x400", help="WIDTHxHEIGHT of the JPEG files")
    parser.add_argument("--workers", type=whole_number, nargs="+", default=[0, os.cpu_count() or 1], help="DataLoader worker counts to try")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--cache-epochs", type=positive_int, default=3, help="passes over the cache (it is fast; more passes steady the figure)")
    parser.add_argument("--dir", help="where to write the JPEGs and the cache (default: a temporary folder)")
    parser.add_argument("--threads", type=positive_int, help="torch threads in the main process (loader workers use 1); on a shared machine 1 is steadier")
    parser.add_argument("--json", action="store_true", help="end with one JSON object on the last line")
    args = parser.parse_args(argv)
    if args.dir is not None and not Path(args.dir).is_dir():
        parser.error(f"--dir {args.dir}: no such folder")
    return args


# The command line is read before the imports below, which take seconds: --help and a refused option answer at once.
ARGS = parse_args() if __name__ == "__main__" else None

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import ViTImageProcessorPil  # noqa: E402

from clfa.data.image_cache import cached_images  # noqa: E402
from clfa.data.processing import CLFADataset, Collator, ImageTransform, stack  # noqa: E402
from clfa.data.records import Record  # noqa: E402


class ConstantTokenizer:
    """Texts do not matter here (they are tokenised once, when the dataset is built): fixed ids, no vocabulary."""

    def __call__(self, texts, max_length: int = 77, **_):
        ids = torch.ones(len(texts), max_length, dtype=torch.long)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def write_jpegs(folder: Path, count: int, width: int, height: int, seed: int = 0) -> list[Record]:
    """Photo-like JPEGs (smooth gradients plus noise, quality 90): noise alone would decode unrealistically slowly."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:height, 0:width]
    records = []
    for i in range(count):
        base = np.stack([(x * rng.uniform(0.2, 0.6) + y * rng.uniform(0.2, 0.6) + rng.uniform(0, 255)) % 256 for _ in range(3)], axis=-1)
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        path = folder / f"{i}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        records.append(Record(id=str(i), text="", image=path, label="a"))
    return records


def images_per_second(dataset: CLFADataset, collate, batch_size: int, workers: int, epochs: int = 1) -> float:
    """Images/s over ``epochs`` timed epochs, after one untimed epoch that starts the (persistent) workers. A whole
    one: an epoch left unfinished leaves batches in the workers' queues, which the next epoch's start waits for."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, collate_fn=collate,
                                         persistent_workers=workers > 0)
    for _ in loader:
        pass
    count, start = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            count += len(batch["input_ids"])
    return count / (time.perf_counter() - start)


def main(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    width, height = args.image_size

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        records = write_jpegs(root / "images", args.images, width, height)
        transform = ImageTransform(ViTImageProcessorPil(size={"height": 224, "width": 224}))
        tokenizer = ConstantTokenizer()
        start = time.perf_counter()
        cache = cached_images(records, transform, root / "cache", progress=False)
        build = len(records) / (time.perf_counter() - start)
        print(f"cache build (decode + resize once, {min(16, os.cpu_count() or 1)} threads): {build:,.0f} images/s", flush=True)

        results = {"machine": f"{os.cpu_count()} CPU cores", "threads": torch.get_num_threads(), "images": len(records), "image_size": f"{width}x{height}",
                   "batch_size": args.batch_size, "cache_build_images_per_s": round(build, 1), "runs": []}
        decoded = CLFADataset(records, tokenizer, transform, 77)
        cached = CLFADataset(records, tokenizer, transform, 77, images=cache)
        one_by_one = torch.utils.data.ConcatDataset([cached])
        for workers in args.workers:
            runs = {
                "decode JPEG every epoch": images_per_second(decoded, stack, args.batch_size, workers),
                "cache, whole batches (uint8)": images_per_second(cached, stack, args.batch_size, workers, args.cache_epochs),
                "cache, sample by sample (uint8)": images_per_second(one_by_one, stack, args.batch_size, workers, args.cache_epochs),
                "cache, float on the host": images_per_second(cached, Collator(transform), args.batch_size, workers, args.cache_epochs),
            }
            for name, rate in runs.items():
                print(f"workers={workers:<2} {name:<34} {rate:>9,.0f} images/s", flush=True)
                results["runs"].append({"workers": workers, "source": name, "images_per_s": round(rate, 1)})
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main(ARGS)
