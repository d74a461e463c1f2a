"""What torchrun and accelerate launch tell each process they start, read from the environment they set: usable
before the processes are joined, and without importing torch."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


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


def said_by_this_process(err: BaseException) -> bool:
    """Whether this process prints ``err``'s message: under a launch the first process of each machine says an error
    every process meets alike, and each process says one that may be its own, which no other would say."""
    return first_on_this_machine() or not getattr(err, "alike_in_every_process", False)
