"""Opening image files: without Pillow's warnings about their metadata, and a file that holds no image named for what
it holds instead."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

# catch_warnings swaps the process's filters: threads that open images at once share one swap (the first to enter
# makes it, the last to leave undoes it). Taking turns would hold every thread up behind one whose file is slow to
# read (a network file system), and a process forked meanwhile (a loader worker) would inherit the turn taken, and hang.
_SHARED = threading.Lock()
_quiet_threads = 0
_restore: warnings.catch_warnings | None = None


def _unlocked() -> None:
    global _SHARED
    _SHARED = threading.Lock()  # a fork copies the lock as it is, perhaps held by a thread the child does not have


os.register_at_fork(after_in_child=_unlocked)


@contextlib.contextmanager
def quiet_metadata():
    """Pillow's warnings while it reads a file's header and metadata kept quiet: EXIF it cannot parse ("Corrupt EXIF
    data", "Truncated File Read") or a size past the one it warns at (DecompressionBombWarning). They name no file,
    and the pixels do not depend on them; a size past the one it refuses still raises."""
    global _quiet_threads, _restore
    if getattr(sys.flags, "context_aware_warnings", False):  # Python 3.14: each thread's filters are its own
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"PIL\.")
            yield
        return
    with _SHARED:
        if _quiet_threads == 0:
            _restore = warnings.catch_warnings()
            _restore.__enter__()
            warnings.filterwarnings("ignore", module=r"PIL\.")
        _quiet_threads += 1
    try:
        yield
    finally:
        with _SHARED:
            _quiet_threads -= 1
            if _quiet_threads == 0:
                _restore.__exit__(None, None, None)


def open_image(path: str | Path) -> Image.Image:
    """``Image.open(path)``, quiet as :func:`quiet_metadata` says (its pixels are decoded later, by the caller)."""
    with quiet_metadata():
        return Image.open(path)


def why_unreadable(path: str | Path, error: Exception) -> str:
    """What is wrong with the file ``error`` came from, for a message that names it: what the file holds where Pillow
    found no image in it and its first bytes tell (a failed download's web page), else the error itself."""
    if isinstance(error, UnidentifiedImageError) and (held := what_it_holds(path)):
        return held
    return f"{error.__class__.__name__}: {error}"


_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1")
_TITLE = re.compile(rb"<title[^>]*>\s*(.*?)\s*</title", re.IGNORECASE | re.DOTALL)


def what_it_holds(path: str | Path) -> str | None:
    """What a file that Pillow cannot read holds instead of an image, by its first bytes, or None where they do not
    tell. A server's error page (HTML, XML or JSON) is what a failed download saves under the image's name."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    if not head:
        return "an empty file, 0 bytes"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "a HEIC/HEIF photo, which Pillow does not read: convert it to JPEG or PNG"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if b"<svg" in text[:1024] and b"<html" not in text[:1024]:
        return "an SVG drawing, which Pillow does not read: convert it to PNG"
    if text.startswith((b"<!doctype html", b"<html")) or b"<html" in text[:1024]:
        title = _TITLE.search(head)
        named = f" ({title.group(1)[:80].decode('utf-8', 'replace')!r})" if title and title.group(1) else ""
        return f"an HTML page{named}, not an image: what a failed download leaves"
    if text.startswith(b"<?xml"):
        return "an XML document, not an image: what a failed download leaves"
    if text.startswith(b"{"):
        return "JSON, not an image: what a failed download leaves"
    return None
