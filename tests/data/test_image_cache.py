"""The image cache is built once, reused while nothing changes, and rebuilt when anything that shapes it does."""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from transformers import CLIPImageProcessorPil

from clfa.data.image_cache import cache_path, cached_images
from clfa.data.processing import ImageTransform
from clfa.data.records import DataError, Record


class CountingTransform:
    """Resizes to ``side`` x ``side``; counts loads so tests can tell a rebuild from a reuse."""

    def __init__(self, side: int = 8, fail_on: str | None = None):
        self.size = (side, side)
        self.fail_on = fail_on
        self.loads = 0
        self._lock = threading.Lock()

    def fingerprint(self) -> str:
        return f"counting-{self.size}"

    def load(self, path, source: str = "") -> np.ndarray:
        with self._lock:
            self.loads += 1
        if self.fail_on and Path(path).name == self.fail_on:
            raise DataError(f"unreadable image file {path}", file=path)
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB").resize(self.size)).transpose(2, 0, 1).copy()


def make_records(root: Path, n: int = 6) -> list[Record]:
    root.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        path = root / f"{i}.png"
        Image.new("RGB", (10 + i, 12), (20 * i, 100, 255 - 20 * i)).save(path)
        records.append(Record(id=str(i), text="t", image=path, label="a", source=f"list.jsonl:{i + 1}"))
    return records


def test_built_once_then_reused(tmp_path):
    records = make_records(tmp_path / "img")
    transform = CountingTransform()
    images = cached_images(records, transform, tmp_path / "cache", num_workers=3, progress=False)
    assert isinstance(images, np.memmap) and not images.flags.writeable
    assert images.shape == (6, 3, 8, 8) and images.dtype == np.uint8
    for i, record in enumerate(records):
        np.testing.assert_array_equal(images[i], transform.load(record.image))
    assert transform.loads == 12  # 6 to build + 6 above
    again = cached_images(records, CountingTransform(), tmp_path / "cache", progress=False)
    np.testing.assert_array_equal(again, images)
    fresh = CountingTransform()
    cached_images(records, fresh, tmp_path / "cache", progress=False)
    assert fresh.loads == 0
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [cache_path(records, fresh, tmp_path / "cache").name]


def test_changed_file_mtime_or_size_rebuilds(tmp_path):
    records = make_records(tmp_path / "img")
    cache = tmp_path / "cache"
    first = np.array(cached_images(records, CountingTransform(), cache, progress=False))
    stat = os.stat(records[2].image)
    os.utime(records[2].image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    t = CountingTransform()
    cached_images(records, t, cache, progress=False)
    assert t.loads == 6
    Image.new("RGB", (30, 30), (0, 0, 0)).save(records[3].image)  # new content and size
    t = CountingTransform()
    rebuilt = cached_images(records, t, cache, progress=False)
    assert t.loads == 6
    assert not np.array_equal(rebuilt[3], first[3]) and np.array_equal(rebuilt[0], first[0])
    assert len(list(cache.glob("*.npy"))) == 3


def test_transform_settings_order_and_ids_change_the_key(tmp_path):
    records = make_records(tmp_path / "img")
    cache = tmp_path / "cache"
    base = cache_path(records, CountingTransform(8), cache)
    assert cache_path(records, CountingTransform(8), cache) == base
    assert cache_path(records, CountingTransform(12), cache) != base
    assert cache_path(records[::-1], CountingTransform(8), cache) != base
    assert cache_path(records[:5], CountingTransform(8), cache) != base
    renamed = [Record(id=f"x{r.id}", text=r.text, image=r.image, label=r.label) for r in records]
    assert cache_path(renamed, CountingTransform(8), cache) != base
    small, big = CountingTransform(8), CountingTransform(12)
    assert cached_images(records, small, cache, progress=False).shape == (6, 3, 8, 8)
    assert cached_images(records, big, cache, progress=False).shape == (6, 3, 12, 12)
    assert small.loads == big.loads == 6
    reversed_images = cached_images(records[::-1], CountingTransform(8), cache, progress=False)
    np.testing.assert_array_equal(reversed_images[0], cached_images(records, small, cache, progress=False)[5])


def test_interrupted_build_leaves_no_cache(tmp_path):
    records = make_records(tmp_path / "img", n=8)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="5.png"):
        cached_images(records, CountingTransform(fail_on="5.png"), cache, num_workers=2, progress=False)
    assert list(cache.iterdir()) == []  # neither a cache file nor a temporary one
    t = CountingTransform()
    assert cached_images(records, t, cache, progress=False).shape == (8, 3, 8, 8) and t.loads == 8


