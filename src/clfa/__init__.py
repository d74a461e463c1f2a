"""clfa: CLIP-guided contrastive cross-modal feature alignment for image+text classification."""

from transformers import AutoConfig, AutoModel

from clfa.configuration import CLFAConfig
from clfa.modeling import CLFAModel, CLFAOutput

# Lets AutoConfig / AutoModel open saved CLFA models like any other transformers checkpoint.
AutoConfig.register("clfa", CLFAConfig, exist_ok=True)
AutoModel.register(CLFAConfig, CLFAModel, exist_ok=True)

__all__ = ["CLFAConfig", "CLFAModel", "CLFAOutput"]
__version__ = "0.1.0"
