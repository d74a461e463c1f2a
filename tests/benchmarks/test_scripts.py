"""The benchmark scripts run as a user runs them: from another folder, at tiny size, on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_both_training_paths_print_their_profiles_and_end_with_one_json_object(tmp_path):
    command = [sys.executable, str(BENCHMARKS / "train_throughput.py"), "--size", "tiny", "--device", "cpu", "--warmup", "1",
               "--steps", "1", "--workers", "0", "--threads", "1", "--unique", "8", "--profile", "1", "--json"]
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    *printed, last = run.stdout.strip().splitlines()
    result = json.loads(last)
    assert (result["fast"]["path"], result["naive"]["path"]) == ("fast", "naive")
    ratio = result["fast"]["samples_per_s"] / result["naive"]["samples_per_s"]
    assert result["speedup"] == pytest.approx(ratio, rel=1e-2, abs=1e-3)
    assert sum(line.startswith("profiled 1 steps") for line in printed) == 2  # one profile per path
    assert not any(line.startswith("{") for line in printed)


def test_gpu_check_writes_into_a_relative_folder_where_it_is_called_and_refuses_an_unknown_stage(tmp_path):
    script = BENCHMARKS / "gpu_check.sh"
    env = dict(os.environ, SIZE="tiny", DEVICE="cpu", PYTHON=sys.executable)
    refused = subprocess.run(["bash", str(script), "out", "predcit"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert "unknown stage 'predcit'" in refused.stderr
    assert not (tmp_path / "out").exists()

    run = subprocess.run(["bash", str(script), "out", "predict"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    runs = json.loads((tmp_path / "out" / "predict.log").read_text().splitlines()[-1])["runs"]
    assert [r["batch_size"] for r in runs] == [1, 64]
    assert not (BENCHMARKS.parent / "out").exists()


def test_step_bytes_refuses_an_unknown_compile_mode_before_building_anything(tmp_path):
    command = [sys.executable, str(BENCHMARKS / "step_bytes.py"), "--size", "tiny", "--device", "cpu", "--mode", "fastest"]
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "argument --mode: invalid choice: 'fastest'" in run.stderr
