"""Benchmark runs started together warm up side by side, then time their steps one at a time (benchmarks/turns.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

# One run: joins, "warms up" (sleeps, or fails), then holds the turn for a while and gives it back, or drops its
# Turns object and leaves the turn to the end of the process; prints its times as JSON.
RUN = """
import gc, json, sys, time
sys.path.insert(0, sys.argv[1])
from turns import Turns
folder, warm, hold, patience, give = sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6] == "give"
turns = Turns(folder, patience=patience, poll=0.01)
time.sleep(warm)
if warm < 0.3:
    raise SystemExit("failed while warming up")
warmed = time.time()
turns.take()
start = time.time()
alongside, waited = turns.waited_for, turns.seconds_waited
if not give:  # the object gone
    del turns
    gc.collect()
time.sleep(hold)
end = time.time()
if give:
    turns.give()
print(json.dumps(dict(warmed=warmed, start=start, end=end, alongside=alongside, waited=waited)))
"""


def start_runs(folder: Path, warms: list[float], hold: float = 0.3, patience: float = 60.0, give: bool = True) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", RUN, str(BENCHMARKS), str(folder), str(warm), str(hold), str(patience),
                              "give" if give else "keep"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for warm in warms]


def results(runs: list[subprocess.Popen]) -> list[dict]:
    out = []
    for run in runs:
        stdout, stderr = run.communicate(timeout=60)
        out.append(json.loads(stdout) if run.returncode == 0 else {"failed": stderr.strip().splitlines()[-1]})
    return out


def test_runs_time_one_at_a_time_after_all_have_warmed_up(tmp_path):
    times = results(start_runs(tmp_path, [0.5, 1.0, 1.5, 0.5]))
    last_warmed = max(t["warmed"] for t in times)
    assert all(t["start"] >= last_warmed for t in times)
    spans = sorted((t["start"], t["end"]) for t in times)
    assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:]))
    assert all(t["alongside"] == [] for t in times)
    # The first to warm up waited for the slowest (1.5 s) and then, at worst, for three turns of 0.3 s.
    assert max(t["waited"] for t in times) >= 0.9


def test_a_turn_not_given_back_lasts_until_its_process_has_ended(tmp_path):
    """Even once its Turns object is freed, as it is during an interpreter's exit, which is host work too."""
    times = results(start_runs(tmp_path, [0.5, 0.5, 0.5], give=False))
    spans = sorted((t["start"], t["end"]) for t in times)
    assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:]))


def test_a_run_that_fails_while_warming_up_holds_nobody_up(tmp_path):
    began = time.monotonic()
    times = results(start_runs(tmp_path, [0.5, 0.1, 0.5], patience=60.0))
    assert times[1] == {"failed": "failed while warming up"}
    assert time.monotonic() - began < 30  # not the 60 s of patience
    assert [t["alongside"] for t in (times[0], times[2])] == [[], []]


def test_after_its_patience_a_run_times_alongside_runs_still_warming_up_and_says_which(tmp_path):
    slow, quick = start_runs(tmp_path, [60.0, 0.5], patience=1.0)
    try:
        (timed,) = results([quick])
    finally:
        slow.kill()
        slow.wait()
    assert timed["alongside"] == [slow.pid]
    assert 1.0 <= timed["waited"] < 30
