"""Files that a kill or a power loss never leaves half-written under their names, readable as the umask allows, and
the temporary files of writers that were killed, found and removed; output folders made, or refused with why."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import stat
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from clfa.errors import OptionError, first_line

ABANDONED_AFTER_S = 3600  # a temporary file no writer has touched for an hour is a killed writer's


def temporary_name(path: Path) -> Path:
    """A hidden name beside ``path``, of this writer's own: writers on several hosts or in several processes may
    write the same file at once, and with one temporary name would write into one file and take it from each other."""
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def on_disk(path: Path) -> None:
    """The file's data on the disk, before a rename gives it the name that says it is whole (a power loss)."""
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def shared_as_umask_allows(path: Path) -> None:
    """safetensors writes its files readable by their owner alone (0600), whatever the umask, where every other file
    beside them follows it: a model folder or cache shared between users would be unreadable to the others."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary name beside ``path`` to write the file under: once the block ends, the file is put on disk and
    takes ``path``'s name at once; if the block fails (an interrupt too), it is removed and ``path`` is left as it was."""
    tmp = temporary_name(path)
    try:
        yield tmp
        on_disk(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def whole_output(output: str | Path) -> Iterator[Path]:
    """Where to write the output file ``output``: for a file, or nothing yet, a name that takes ``output``'s once the
    block ends (see :func:`replacing`; a link's target is replaced, not the link); ``output`` itself for a pipe or
    /dev/stdout, which cannot be replaced and whose reader reads as it comes."""
    if not regular_file_or_none(output):
        yield Path(output)
        return
    with replacing(Path(output).resolve()) as tmp:
        yield tmp


# What a write meets on a full disk, over a quota, on a read-only file system or without the permission: a problem of
# the output, which is named, not a fault of the command.
_UNWRITABLE = {errno.ENOSPC, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _refusal(err: Exception) -> str | None:
    """Why the system refused a write that raised ``err`` (see _UNWRITABLE), or None for another error. safetensors
    gives the system's error as text in an error of its own: "I/O error: No space left on device (os error 28)"."""
    if isinstance(err, OSError):
        return err.strerror if err.errno in _UNWRITABLE and not getattr(err, "met_in_making", False) else None
    from safetensors import SafetensorError

    if isinstance(err, SafetensorError) and (said := re.search(r"I/O error: (.+) \(os error (\d+)\)", str(err))):
        return said[1] if int(said[2]) in _UNWRITABLE else None
    return None


@contextlib.contextmanager
def writing(output: str | Path | None, flag: str | None = "--output") -> Iterator[None]:
    """The block writes ``output`` (None: stdout): a write it refuses is an OptionError that names it. What the block
    writes may be made as it is written: an error met in making it is passed on as it is (see :func:`made_apart`)."""
    try:
        yield
    except Exception as err:
        if (why := _refusal(err)) is None:
            raise
        where = "stdout" if output is None else f"{flag} {output}" if flag else str(output)
        raise OptionError(f"{where}: cannot be written ({why})") from None


def made_apart(items: Iterable) -> Iterator:
    """``items``, whose own errors :func:`writing` passes on as they are: rows computed as they are written read
    images and start loader workers, and an EACCES met there is not the output's."""
    try:
        yield from items
    except OSError as err:
        err.met_in_making = True
        raise


def write_whole(path: Path, text: str) -> None:
    """``text`` into ``path``, written under a temporary name and on disk before it takes its own."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def regular_file_or_none(output: str | Path) -> bool:
    """Whether ``output`` is a file or nothing yet. Asked of the path as given: /dev/stdout resolves, through /proc,
    to a name such as "pipe:[1234]" that names nothing."""
    try:
        return stat.S_ISREG(os.stat(output).st_mode)
    except FileNotFoundError:
        return True


def make_folder(folder: Path, option: str) -> None:
    """``folder`` made, with the folders above it; an OptionError that names ``option`` (a flag and its value) if not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OptionError(f"{option}: a file stands where its folder would be") from None
    except OSError as err:
        raise OptionError(f"{option}: its folder cannot be made ({err.strerror or err})") from None


def remove_abandoned(folder: Path, pattern: str) -> None:
    """Delete the temporary files or folders (``pattern``) of writers that were killed (SIGKILL, power loss) and so
    never cleaned up: those untouched for an hour. A writer that takes longer touches its file as it goes (a folder
    is touched by each file made in it). The age alone decides, whichever host, container or process the file came
    from, so no lock or process id is needed (neither holds on every file system a cache folder may sit on)."""
    for tmp in folder.glob(pattern):
        try:
            if time.time() - tmp.stat().st_mtime <= ABANDONED_AFTER_S:
                continue
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp)
            else:
                tmp.unlink()
        except OSError:  # already gone, or not ours to delete
            continue


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole safetensors file, or None. A copy or download that stopped half-way leaves one whose
    header describes more bytes than follow; safetensors calls that "incomplete metadata", which says neither."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt"):  # reads the header and checks that the data it describes is all there
            return None
    except (OSError, SafetensorError) as err:
        problem = first_line(err)
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            length = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(length)) if 8 + length <= size else None
        end = 8 + length + max((entry["data_offsets"][1] for entry in header.values()
                                if isinstance(entry, dict) and "data_offsets" in entry), default=0)
    except (OSError, ValueError, TypeError, AttributeError, IndexError, KeyError):
        end = None
    if end is not None and size < end:
        return f"cut short: {size:,} bytes of the {end:,} its header describes (a copy or download that stopped half-way)"
    return f"not a whole safetensors file: cut short, or another kind of file ({problem})"
