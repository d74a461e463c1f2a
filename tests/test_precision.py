"""Which precision ``auto`` resolves to, for training and prediction."""

import pytest
import torch

from clfa.precision import resolve_precision


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
