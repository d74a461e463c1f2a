"""clfa: CLIP-guided contrastive cross-modal feature alignment for image+text classification.

The model is :class:`CLFAModel`, configured by :class:`CLFAConfig` (both here). A run: ``clfa.training.train`` with
``clfa.options.TrainOptions``, on data read by ``clfa.data.registry.load_dataset``. New pairs:
``clfa.predict.Predictor``. Scores: ``clfa.metrics.classification_metrics``.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clfa.configuration import CLFAConfig
    from clfa.modeling import CLFAModel, CLFAOutput

# The model classes are imported on first use (PEP 562): they load torch and transformers, seconds that `clfa --help`
# and a mistyped option should not wait for. Their modules register them with AutoConfig / AutoModel.
_LAZY = {"CLFAConfig": "clfa.configuration", "CLFAModel": "clfa.modeling", "CLFAOutput": "clfa.modeling"}

__all__ = ["CLFAConfig", "CLFAModel", "CLFAOutput"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
