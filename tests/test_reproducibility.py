"""Reproducibility on the CPU: a run is a function of its options, data and seed, and of nothing that only changes how
the work is done (loader processes, caches, where the data lies, how often the run logs or evaluation batches); and
a run leaves the caller's random generators, the CPU's and every GPU's, as it found them."""

import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from clfa.data.registry import load_dataset
from clfa.errors import OptionError
from clfa.training import train
from conftest import tiny_options, two_gpus


def _weights(root: Path) -> dict[str, torch.Tensor]:
    return load_file(root / "run" / "model.safetensors")


def _cache_files(cache: Path) -> dict[str, int]:
    return {str(path.relative_to(cache)): path.stat().st_mtime_ns for path in cache.rglob("*") if path.is_file()}


def test_settings_that_do_not_change_the_math_leave_the_run_bit_identical(tiny_models, tiny_dataset, tmp_path):
    """The same run with warm caches; and with the data folder moved, loader workers, images decoded on the fly, other
    evaluation batches and a log line every step; and evaluated more often. The Trainer summed the step losses between
    log lines in float32: the mean train loss in metrics.json changed in its last digits with --logging-steps."""
    base = train(tiny_options(tiny_models, tmp_path / "base", epochs=3), load_dataset("jsonl", tiny_dataset))
    cache = tmp_path / "base" / "cache"
    filled = _cache_files(cache)
    assert any(name.startswith("teacher/") for name in filled) and any(name.startswith("images/") for name in filled)
    warm = train(tiny_options(tiny_models, tmp_path / "warm", epochs=3, cache_dir=str(cache)), load_dataset("jsonl", tiny_dataset))
    assert _cache_files(cache) == filled  # read, not made again
    moved = shutil.copytree(tiny_dataset, tmp_path / "elsewhere" / "data")
    other = train(tiny_options(tiny_models, tmp_path / "other", epochs=3, num_workers=2, image_cache=False, eval_batch_size=3,
                               logging_steps=1), load_dataset("jsonl", moved))
    expected = _weights(tmp_path / "base")
    for name, metrics in (("warm", warm), ("other", other)):
        assert metrics["train"] == base["train"], name
        assert (metrics["dev"], metrics["test"]) == (base["dev"], base["test"]), name
        assert Path(metrics["best_checkpoint"]).name == Path(base["best_checkpoint"]).name, name
        weights = _weights(tmp_path / name)
        assert weights.keys() == expected.keys()
        assert [key for key in expected if not torch.equal(weights[key], expected[key])] == [], name
    # Evaluating more often changes the checkpoints to keep, not the steps: evaluation draws no number training draws.
    train(tiny_options(tiny_models, tmp_path / "evaluated", epochs=3, eval_steps=2, cache_dir=str(cache)),
          load_dataset("jsonl", tiny_dataset))
    last = Path("run", "checkpoints", f"checkpoint-{base['train']['steps']}", "model.safetensors")
    weights, expected_last = load_file(tmp_path / "evaluated" / last), load_file(tmp_path / "base" / last)
    assert [key for key in expected_last if not torch.equal(weights[key], expected_last[key])] == []
    # The seed is what changes a run: another one starts from other weights and dropout.
    seeded = train(tiny_options(tiny_models, tmp_path / "seeded", epochs=3, seed=7, cache_dir=str(cache)),
                   load_dataset("jsonl", tiny_dataset))
    assert seeded["train"]["loss"] != base["train"]["loss"]
    weights = _weights(tmp_path / "seeded")
    initialised = [key for key in expected if key.startswith(("text_mapping", "image_mapping", "fusion", "classifier"))]
    assert initialised and not any(torch.equal(weights[key], expected[key]) for key in initialised)


def _seeded_draws(before=lambda: None) -> tuple:
    """Numbers drawn from Python's, NumPy's and torch's global generators seeded alike, after ``before`` ran."""
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    before()
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_train_leaves_the_callers_random_generators_as_it_found_them(tiny_models, tiny_dataset, tmp_path):
    """A run seeds the global generators for itself. Left seeded, every call handed the code after it the same
    numbers: a random search drawing a learning rate before each run drew the same one from the second run on."""
    data = load_dataset("jsonl", tiny_dataset)
    opts = tiny_options(tiny_models, tmp_path, max_steps=2)
    expected = _seeded_draws()
    assert _seeded_draws(lambda: train(opts, data)) == expected

    def refused():  # after the run has seeded them: its folder holds checkpoints
        with pytest.raises(OptionError, match="holds checkpoints of an earlier run"):
            train(opts, data)

    assert _seeded_draws(refused) == expected


@two_gpus
def test_train_leaves_the_generator_of_a_gpu_not_current_as_it_found_it(tiny_models, tiny_dataset, tmp_path):
    """A caller drawing on cuda:1 with the first GPU current (none chosen): the run seeds every GPU's generator, and
    each must be put back, not only the current GPU's."""
    data = load_dataset("jsonl", tiny_dataset)
    opts = tiny_options(tiny_models, tmp_path, max_steps=2)

    def draws(before=lambda: None) -> list[float]:
        torch.manual_seed(1)
        torch.rand(3, device="cuda:1")
        before()
        return torch.rand(3, device="cuda:1").tolist()

    with torch.cuda.device(0):
        expected = draws()
        assert draws(lambda: train(opts, data)) == expected