@pytest.mark.parametrize("failure", ["disk full", "no reservation, too little room", "no fallocate, too little room"])
def test_a_cache_the_disk_cannot_hold_is_refused_before_any_image_is_decoded(tmp_path, monkeypatch, failure):
    """A write through a memory map onto a full disk would kill the process (SIGBUS) without a word. The disk's
    answers are those of a full one; the build's are its own."""
    import errno
    import shutil

    import clfa.data.image_cache as image_cache
    from clfa.errors import OptionError

    records = make_records(tmp_path / "img", n=4)
    code = errno.ENOSPC if failure == "disk full" else errno.EOPNOTSUPP

    def cannot_reserve(fd, offset, size):
        raise OSError(code, os.strerror(code))

    if failure.startswith("no fallocate"):  # macOS
        monkeypatch.delattr(image_cache.os, "posix_fallocate")
    else:
        monkeypatch.setattr(image_cache.os, "posix_fallocate", cannot_reserve)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(image_cache.shutil, "disk_usage", lambda path: usage._replace(free=100))
    mapped_when_removed = []  # Windows removes no mapped file, and its error would replace this one
    real_unlink = Path.unlink
    monkeypatch.setattr(Path, "unlink", lambda path, *args, **kwargs: mapped_when_removed.append(
        str(path) in Path("/proc/self/maps").read_text()) or real_unlink(path, *args, **kwargs))
    transform = CountingTransform()
    with pytest.raises(OptionError, match=rf"^the image cache needs 768 bytes in {tmp_path / 'cache'}, which has 100 bytes "
                                          r"free: free some space, give --cache-dir another folder, or train with --image-cache false$"):
        cached_images(records, transform, tmp_path / "cache", progress=False)
    assert transform.loads == 0 and list((tmp_path / "cache").iterdir()) == [] and mapped_when_removed == [False]
    if code == errno.EOPNOTSUPP:  # a file system that cannot reserve blocks, with the room: the cache is built
        monkeypatch.setattr(image_cache.shutil, "disk_usage", lambda path: usage)
        assert cached_images(records, transform, tmp_path / "cache", progress=False).shape == (4, 3, 8, 8)


def test_files_of_killed_builds_are_removed_and_recent_ones_kept(tmp_path):
    import os
    import time

    records = make_records(tmp_path / "img", n=4)
    cache = tmp_path / "cache"
    cache.mkdir()
    killed, recent = (cache / f".images-4x3x8x8-0123.npy.{pid}-0123abcd.tmp" for pid in (11, 12))
    for tmp in (killed, recent):
        tmp.write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    os.utime(killed, (two_hours_ago, two_hours_ago))  # nobody has written to it for two hours: a killed build's
    cached_images(records, CountingTransform(), cache, progress=False)
    assert not killed.exists() and recent.exists()
    assert len(list(cache.glob("images-*.npy"))) == 1


def test_a_running_build_keeps_its_file_fresh_against_cleaners(tmp_path):
    """A build touches its file after every image: even made to look two hours old, it is fresh again by the time a
    cleaner looks after the next image, and the build completes."""
    import os
    import time

    from clfa.files import remove_abandoned

    records = make_records(tmp_path / "img", n=4)
    cache = tmp_path / "cache"
    kept = []

    class CleanerMidBuild(CountingTransform):
        def load(self, path, source=""):
            for tmp in cache.glob(".*.tmp"):
                if self.loads == 0:  # before the first image is written
                    os.utime(tmp, (time.time() - 7200,) * 2)
                else:
                    remove_abandoned(cache, ".images-*.tmp")
                    kept.append(tmp.exists())
            return super().load(path, source)

    images = cached_images(records, CleanerMidBuild(), cache, num_workers=1, progress=False)
    assert kept == [True, True, True] and images.shape == (4, 3, 8, 8)


