"""CLFAConfig: everything that defines a CLFA classifier, saved next to its weights."""

from __future__ import annotations

import numbers

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from clfa.errors import OptionError

# Training options that are model settings: they go into CLFAConfig under the same name.
MODEL_OPTIONS = (
    "mapping_hidden_dim", "fusion", "fusion_layers", "fusion_heads", "fusion_ffn_dim", "dropout", "initializer_range",
    "classifier_pooling", "alignment", "alignment_pooling", "alignment_weight", "temperature", "max_text_length",
)


_WHOLE, _NUMBER, _TEXT = (numbers.Integral, "a whole number"), (numbers.Real, "a number"), (str, "text")
_KINDS = {"align_dim": _WHOLE, "mapping_hidden_dim": _WHOLE, "fusion_layers": _WHOLE, "fusion_heads": _WHOLE,
          "fusion_ffn_dim": _WHOLE, "max_text_length": _WHOLE, "dropout": _NUMBER, "initializer_range": _NUMBER,
          "alignment_weight": _NUMBER, "temperature": _NUMBER, "fusion": _TEXT, "classifier_pooling": _TEXT,
          "alignment": _TEXT, "alignment_pooling": _TEXT}


@strict
class CLFAConfig(PreTrainedConfig):
    r"""Configuration of a :class:`CLFAModel`. Defaults are the paper's settings.

    Args:
        text_config / image_config: configs of the student encoders (any ``AutoModel`` text / vision encoder).
        align_dim: width of the mapped student features = the teacher's projection dim (512 for CLIP ViT-B/32).
        mapping_hidden_dim: hidden width of the two-layer mapping nets (1536).
        fusion: aggregation method by name: ``cross_attention`` (the paper's), ``concat``, ``co_attention``,
            or the single-modality baselines ``text_only`` / ``image_only``.
        fusion_layers / fusion_heads / fusion_ffn_dim: cross-attention stack shape (3 layers, 8 heads, FFN 2048).
        dropout: dropout in fusion and classifier (0.1).
        initializer_range: std of the normal initialisation of the mapping nets, fusion and classifier (the
            encoders keep their own weights); small models trained from scratch want a larger one.
        classifier_pooling: how fused text states are pooled for the classifier: ``mean`` (masked) or ``cls``.
        alignment: ``clfa`` (align both students with the teacher) or ``none``.
        alignment_pooling: how mapped tokens are pooled for the alignment loss: ``mean`` (as the released code) or ``cls``.
        alignment_weight: lambda in L = CE + lambda * L_align (1.0; 0 gives the BERT+ViT baseline).
        temperature: InfoNCE temperature (0.1).
        max_text_length: tokens per text (77).
        positive_label: for binary tasks, the class whose precision / recall / F1 are reported.
        normalize_text: the training texts were rewritten by ``--normalize-text`` (MMSD's placeholders as words);
            prediction rewrites its texts the same way, so that the model sees what it learnt from. ``None``: not
            known (a config saved before this was recorded); :meth:`CLFAModel.from_encoders` makes new ones False.
        text_model_name / image_model_name / teacher_model_name: where the encoders and teacher came from.
    """

    model_type = "clfa"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="bert"),
        "image_config": SubConfigSpec(config_class=AutoConfig, model_type="vit"),
    }

    text_config: PreTrainedConfig | dict | None = None
    image_config: PreTrainedConfig | dict | None = None
    align_dim: int = 512
    mapping_hidden_dim: int = 1536
    fusion: str = "cross_attention"
    fusion_layers: int = 3
    fusion_heads: int = 8
    fusion_ffn_dim: int = 2048
    dropout: float = 0.1
    initializer_range: float = 0.02
    classifier_pooling: str = "mean"
    alignment: str = "clfa"
    alignment_pooling: str = "mean"
    alignment_weight: float = 1.0
    temperature: float = 0.1
    max_text_length: int = 77
    positive_label: str | None = None
    normalize_text: bool | None = None
    text_model_name: str | None = None
    image_model_name: str | None = None
    teacher_model_name: str | None = None

    def __post_init__(self, **kwargs):
        # transformers reads a student's config as a mapping, and fails on text or a number with an AttributeError.
        for name in ("text_config", "image_config"):
            if (value := getattr(self, name)) is not None and not isinstance(value, (dict, PreTrainedConfig)):
                raise OptionError(f"CLFAConfig.{name} must be an object of the student's settings, got {value!r}")
        super().__post_init__(**kwargs)
        # Not checked by @strict on this class: a value of another kind (a config.json edited by hand) would otherwise
        # fail in building the layers, naming neither the file nor the setting.
        for name, (kind, said) in _KINDS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, kind):
                raise OptionError(f"CLFAConfig.{name} must be {said}, got {value!r}")
            if type(value) not in (int, float, str):  # a numpy number, which config.json could not be written with
                plain = int if isinstance(value, numbers.Integral) else float if kind is numbers.Real else str
                setattr(self, name, plain(value))
        choices = {
            "classifier_pooling": ("mean", "cls"),
            "alignment_pooling": ("mean", "cls"),
            "alignment": ("clfa", "none"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise OptionError(f"CLFAConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.align_dim % self.fusion_heads:
            # With a teacher, align_dim is its projection size, not --align-dim: say where the number comes from.
            raise OptionError(f"--fusion-heads {self.fusion_heads} must divide the aligned feature size, {self.align_dim} "
                              "(the teacher's projection size, or --align-dim without alignment)")

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        # transformers only warns when another model's config.json is read as this one, and the model then loads with
        # random weights (a BERT folder) or fails in a long load report (a BERT config beside CLFA weights).
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        if (kind := config_dict.get("model_type", cls.model_type)) != cls.model_type:
            raise OptionError(f"{pretrained_model_name_or_path}: a '{kind}' model, not a CLFA model (its config.json says "
                              f"model_type '{kind}')")
        return config_dict, kwargs

    @property
    def uses_alignment(self) -> bool:
        """Whether training adds the alignment loss (``alignment`` is ``clfa`` and its weight above 0)."""
        return self.alignment != "none" and self.alignment_weight > 0

    @property
    def modalities(self) -> tuple[str, ...]:
        """The students the model runs: both, except in a single-modality baseline without alignment, which never
        reads the other one."""
        if not self.uses_alignment and self.fusion in ("text_only", "image_only"):
            return (self.fusion.removesuffix("_only"),)
        return ("text", "image")

    @property
    def labels(self) -> list[str]:
        """The class names, in class-index order (the order of the logits and of the predicted probabilities)."""
        return [self.id2label[i] for i in range(self.num_labels)]


def label_problem(settings: dict) -> str | None:
    """What is wrong with the labels of a saved config.json (``settings``, as read), or None. transformers names the
    classes of a config without them LABEL_0, LABEL_1 ..., and takes ids as it finds them: a model whose labels are
    missing or do not number its classes would answer with names it never learnt, or fail on a class it cannot name."""
    id2label, label2id = settings.get("id2label"), settings.get("label2id")
    if id2label in (None, {}) or label2id in (None, {}):
        return "no labels (id2label and label2id, which a CLFA model records): its classes would be named LABEL_0, LABEL_1, ..."
    if not isinstance(id2label, dict) or not isinstance(label2id, dict):
        return f"id2label and label2id must be objects (class id: name, name: class id), got {id2label!r} and {label2id!r}"
    if set(map(str, id2label)) != set(map(str, range(len(id2label)))):
        return f"id2label must number the classes from 0 to {len(id2label) - 1}, got ids {', '.join(map(str, id2label))}"
    names = [id2label[key] for key in sorted(id2label, key=int)]
    if not all(isinstance(name, str) and name for name in names) or len(set(names)) != len(names):
        return f"id2label must name each class once, in text, got {names!r}"
    if label2id != {name: i for i, name in enumerate(names)}:
        return f"label2id {label2id!r} does not match id2label, whose classes are {names!r} in id order"
    if (count := settings.get("num_labels", len(names))) != len(names):
        return f"num_labels is {count!r}, but id2label names {len(names)} classes"
    return None


# Lets AutoConfig open saved CLFA models like any other transformers checkpoint, wherever CLFAConfig is used.
AutoConfig.register("clfa", CLFAConfig, exist_ok=True)

__all__ = ["CLFAConfig", "label_problem"]
