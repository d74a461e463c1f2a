"""Small trees in each published layout of the public datasets, written for the readers to read."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image


def jpeg(path: Path, color=(200, 30, 30), size=(16, 12)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format="JPEG")
    return path


def write_lines(path: Path, lines: list[str | bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join((ln if isinstance(ln, bytes) else ln.encode("utf-8")) + b"\n" for ln in lines))
    return path


def write_mmsd(root: Path, train: list, dev: list, test: list, images: bool = True) -> Path:
    """Each split as lines (str written verbatim, lists written with repr like the release)."""
    for name, rows in (("train.txt", train), ("valid2.txt", dev), ("test2.txt", test)):
        write_lines(root / "text" / name, [r if isinstance(r, (str, bytes)) else repr(r) for r in rows])
        for row in rows:
            if images and isinstance(row, list):
                jpeg(root / "dataset_image" / f"{row[0]}.jpg")
    return root


def write_mmsd2(root: Path, splits: dict[str, list], images: bool = True, folder: str = "text_json_final") -> Path:
    folder = root / folder
    folder.mkdir(parents=True, exist_ok=True)
    for name, items in splits.items():
        (folder / f"{name}.json").write_text(json.dumps(items, indent=2))
        for item in items:
            if images and isinstance(item, dict) and "image_id" in item:
                jpeg(root / "dataset_image" / f"{item['image_id']}.jpg")
    return root


def write_premade(folder: Path, image_root: Path | None, n: int = 6) -> dict[str, list]:
    folder.mkdir(parents=True, exist_ok=True)
    splits = {}
    for s, split in enumerate(("train", "dev", "test")):
        items = [{"id": str(100 * s + i), "text": f"{split} text {i} \u00e9", "emotion_label": i % 3} for i in range(n)]
        (folder / f"{split}.json").write_text(json.dumps(items, ensure_ascii=False, indent=1), encoding="utf-8")
        splits[split] = items
        for item in items:
            if image_root is not None:
                jpeg(image_root / f"{item['id']}.jpg")
    return splits
