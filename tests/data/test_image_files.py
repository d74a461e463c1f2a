"""Opening image files quietly, from several threads and from processes forked among them."""

from __future__ import annotations

import multiprocessing
import os
import threading
import warnings

import numpy as np
import pytest
from PIL import Image

from clfa.data import image_files
from clfa.data.image_files import open_image

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo") or "fork" not in multiprocessing.get_all_start_methods(),
                                reason="a named pipe stands for a file slow to read, and a forked process for a loader worker")


def _opened_in_a_forked_process(path) -> int | None:
    """The exit code of a forked process that opens ``path`` (None: still waiting after 30 s, and killed)."""
    process = multiprocessing.get_context("fork").Process(target=open_image, args=(path,))
    process.start()
    process.join(30)
    if process.is_alive():
        process.kill()
        process.join()
        return None
    return process.exitcode


@pytest.fixture
def slow_image(tmp_path):
    """A thread opening an image whose bytes have not come yet (a named pipe, as a slow network file system), for the
    test; the bytes come after it."""
    pipe = tmp_path / "slow.png"
    os.mkfifo(pipe)
    reader = threading.Thread(target=open_image, args=(pipe,), daemon=True)
    reader.start()
    yield pipe
    with open(pipe, "wb") as f:
        Image.new("RGB", (4, 4)).save(f, "PNG")
    reader.join(30)


def test_an_image_slow_to_read_holds_up_no_other_thread_or_forked_process(tmp_path, slow_image):
    Image.new("RGB", (4, 4)).save(tmp_path / "ok.png")
    opened = threading.Event()
    threading.Thread(target=lambda: (open_image(tmp_path / "ok.png"), opened.set()), daemon=True).start()
    assert opened.wait(30)
    # A loader worker forked meanwhile opens its images too.
    assert _opened_in_a_forked_process(tmp_path / "ok.png") == 0


def test_a_process_forked_while_another_thread_starts_opening_an_image_opens_its_own(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "ok.png")
    with image_files._SHARED:  # as a thread entering or leaving the quiet block holds it, for an instant
        assert _opened_in_a_forked_process(tmp_path / "ok.png") == 0


def _read_exif(path) -> None:
    with open_image(path) as image, image_files.quiet_metadata():
        image.getexif()


def test_threads_opening_images_at_once_keep_pillow_quiet_and_then_leave_the_filters_as_they_were(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(
        tmp_path / "exif.jpg", exif=b"Exif\0\0II*\0\x08\0\0\0" + bytes(range(256)), quality=100)  # EXIF Pillow cannot parse
    pipe = tmp_path / "slow.jpg"
    os.mkfifo(pipe)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        filters = list(warnings.filters)
        slow = threading.Thread(target=_read_exif, args=(pipe,))
        slow.start()  # in the quiet block until its bytes come
        read = threading.Thread(target=_read_exif, args=(tmp_path / "exif.jpg",))
        read.start()
        read.join(30)
        with open(pipe, "wb") as f:
            f.write((tmp_path / "exif.jpg").read_bytes())
        slow.join(30)
        assert warnings.filters == filters
        with Image.open(tmp_path / "exif.jpg") as image:  # outside the block, Pillow's warning is the caller's to see
            image.getexif()
    assert len(caught) == 1 and "corrupt exif" in str(caught[0].message).lower()
