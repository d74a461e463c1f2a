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


def test_predict_throughput_times_a_cold_start_in_a_new_process(tmp_path):
    command = [sys.executable, str(BENCHMARKS / "predict_throughput.py"), "--size", "tiny", "--devices", "cpu", "--batch-sizes",
               "1", "--batches", "1", "--warmup", "0", "--threads", "1", "--cold-start", "--json"]
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    *printed, last = run.stdout.strip().splitlines()
    (start,) = json.loads(last)["cold_starts"]
    assert all(start[key] > 0 for key in ("import_s", "load_s", "first_pair_s", "second_pair_s"))
    assert sum(line.startswith(" cpu cold start: import ") for line in printed) == 1
    assert list(tmp_path.iterdir()) == []  # the model saved for the new process is gone


def test_step_bytes_refuses_an_unknown_compile_mode_before_building_anything(tmp_path):
    command = [sys.executable, str(BENCHMARKS / "step_bytes.py"), "--size", "tiny", "--device", "cpu", "--mode", "fastest"]
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "argument --mode: invalid choice: 'fastest'" in run.stderr


def test_help_and_refused_options_answer_before_torch_is_imported():
    # Each script reads its command line first: torch, transformers and clfa's training modules take seconds to load.
    runs = [
        ("train_throughput.py", ["--help"]), ("train_throughput.py", ["--device", "cpu", "--warmup", "0"]),
        ("train_throughput.py", ["--device", "cpu", "--attention-backends", "flash,fast"]),
        ("step_bytes.py", ["--help"]), ("step_bytes.py", ["--device", "cpu", "--batch-size", "8", "8"]),
        ("step_parts.py", ["--help"]), ("step_parts.py", ["--device", "cpu", "--repeats", "0"]),
        ("predict_throughput.py", ["--help"]), ("predict_throughput.py", ["--devices", "cpu", "--attention-backends", "fast"]),
        ("data_throughput.py", ["--help"]), ("data_throughput.py", ["--image-size", "0x1"]),
    ]
    script = f"""
import json, runpy, sys
sys.path.insert(0, {str(BENCHMARKS)!r})  # as for a script run from its folder
statuses = []
for name, argv in {runs!r}:
    sys.argv = [name, *argv]
    try:
        runpy.run_path({str(BENCHMARKS)!r} + "/" + name, run_name="__main__")
    except SystemExit as exit_:
        statuses.append(exit_.code)
print(json.dumps([statuses, [name for name in ("torch", "transformers", "accelerate", "sklearn") if name in sys.modules]]))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    statuses, imported = json.loads(run.stdout.splitlines()[-1])
    assert imported == []
    assert statuses == [0 if argv == ["--help"] else 2 for _, argv in runs]
    for message in ("--warmup and --steps must be at least 1", "unknown backend(s) ['fast']", "--batch-size needs two different batch sizes",
                    "argument --repeats: must be at least 1", "argument --image-size: each side must be at least 1 pixel"):
        assert message in run.stderr


@pytest.mark.parametrize("script, argv, said", [
    ("step_parts.py", ["--rep", "0"], "unrecognized arguments: --rep 0"),
    ("data_throughput.py", ["--cache", "0"], "unrecognized arguments: --cache 0"),
])
def test_a_prefix_of_a_flag_is_refused(tmp_path, script, argv, said):
    # Taken for the flag it begins, a mistyped flag would run a benchmark other than the one asked for.
    run = subprocess.run([sys.executable, str(BENCHMARKS / script), *argv], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2
    assert said in run.stderr
