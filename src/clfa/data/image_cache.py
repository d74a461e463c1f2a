"""Decode and resize every image once, into a memory-mapped uint8 array reused across epochs, runs and seeds.

The cache file is named by a digest of the transform's settings and of every record's (id, image path,
file size, mtime), in order, so changing any of them selects a different file: a stale cache is never
read. Files are written to a temporary name and renamed when complete, so an interrupted build leaves
nothing that could be mistaken for a cache; the temporary file of a killed build is removed by a later build once
it has been untouched for an hour.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from tqdm import tqdm

from clfa.data.records import Record, record_error
from clfa.errors import OptionError
from clfa.files import remove_abandoned, replacing

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the file layout changes, so old caches are ignored


def cache_key(records: list[Record], transform) -> str:
    """Digest of the transform fingerprint, the output size and each record's (id, path, size, mtime_ns)."""
    digest = hashlib.sha256(f"clfa-images-v{CACHE_FORMAT}\0{transform.fingerprint()}\0{tuple(transform.size)}".encode())
    for record in records:
        try:
            stat = os.stat(record.image)
        except OSError as exc:
            raise record_error(record, f"missing or unreadable image file {record.image} ({exc.strerror})") from exc
        digest.update(f"\0{record.id}\0{Path(record.image).resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:32]


def cache_path(records: list[Record], transform, cache_dir: str | Path) -> Path:
    """Where the cache for these records and this transform lives (it may not exist yet)."""
    height, width = transform.size
    return Path(cache_dir) / f"images-{len(records)}x3x{height}x{width}-{cache_key(records, transform)}.npy"


def cached_images(records: list[Record], transform, cache_dir: str | Path, num_workers: int | None = None, progress: bool = True) -> np.ndarray:
    """A read-only memory-mapped uint8 array (N, 3, H, W) whose row i is ``transform.load`` of ``records[i]``.

    Built on first use with ``num_workers`` threads (default: the CPU count, at most 16; image decoding
    and resizing release the GIL) and reused afterwards. A bad image raises DataError naming it.
    """
    height, width = transform.size
    shape = (len(records), 3, height, width)
    if not records:
        empty = np.zeros(shape, dtype=np.uint8)
        empty.flags.writeable = False
        return empty
    path = cache_path(records, transform, cache_dir)
    if path.is_file():
        if (cached := _whole_cache(path, shape)) is not None:
            return cached
        logger.warning("%s is not a whole image cache: building it again", path)
    _build(path, records, transform, shape, num_workers or min(16, os.cpu_count() or 1), progress)
    return np.load(path, mmap_mode="r")


def _whole_cache(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The cache in ``path`` if it holds ``shape``, else None. The array read to check is let go before returning:
    Windows cannot replace a file that is mapped, as the rebuild then would."""
    try:
        cached = np.load(path, mmap_mode="r")
    except (OSError, ValueError):  # cut short (a copy stopped half-way, a disk that failed): built anew, replacing it
        return None
    return cached if cached.shape == shape and cached.dtype == np.uint8 else None


def _reserve(tmp: Path, shape: tuple[int, ...]) -> np.memmap:
    """The cache's file, its disk blocks taken before any image is written: a write through a memory map that finds
    the disk full kills the process (SIGBUS) without a word, hours into a build."""
    free = shutil.disk_usage(tmp.parent).free  # first: the blocks a failed reservation keeps would count as used
    needed = int(np.prod(shape))
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        if _reserved(tmp) or free >= needed:
            return out
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
    out = None  # unmapped, so that the file can be removed: Windows removes no mapped file
    raise OptionError(f"the image cache needs {_bytes(needed)} in {tmp.parent}, which has {_bytes(free)} free: free some "
                      "space, give --cache-dir another folder, or train with --image-cache false")


def _reserved(tmp: Path) -> bool:
    """Whether the file's blocks are now taken: False where they cannot be (macOS; a file system without fallocate).
    A disk without the room raises."""
    if not hasattr(os, "posix_fallocate"):
        return False
    try:
        with open(tmp, "rb+") as f:
            os.posix_fallocate(f.fileno(), 0, tmp.stat().st_size)
        return True
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        return False


def _bytes(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


def _build(path: Path, records: list[Record], transform, shape: tuple[int, ...], workers: int, progress: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A build touches its file after every image, so that only a killed build's is an hour old.
    remove_abandoned(path.parent, ".images-*.tmp")

    def load(i: int) -> None:
        pixels = transform.load(records[i].image, records[i].source)
        if pixels.shape != shape[1:]:
            raise record_error(records[i], f"image {records[i].image} became {pixels.shape}, expected {shape[1:]}")
        out[i] = pixels  # rows are disjoint, so threads never write the same bytes
        os.utime(tmp)  # progress, for cleaners: see remove_abandoned

    with replacing(path) as tmp:  # the data on disk before the name says the cache exists
        out = _reserve(tmp, shape)
        try:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(load, i) for i in range(len(records))]
                try:
                    for future in tqdm(as_completed(futures), total=len(futures), desc="caching images", unit="img", disable=not progress):
                        future.result()
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
            out.flush()
        finally:
            del out  # unmapped before the file is renamed, or removed after a failure: Windows does neither to a mapped file
