"""A CLFA model's settings (clfa.configuration): the choices it refuses, and the kinds of value it keeps."""

import pytest

from clfa import CLFAConfig, CLFAModel
from conftest import make_model


def test_config_rejects_unknown_choices():
    with pytest.raises(ValueError, match="alignment_pooling"):
        CLFAConfig(alignment_pooling="max")


def test_numpy_settings_are_taken_as_plain_numbers_and_saved(tiny_models, tmp_path):
    """A sweep's values are often numpy numbers: they are settings of the right kind, and a model of them must save
    (json cannot write a numpy number), not fail after its training."""
    import numpy as np

    model = make_model(tiny_models, fusion_heads=np.int64(2), dropout=np.float32(0.25), temperature=np.float64(0.2))
    assert [type(getattr(model.config, name)) for name in ("fusion_heads", "dropout", "temperature")] == [int, float, float]
    model.save_pretrained(tmp_path)
    assert CLFAModel.from_pretrained(tmp_path).config.dropout == 0.25
