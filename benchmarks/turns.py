"""Benchmark runs that share one machine without sharing their timed steps.

Most of a compiled training run's time is compilation: minutes of host work, against seconds of timed steps. Runs
started together with the same folder compile and warm up side by side, then time their steps one at a time: a run
that has warmed up waits until no other is still warming up (those use the host and the GPU) and until none is
timing, so each is timed with the host and the GPU otherwise idle. The runs that wait keep their GPU memory, so
together they must fit in it.

    turns = Turns(folder)   # when the run starts: it joins the folder
    ...                     # build, compile, warm up
    turns.take()            # before the timed steps
    ...                     # timed steps
    turns.give()            # after them, or leave it to the end of the process, which gives it back
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path

logger = logging.getLogger(__name__)


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs: a process that ended but was not yet reaped (a zombie) does not."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


class Turns:
    """One run's place among the runs that share ``folder`` (see the module). ``patience``: the longest a warmed-up
    run waits for the others to warm up, in seconds; after it the run times its steps while they may still be
    compiling, and says so (``waited_for`` then lists them)."""

    def __init__(self, folder: str | Path, patience: float = 1200.0, poll: float = 0.2):
        self.folder, self.patience, self.poll = Path(folder), patience, poll
        self.folder.mkdir(parents=True, exist_ok=True)
        self.pid = os.getpid()
        self.waited_for: list[int] = []
        self.seconds_waited = 0.0
        self._lock: int | None = None
        self._mark("joined")

    def _mark(self, state: str) -> None:
        (self.folder / f"{self.pid}.{state}").touch()

    def _pids(self, state: str) -> set[int]:
        return {int(path.stem) for path in self.folder.glob(f"*.{state}")}

    def warming(self) -> list[int]:
        """The other runs in the folder that have neither warmed up nor ended (one that failed while warming up must
        not hold up the others until their patience runs out)."""
        busy = self._pids("joined") - self._pids("ready") - {self.pid}
        return sorted(pid for pid in busy if alive(pid))

    def take(self) -> None:
        """Waits until every other run has warmed up (or ended, or ``patience`` is spent), then for the turn."""
        self._mark("ready")
        start = time.monotonic()
        while (warming := self.warming()) and time.monotonic() - start < self.patience:
            time.sleep(self.poll)
        if warming:
            logger.warning("runs %s still warming up after %.0f s: timing alongside them", warming, self.patience)
        self.waited_for = warming
        # A bare descriptor, which no object closes when it is freed: left open, the lock lasts until the process
        # has ended, its interpreter's exit included (seconds of host work after the last line of a script).
        self._lock = os.open(self.folder / "turn.lock", os.O_WRONLY | os.O_CREAT, 0o644)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self.seconds_waited = time.monotonic() - start

    def give(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            os.close(self._lock)
            self._lock = None
