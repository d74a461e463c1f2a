"""The frozen CLIP teacher: its projected text and image embeddings, computed once per dataset and cached.

The teacher never runs inside the training loop. Its embeddings are keyed on everything that could change
them (teacher weights and config, its preprocessing, the text length, each record's id, text and image file, and
the kind of device with its float32 math settings), so another teacher, dataset, split, preprocessing or device
never reuses a stale cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import operator
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModel, AutoTokenizer

from clfa.data.processing import ImageTransform, load_image_processor
from clfa.data.records import Record
from clfa.errors import OptionError
from clfa.files import remove_abandoned, replacing, shared_as_umask_allows

logger = logging.getLogger(__name__)


def teacher_projection_dim(name_or_path: str) -> int:
    """Width of the teacher's joint embedding space: the width the mapping nets project into."""
    config = AutoConfig.from_pretrained(name_or_path)
    if not hasattr(config, "projection_dim"):
        raise OptionError(f"teacher '{name_or_path}' has no projection_dim: it must be a CLIP-style dual encoder")
    return int(config.projection_dim)


def _weights_stamp(name_or_path: str) -> list:
    """Size and mtime of a local teacher's weight files: retraining a local teacher changes the key."""
    path = Path(name_or_path)
    if not path.is_dir():
        return []
    files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".json"))
    return [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]


def _record_stamp(record: Record) -> tuple:
    try:
        stat = record.image.stat()
        return record.id, record.text, str(record.image), stat.st_size, stat.st_mtime_ns
    except OSError:
        return record.id, record.text, str(record.image), -1, -1


def _device(device: str | torch.device | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


# The float32 operators each kind of device has a precision setting for: on a GPU cuDNN runs convolutions, such as
# the teacher's patch embedding, in TF32 by default; on a CPU oneDNN may run them in bf16.
_FP32_OPERATORS = {"cuda": ("cuda.matmul", "cudnn.conv"), "cpu": ("mkldnn.matmul", "mkldnn.conv")}


def _fp32_math(device: torch.device) -> dict:
    """How ``device`` runs float32 products and convolutions: the same inputs give other embeddings on another kind of
    device, or with TF32 (or bf16) allowed."""
    backends = torch.backends
    if not hasattr(backends, "fp32_precision"):  # an older torch, without these settings
        return {"matmul": torch.get_float32_matmul_precision(), "cudnn_tf32": backends.cudnn.allow_tf32}

    # Read through the newer settings: the legacy allow_tf32 getters raise once these have been set.
    def setting(path: str) -> str:
        return getattr(operator.attrgetter(path)(backends) if path else backends, "fp32_precision", "none")

    # Each as it takes effect: "none" defers to the backend's setting, then to the global one, whose "none" is IEEE.
    return {name: next((value for value in map(setting, (name, name.split(".")[0], "")) if value != "none"), "ieee")
            for name in _FP32_OPERATORS.get(device.type, ())}


def cache_key(records: list[Record], teacher: str, max_length: int, device: str | torch.device | None = None) -> str:
    """The cache's name for the embeddings of ``records`` computed on ``device`` (default: the GPU when there is one)."""
    device = _device(device)
    config = AutoConfig.from_pretrained(teacher)
    image_processor = load_image_processor(teacher)
    digest = hashlib.sha256()
    header = {
        "teacher": str(teacher),
        "config": config.to_json_string(use_diff=False),
        "weights": _weights_stamp(teacher),
        "image_processor": image_processor.to_json_string(),
        "image_processor_class": type(image_processor).__name__,  # the backend, which the JSON does not name
        "max_length": max_length,
        "dtype": "float32",  # what it computes in: an fp16 checkpoint once computed in fp16, under the same key
        "device": device.type,
        "fp32_math": _fp32_math(device),
    }
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    for record in records:
        digest.update(json.dumps(_record_stamp(record)).encode())
    return digest.hexdigest()[:24]


@torch.no_grad()
def compute_teacher_embeddings(
    records: list[Record],
    teacher: str,
    batch_size: int = 64,
    max_length: int = 77,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Projected (text, image) embeddings of ``records`` from the teacher, each (N, projection_dim), float32."""
    device = _device(device)
    # fp32 whatever the checkpoint stores (transformers 5 would build it in that dtype): CLIP checkpoints are often
    # fp16, and the embeddings the students align to are computed once, at full precision.
    model = AutoModel.from_pretrained(teacher, dtype=torch.float32).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    transform = ImageTransform(load_image_processor(teacher))
    max_length = min(max_length, getattr(model.config.text_config, "max_position_embeddings", max_length))
    texts, images = [], []
    for start in tqdm(range(0, len(records), batch_size), desc="teacher embeddings", disable=not progress, unit="batch"):
        batch = records[start : start + batch_size]
        enc = tokenizer([r.text for r in batch], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        pixels = torch.stack([torch.from_numpy(transform.load(r.image, r.source)) for r in batch])
        text_out = model.get_text_features(input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device))
        image_out = model.get_image_features(pixel_values=transform.normalize(pixels).to(device))
        texts.append(projected_embedding(text_out).float().cpu())
        images.append(projected_embedding(image_out).float().cpu())
    return torch.cat(texts), torch.cat(images)


def projected_embedding(output) -> torch.Tensor:
    """The projected embedding from ``get_text_features`` / ``get_image_features``: transformers 5 returns a
    ModelOutput whose pooler_output holds it, 4.x the tensor itself."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _whole_cache(path: Path, count: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The (text, image) embeddings in ``path`` if it holds ``count`` of each, else None. The tensors read to check
    map the file and are let go before returning: Windows cannot replace a file that is mapped, as a new cache then would."""
    try:
        tensors = load_file(path)
        if tensors["text"].shape[0] == tensors["image"].shape[0] == count:
            return tensors["text"], tensors["image"]
    except (OSError, SafetensorError, KeyError):  # cut short (a copy stopped half-way, a disk that failed): made anew
        pass
    return None


def teacher_embeddings(
    records: list[Record],
    teacher: str,
    cache_dir: str | Path,
    batch_size: int = 64,
    max_length: int = 77,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached :func:`compute_teacher_embeddings`: computed on the first call, read from disk afterwards."""
    cache_dir, device = Path(cache_dir), _device(device)
    path = cache_dir / f"teacher-{cache_key(records, teacher, max_length, device)}.safetensors"
    if path.is_file():
        if (cached := _whole_cache(path, len(records))) is not None:
            return cached
        logger.warning("%s is not a whole teacher-embedding cache: computing it again", path)
    text, image = compute_teacher_embeddings(records, teacher, batch_size, max_length, device, progress)
    cache_dir.mkdir(parents=True, exist_ok=True)
    remove_abandoned(cache_dir, ".teacher-*.tmp")
    # A name of this writer's own (the main processes of several nodes may fill one shared cache at once), renamed
    # once whole: an interrupted run never leaves a cache that looks complete.
    with replacing(path) as tmp:
        save_file({"text": text.contiguous(), "image": image.contiguous()}, str(tmp), metadata={"teacher": str(teacher), "records": str(len(records))})
        shared_as_umask_allows(tmp)
    return text, image
