"""Prediction throughput through :class:`clfa.predict.Predictor`, at batch 1 and batch 64, on CPU and (when there
is one) GPU.

batch 1: ``Predictor.predict(text, image)`` one pair at a time, from a 500x400 PIL image and a raw text, so the
    figure includes tokenisation and resizing: the latency a service answering single requests sees.
batch N: ``Predictor.run(records, batch_size=N, images=...)`` over preprocessed uint8 images (as from the image
    cache): the throughput of bulk prediction.
``--cold-start``: what ``clfa predict --text ... --image ...`` waits for before its answer. The model is saved with its
    tokenizer and image processor, and a new Python process times importing ``clfa.predict``, loading the folder
    (``Predictor.from_pretrained``) and its first two pairs.

Each device computes in the ``--precision`` asked for (default ``auto``, as ``clfa predict``: bf16 autocast on GPUs
with bf16 arithmetic, fp32 elsewhere). The model is randomly initialised at ``--size paper`` (BERT-base + ViT-B/32 +
3 cross-attention layers) or ``tiny``; the tokenizer is a BERT WordPiece tokenizer over a synthetic vocabulary.
Nothing is downloaded.

    python benchmarks/predict_throughput.py --size paper
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from arguments import check_attention_backends, check_devices, cuda_available  # noqa: E402
from clfa.options import PRECISIONS, positive_int, whole_number  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("paper", "tiny"), default="paper")
    # The GPU first: its figure is the one a time limit must not cut off.
    parser.add_argument("--devices", nargs="+", choices=("cpu", "cuda"), help="(default: cuda, where there is one, and cpu)")
    parser.add_argument("--batch-sizes", type=positive_int, nargs="+", default=[1, 64])
    parser.add_argument("--batches", type=positive_int, default=4, help="timed batches per batch size (batch 1: 4x as many pairs)")
    parser.add_argument("--warmup", type=whole_number, default=2, help="untimed batches first")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help="as clfa predict's")
    parser.add_argument("--attention-backends", help="as clfa predict's (default: PyTorch's choice)")
    parser.add_argument("--threads", type=positive_int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--cold-start", action="store_true", help="also time a new process's import, load and first pairs")
    parser.add_argument("--json", action="store_true", help="end with one JSON object on the last line")
    args = parser.parse_args(argv)
    check_attention_backends(parser, args.attention_backends)
    if args.devices is None:
        args.devices = ["cuda", "cpu"] if cuda_available() else ["cpu"]
    check_devices(parser, *args.devices, flag="--devices")
    return args


# The command line is read before the imports below, which take seconds: --help and a refused option answer at once.
ARGS = parse_args() if __name__ == "__main__" else None

import subprocess  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import BertTokenizerFast, ViTImageProcessorPil  # noqa: E402

from clfa.data.records import Record  # noqa: E402
from clfa.predict import Predictor  # noqa: E402
from train_throughput import build_model, machine, size_configs, sync  # noqa: E402


def synthetic_tokenizer(words: int = 2000) -> tuple[BertTokenizerFast, list[str]]:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *(f"w{i}" for i in range(words))]
    return BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True), vocab[5:]


def measure(predictor: Predictor, words: list[str], device: torch.device, batch_size: int, count: int, warmup: int, seed: int = 0) -> float:
    """Predictions per second."""
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(words, size=int(rng.integers(5, 40)))) for _ in range(count)]
    if batch_size == 1:
        image = Image.fromarray(rng.integers(0, 256, size=(400, 500, 3), dtype=np.uint8))
        for text in texts[:warmup]:
            predictor.predict(text, image)
        sync(device)
        start = time.perf_counter()
        for text in texts:
            predictor.predict(text, image)
        sync(device)
        return count / (time.perf_counter() - start)
    height, width = predictor.transform.size
    pixels = rng.integers(0, 256, size=(count, 3, height, width), dtype=np.uint8)
    records = [Record(id=str(i), text=text, image=Path(f"synthetic/{i}.jpg")) for i, text in enumerate(texts)]
    warm = warmup * batch_size
    predictor.run(records[:warm], batch_size=batch_size, progress=False, images=pixels[:warm])
    sync(device)
    start = time.perf_counter()
    predictor.run(records, batch_size=batch_size, progress=False, images=pixels)
    sync(device)
    return count / (time.perf_counter() - start)


# Run in a new process: in this one, torch, transformers and clfa are imported already.
COLD_START = """
import json, sys, time
start = time.perf_counter()
from clfa.predict import Predictor
imported = time.perf_counter()
import numpy as np
import torch
from PIL import Image

