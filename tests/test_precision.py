"""Which precision ``auto`` resolves to, for training and prediction."""

import pytest
import torch

from clfa.precision import process_gpu, resolve_precision
from conftest import two_gpus


def test_auto_is_fp32_on_a_cpu_and_explicit_precisions_stay_as_asked():
    assert resolve_precision("auto", "cpu") == "fp32"
    for precision in ("fp32", "bf16", "fp16"):
        assert resolve_precision(precision, "cpu") == precision
    with pytest.raises(ValueError, match="precision 'bfloat16': expected one of auto, fp32, bf16, fp16"):
        resolve_precision("bfloat16")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_auto_is_bf16_only_on_gpus_with_bf16_arithmetic():
    major, _ = torch.cuda.get_device_capability(0)
    assert resolve_precision("auto", "cuda:0") == ("bf16" if major >= 8 or torch.version.hip else "fp32")
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("auto") == resolve_precision("auto", "cuda")


def test_a_launched_process_computes_on_the_gpu_its_local_rank_picks(monkeypatch):
    """The GPU accelerate makes current in each torchrun / accelerate launch process once the Trainer's arguments are
    built; the training precision is resolved before, when the current GPU is still the first in every process."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert process_gpu() == torch.device("cuda")  # no launcher: the current GPU
    for rank, index in (("0", 0), ("1", 1), ("3", 1)):
        monkeypatch.setenv("LOCAL_RANK", rank)
        assert process_gpu() == torch.device("cuda", index), rank


@two_gpus
def test_auto_is_resolved_for_the_gpu_of_a_launched_process(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    major, _ = torch.cuda.get_device_capability(1)
    with torch.cuda.device(0):
        assert resolve_precision("auto") == ("bf16" if major >= 8 or torch.version.hip else "fp32")
        assert torch.cuda.current_device() == 0
