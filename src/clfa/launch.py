"""What torchrun and accelerate launch tell each process they start, read from the environment they set: usable
before the processes are joined, and without importing torch; and which process says what several may meet."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path


def first_process() -> bool:
    """Whether this is the first process of a torchrun / accelerate launch run (or the only one), by its RANK. A RANK
    without a LOCAL_RANK is no launcher's (a job script or a cluster may export one): the process is alone."""
    return "LOCAL_RANK" not in os.environ or os.environ.get("RANK", "0") == "0"


def first_on_this_machine() -> bool:
    """Whether this is the first process a launcher started on this machine (LOCAL_RANK 0), or the only one here. The
    processes of one machine read the same files; those of another machine may not (a folder not copied there).
    A RANK without a LOCAL_RANK is no launcher's (a job script or a cluster may export one): the process is alone."""
    return os.environ.get("LOCAL_RANK", "0") == "0"


@contextlib.contextmanager
def alike_in_every_process() -> Iterator[None]:
    """Marks an exception raised in the block as one every process of a launch meets alike: the block checks the
    command line and the files read, the same for each. Left unmarked, an error may be one process's own (its share
    of the data, its GPU, a download that failed for it alone); see :func:`said_by_this_process`."""
    try:
        yield
    except Exception as err:
        err.alike_in_every_process = True
        raise


def said_by_this_process(err: BaseException, said: str) -> bool:
    """Whether this process prints ``said``, what it has to say of ``err``. Under a launch the first process of each
    machine says an error every process meets alike (:func:`alike_in_every_process`); any other is said by the first
    process of the machine to meet it: once when several meet the same, and by each process that meets its own."""
    if getattr(err, "alike_in_every_process", False):
        return first_on_this_machine()
    return _first_to_say(said)


def _first_to_say(said: str) -> bool:
    """Whether no other process of this launch has said ``said`` on this machine: the first claims it by making a file
    named for it in the folder torchrun gives this attempt on this machine (accelerate launch runs torchrun), where
    each process's TORCHELASTIC_ERROR_FILE is ATTEMPT/LOCAL_RANK/error.json. Without that folder (another launcher,
    torchrun --log-dir /dev/null, no launcher) nothing tells a process what the others said: it says all it meets."""
    error_file = Path(os.environ.get("TORCHELASTIC_ERROR_FILE") or "error.json")
    attempt = error_file.parent.parent
    if (error_file.parent.name != os.environ.get("LOCAL_RANK")
            or attempt.name != f"attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT')}"):
        return True
    try:
        (attempt / f"clfa-said-{hashlib.sha256(said.encode(errors='backslashreplace')).hexdigest()}").touch(exist_ok=False)
    except FileExistsError:
        return False
    except OSError:  # a folder this process cannot write: better twice than never
        return True
    return True
