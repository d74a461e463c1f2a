"""Worker processes that train some of the demo's models beside the demo's own process.

The demo trains each model on one thread (see :func:`clfa.demo.run.run_demo`), so a machine's other cores sit idle;
each run is a function of its options, data and seed alone, so workers on those cores can train the baselines while
this process trains CLFA, and which process trains a model changes none of its results. Workers are spawned (alike on
every platform, and no fork of a process that holds threads) as the demo begins, so that their seconds of importing
torch and transformers pass while the world is drawn and the teacher trained. Jobs go out on one queue, taken by
whichever process is free, this one included; progress, log records and results come back on another, and are shown
and kept here.
"""

from __future__ import annotations

import copy
import gc
import logging
import logging.handlers
import multiprocessing
import os
import pickle
import queue
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator


def worker_count(jobs: int) -> int:
    """A worker per core beside this process's, and no more than there are jobs."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, min(jobs, cores - 1))


class Workers:
    """``count`` worker processes (none: this process runs every job) that run jobs (:class:`clfa.demo.run.Job`)
    with :func:`clfa.demo.run.train_variant`; ``report`` shows their progress events here, as it shows this process's
    own. A context manager: the workers still running when the block ends, by an error or a Ctrl-C, end with it."""

    def __init__(self, count: int, report: Callable[[tuple], None]):
        context = multiprocessing.get_context("spawn")
        self.jobs, self.events = context.Queue(), context.Queue()
        # What is still queued when this process ends, the end marks of workers that are gone, need not wait for a
        # reader that will never come.
        self.jobs.cancel_join_thread()
        self.report = report
        self.taken: set[str] = set()
        self.results: dict[str, dict] = {}
        self.delivered: set[int] = set()  # the workers that trained a job: they end by themselves
        self.failure: BaseException | None = None
        self.arrived, self.stopping = threading.Event(), threading.Event()
        self.processes = [context.Process(target=_serve, args=(self.jobs, self.events, _settings()), daemon=True,
                                          name=f"clfa-demo-worker-{i}") for i in range(count)]
        self.listener = threading.Thread(target=self._listen, daemon=True)

    def __enter__(self) -> Workers:
        for process in self.processes:
            process.start()
        self.listener.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop()

    def submit(self, jobs: list) -> None:
        """Queue ``jobs``, then an end mark for each worker and one for this process (see :meth:`leftovers`)."""
        for job in jobs:
            self.taken.add(job.name)
            self.jobs.put(job)
        for _ in range(len(self.processes) + 1):
            self.jobs.put(None)

    def leftovers(self) -> Iterator:
        """The submitted jobs no worker has taken, for this process to run: every one, without workers."""
        for job in iter(self.jobs.get, None):
            self.taken.discard(job.name)
            yield job

    def finish(self) -> dict[str, dict]:
        """The results of the jobs the workers took, once each is in (called after :meth:`leftovers` is done, when
        every job has been taken); a worker's error is raised here, its traceback there as its cause."""
        while self.failure is None and self.taken - self.results.keys() and any(p.is_alive() for p in self.processes):
            self.arrived.wait(0.5)
            self.arrived.clear()
        self._stop(ending=self.delivered if self.failure is None else set())
        if self.failure is not None:
            raise self.failure
        if lost := sorted(self.taken - self.results.keys()):
            codes = ", ".join(str(p.exitcode) for p in self.processes)
            raise RuntimeError(f"the demo's worker process training {', '.join(lost)} ended without its result (exit codes {codes})")
        return dict(self.results)

    def _stop(self, ending: set[int] = frozenset()) -> None:
        """Ends the workers: those in ``ending`` (process ids) are let end by themselves, once they read their end
        mark; the others hold no job, or one whose result no longer matters, and are told to end now."""
        for process in self.processes:
            if process.pid not in ending:
                process.terminate()
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()
        self.stopping.set()
        if self.listener.is_alive():
            self.listener.join(timeout=5)  # a worker ended mid-message would leave the queue unreadable

    def _listen(self) -> None:
        while True:
            try:
                event = self.events.get(timeout=0.1)
            except queue.Empty:
                if self.stopping.is_set():  # set once the workers are gone: all they sent has been read
                    return
                continue
            if isinstance(event, logging.LogRecord):
                logging.getLogger(event.name).handle(event)
            elif event[0] == "result":
                self.results[event[1]] = event[2]
                self.delivered.add(event[3])
            elif event[0] == "failed":
                if self.failure is None:
                    self.failure = event[2]
                    self.failure.__cause__ = WorkerTraceback(event[3])
            else:
                self.report(event)
            self.arrived.set()


def _settings() -> dict:
    """What the workers take from this process: its torch threads (a count that changes the weights' last bits), and
    how transformers and logging speak."""
    import torch
    import transformers

    return {"threads": torch.get_num_threads(), "verbosity": transformers.logging.get_verbosity(),
            "library_bars": transformers.utils.logging.is_progress_bar_enabled(), "level": logging.getLogger().getEffectiveLevel()}


def _serve(jobs, events, settings: dict) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the demo process's to handle: it ends its workers
    # Told to end, a worker ends as Python does, running multiprocessing's clean-up: without it, the lock tqdm makes
    # would be reported at exit as a leaked semaphore.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    # The objects those imports make live as long as the process: the collector need not go through them again and again.
    gc.disable()
    import torch
    import transformers

    from clfa.demo.run import train_variant
    gc.freeze()
    gc.enable()
    torch.set_num_threads(settings["threads"])
    transformers.logging.set_verbosity(settings["verbosity"])
    if not settings["library_bars"]:
        transformers.logging.disable_progress_bar()
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(events)]
    root.setLevel(settings["level"])
    logging.captureWarnings(True)
    for job in iter(jobs.get, None):
        try:
            events.put(("result", job.name, train_variant(job, events.put), os.getpid()))
        except Exception as err:  # noqa: BLE001 (raised again in the demo's process)
            events.put(("failed", job.name, _sendable(err), "".join(traceback.format_exception(err))))
            return


class WorkerTraceback(Exception):
    """Where a worker's error was raised: its traceback, as text."""

    def __str__(self) -> str:
        return f"\n{self.args[0]}"


def _sendable(err: BaseException) -> BaseException:
    """``err`` if it crosses the queue whole, else a RuntimeError that says what it was. The queue pickles it, and the
    receiving end rebuilds it as ``copy.copy`` does (its class called with its args, then its state set): both are
    tried here, without reading back any pickled bytes."""
    try:
        pickle.dumps(err)
        copy.copy(err)
        return err
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(err).__name__}: {err}")
