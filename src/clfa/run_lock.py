"""One training run at a time in an output folder. Two runs there (a ``--resume`` started while the run is still going,
the same command in a second terminal) would save checkpoints among each other's and rotate each other's away. The
lock is a file lock, which the operating system lets go when its process ends, however it ends: a run killed or cut
off by a power loss leaves no lock behind to remove by hand."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from clfa.errors import OptionError, first_line
from clfa.launch import first_process

logger = logging.getLogger(__name__)
# Among the Trainer's files, which are never shipped with the model.
LOCK_FILE = Path("checkpoints") / ".clfa-training.lock"


def training_now(run: Path) -> bool:
    """Whether a run is training in the folder ``run`` now. Makes nothing: a folder where no run ever trained has no
    lock file, and one that cannot be opened (another user's run) is taken as not training."""
    path = Path(run) / LOCK_FILE
    if not path.is_file():
        return False
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    except OSError:
        return False
    lock.release()
    return False


def check_free(run: Path) -> None:
    """An OptionError if a run is training in ``run`` now (see :func:`training_now`); the other processes of a launch
    leave it to the first, whose refusal ends them."""
    if first_process() and training_now(run):
        raise _busy(run)


def _busy(run: Path) -> OptionError:
    return OptionError(f"--output-dir {run}: a run is training there now; wait for it to end, or give another --output-dir")


@contextlib.contextmanager
def hold(run: Path) -> Iterator[None]:
    """Held by the run training in ``run`` from its first write there to its end. Under torchrun or accelerate launch
    the first process holds it for all: the others of a second launch end when their first process is refused."""
    if not first_process():
        yield
        return
    path = Path(run) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise _busy(run) from None
    except OSError as err:  # a file system without locks (some cluster mounts): the run goes on, unguarded
        logger.warning("%s cannot be locked (%s): a second run started in %s would not be refused", path,
                       err.strerror or first_line(err), run)
        yield
        return
    try:
        yield
    finally:
        lock.release()