folder, device, precision, backends, threads = sys.argv[1:]
if threads:
    torch.set_num_threads(int(threads))
predictor = Predictor.from_pretrained(folder, device=device, precision=precision, attention_backends=backends or None)
loaded = time.perf_counter()
image = Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(400, 500, 3), dtype=np.uint8))
predictor.predict("w1 w2 w3 w4", image)  # the probabilities come back to the host: the device is done
first = time.perf_counter()
predictor.predict("w5 w6 w7 w8", image)
second = time.perf_counter()
print(json.dumps({"import_s": imported - start, "load_s": loaded - imported, "first_pair_s": first - loaded,
                  "second_pair_s": second - first}))
"""


def cold_start(predictor: Predictor, device: str, args: argparse.Namespace) -> dict[str, float]:
    """Seconds a new process takes to import clfa.predict, load the predictor's model from a folder and answer its first
    and second pair."""
    transformers.logging.disable_progress_bar()  # the bar save_pretrained draws
    with tempfile.TemporaryDirectory() as folder:
        predictor.save_pretrained(folder)
        command = [sys.executable, "-c", COLD_START, folder, device, args.precision, args.attention_backends or "",
                   str(args.threads or "")]
        run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode:
        raise RuntimeError(f"the cold-start process failed:\n{run.stderr[-3000:]}")
    return {key: round(value, 3) for key, value in json.loads(run.stdout.splitlines()[-1]).items()}


def main(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)

    configs = size_configs(args.size)
    image_size = configs["image_size"]
    tokenizer, words = synthetic_tokenizer(min(2000, configs["vocab"] - 5))
    processor = ViTImageProcessorPil(size={"height": image_size, "width": image_size})
    results, cold_starts = [], []
    for device_name in args.devices:
        device = torch.device(device_name)
        predictor = Predictor(build_model(configs, seed=0), tokenizer, processor, device=device, precision=args.precision,
                              attention_backends=args.attention_backends)
        for batch_size in args.batch_sizes:
            count = args.batches * (4 if batch_size == 1 else batch_size)
            rate = measure(predictor, words, device, batch_size, count, args.warmup)
            result = {"size": args.size, "device": device_name, "machine": machine(device), "batch_size": batch_size,
                      "precision": predictor.precision, "attention_backends": args.attention_backends,
                      "predictions_per_s": round(rate, 2), "ms_per_batch": round(1000 * batch_size / rate, 2)}
            results.append(result)
            print(f"{device_name:>4} batch {batch_size:<3}: {rate:9.1f} predictions/s, {result['ms_per_batch']:8.1f} ms/batch  "
                  f"[{args.size}, {predictor.precision}, {result['machine']}]", flush=True)
        if args.cold_start:
            start = cold_start(predictor, device_name, args)
            cold_starts.append({"size": args.size, "device": device_name, "machine": machine(device), **start})
            print(f"{device_name:>4} cold start: import {start['import_s']:.2f} s, load {start['load_s']:.2f} s, first pair "
                  f"{start['first_pair_s']:.3f} s, second {start['second_pair_s']:.3f} s  [{args.size}]", flush=True)
        del predictor
    if args.json:
        print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "runs": results,
                          **({"cold_starts": cold_starts} if args.cold_start else {})}))


if __name__ == "__main__":
    main(ARGS)