def test_missing_image_names_the_record(tmp_path):
    records = make_records(tmp_path / "img")
    records[4].image.unlink()
    with pytest.raises(DataError, match=r"list.jsonl:5: missing or unreadable image file .*4.png") as err:
        cached_images(records, CountingTransform(), tmp_path / "cache", progress=False)
    assert (err.value.file, err.value.line, err.value.item) == ("list.jsonl", 5, None)  # as --skip-invalid reports it
    records[4] = dataclasses.replace(records[4], source="list.json:1, item 5")
    with pytest.raises(DataError, match=r"list.json:1, item 5: missing") as err:
        cached_images(records, CountingTransform(), tmp_path / "cache", progress=False)
    assert (err.value.file, err.value.line, err.value.item) == ("list.json", 1, 5)


def test_empty_records(tmp_path):
    images = cached_images([], CountingTransform(), tmp_path / "cache", progress=False)
    assert images.shape == (0, 3, 8, 8) and not images.flags.writeable


def test_with_a_real_image_processor(tmp_path):
    records = make_records(tmp_path / "img", n=3)
    transform = ImageTransform(CLIPImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}))
    images = cached_images(records, transform, tmp_path / "cache", progress=False)
    assert images.shape == (3, 3, 16, 16)
    for i, record in enumerate(records):
        np.testing.assert_array_equal(images[i], transform.load(record.image))
    other = ImageTransform(CLIPImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}, resample=0))
    assert cache_path(records, other, tmp_path / "cache") != cache_path(records, transform, tmp_path / "cache")


def test_a_cache_file_cut_short_is_built_again_not_a_traceback(tmp_path, caplog):
    """A cache folder copied or synced half-way (or a disk that failed) holds a cache of the right name cut short:
    np.load then raised a bare ValueError in every later run."""
    records = make_records(tmp_path)
    transform = CountingTransform()
    first = np.array(cached_images(records, transform, tmp_path / "cache", progress=False))
    path = cache_path(records, transform, tmp_path / "cache")
    os.truncate(path, path.stat().st_size // 2)
    again = cached_images(records, transform, tmp_path / "cache", progress=False)
    assert transform.loads == 2 * len(records) and np.array_equal(again, first)
    assert "is not a whole image cache: building it again" in caplog.text


def test_a_cache_of_another_shape_is_no_longer_mapped_when_its_rebuild_replaces_it(tmp_path, monkeypatch):
    """Windows cannot replace a file that is mapped: the rebuild of a cache whose header names another shape failed,
    in every later run too, while the array read to check it was still alive."""
    import clfa.files

    records = make_records(tmp_path)
    transform = CountingTransform()
    path = cache_path(records, transform, tmp_path / "cache")
    path.parent.mkdir()
    np.save(path, np.zeros((2, 3, 8, 8), dtype=np.uint8))
    mapped_then = []
    real_replace = os.replace
    monkeypatch.setattr(clfa.files.os, "replace", lambda src, dst: mapped_then.append(str(dst) in Path("/proc/self/maps").read_text())
                        or real_replace(src, dst))
    images = cached_images(records, transform, tmp_path / "cache", progress=False)
    assert mapped_then == [False] and images.shape == (6, 3, 8, 8)


def test_a_failed_build_unmaps_its_file_before_removing_it(tmp_path, monkeypatch):
    """Windows cannot remove a file that is mapped: the removal failed and its error took the place of the one naming
    the bad image."""
    records = make_records(tmp_path / "img", n=8)
    mapped_then = []
    real_unlink = Path.unlink

    def unlink(path, *args, **kwargs):
        mapped_then.append(str(path) in Path("/proc/self/maps").read_text())
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(DataError, match="5.png"):
        cached_images(records, CountingTransform(fail_on="5.png"), tmp_path / "cache", num_workers=2, progress=False)
    assert mapped_then == [False]
