"""The demo's worker processes: a model trained in one is the model trained in the demo's own process, its progress is
shown there, its error raised there, and the workers end with the demo."""

import re

import pytest
import torch
from safetensors.torch import load_file

from clfa.data.registry import load_dataset
from clfa.demo.run import Job, train_variant
from clfa.demo.workers import Workers, WorkerTraceback
from clfa.errors import OptionError
from conftest import tiny_options

SECONDS = re.compile(r"\d+(\.\d+)? s\b")  # the lines' timings, which differ from run to run


def _shown(events: list[tuple]) -> list[tuple]:
    return [tuple(SECONDS.sub("T s", value) if isinstance(value, str) else value for value in event) for event in events]


def test_a_baseline_trained_in_a_worker_is_the_one_trained_here(tiny_models, tiny_dataset, tmp_path):
    data = load_dataset("jsonl", tiny_dataset)
    job = lambda where: Job("BERT+ViT", tiny_options(tiny_models, tmp_path / where, epochs=2, alignment="none"), data)  # noqa: E731
    here_events, there_events = [], []
    here = train_variant(job("here"), here_events.append)
    with Workers(1, there_events.append) as workers:
        workers.submit([job("there")])  # left for the worker: this process takes none of the jobs (leftovers)
        there = workers.finish()["BERT+ViT"]

    for part in ("train", "dev", "test"):
        assert there[part] == here[part], part
    expected = load_file(tmp_path / "here" / "run" / "model.safetensors")
    weights = load_file(tmp_path / "there" / "run" / "model.safetensors")
    assert weights.keys() == expected.keys() and all(torch.equal(weights[key], expected[key]) for key in expected)
    # Its progress comes back to be shown here: each step, each evaluation, and the line of the model trained.
    assert _shown(there_events) == _shown(here_events)
    assert [event[0] for event in here_events if event[0] != "step"] == ["begin", "evaluated", "evaluated", "end", "trained"]


def test_a_workers_error_is_raised_here_with_its_traceback(tiny_models, tiny_dataset, tmp_path):
    missing = tmp_path / "no-such-student"
    job = Job("BERT (text only)", tiny_options(tiny_models, tmp_path, text_model=str(missing)), load_dataset("jsonl", tiny_dataset))
    with Workers(1, lambda event: None) as workers:
        workers.submit([job])
        with pytest.raises(OptionError, match=re.escape(str(missing))) as raised:
            workers.finish()
    assert isinstance(raised.value.__cause__, WorkerTraceback) and "Traceback" in str(raised.value.__cause__)
    assert not any(process.is_alive() for process in workers.processes)


def test_without_workers_this_process_takes_every_job(tmp_path):
    jobs = [Job(name, None, None) for name in ("a", "b")]
    with Workers(0, lambda event: None) as workers:
        workers.submit(jobs)
        assert [job.name for job in workers.leftovers()] == ["a", "b"]
        assert workers.finish() == {}


def test_the_workers_end_with_the_block_that_started_them():
    with pytest.raises(KeyboardInterrupt):
        with Workers(2, lambda event: None) as workers:
            raise KeyboardInterrupt  # as a Ctrl-C, which the workers leave to this process
    assert [process.exitcode is not None for process in workers.processes] == [True, True]
