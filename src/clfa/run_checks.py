"""What a training run is refused for before it loads a model or fills a cache: a task it cannot learn or score,
model options that name no model or the wrong kind of one, a text student whose first token cannot pool the text,
folders that cannot be written, experiment trackers that cannot run."""

from __future__ import annotations

import difflib
import logging
import os
import tempfile
from collections import Counter
from pathlib import Path

from clfa.configuration import CLFAConfig
from clfa.data.registry import DatasetSplits, labels_read_from_data
from clfa.data.records import DataError, record_error
from clfa.errors import OptionError, first_line
from clfa.hub import lookup_problem
from clfa.modeling import first_token_reads_the_text
from clfa.options import TrainOptions

logger = logging.getLogger(__name__)


def uses_teacher(opts: TrainOptions) -> bool:
    return opts.alignment != "none" and opts.alignment_weight > 0


def _unwritable(folder: Path) -> str | None:
    """Why nothing can be written in ``folder`` (or where it would be made), or None: found by making and removing a
    folder there, as permissions alone do not tell (a read-only file system, /proc), and without leaving ``folder``
    behind for a run that is refused later."""
    nearest = next(place for place in (folder, *folder.parents) if place.exists())
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".clfa-", dir=nearest))
    except OSError as err:
        return f"{'it' if nearest == folder else 'it would be made in ' + str(nearest) + ', which'} cannot be written ({err.strerror or err})"
    return None


def check_folders(opts: TrainOptions) -> None:
    """The output folder, and the cache folder where a cache is kept, can be made and written."""
    for option, folder in (("--output-dir", Path(opts.output_dir)), ("--cache-dir", Path(opts.cache_dir))):
        if folder.exists() and not folder.is_dir():
            raise OptionError(f"{option} {folder}: a file, not a folder")
        # A file above it would stop the run with a bare NotADirectoryError once the models are loaded.
        if above := next((parent for parent in folder.parents if parent.exists() and not parent.is_dir()), None):
            raise OptionError(f"{option} {folder}: {above} is a file, so the folder cannot be made there")
        # The cache folder only where a cache is kept: a run without one must not fail on it.
        if (option == "--output-dir" or opts.image_cache or uses_teacher(opts)) and (problem := _unwritable(folder)):
            raise OptionError(f"{option} {folder}: {problem}")


def check_task(opts: TrainOptions, data: DatasetSplits) -> None:
    """A task the run cannot learn or score is refused before the models load, not found out at the first evaluation."""
    # The readers refuse a label outside the task's; a DatasetSplits made by hand may hold one, which would otherwise
    # stop the run at a KeyError once the models have loaded and the caches are filled.
    for split, records in data.splits.items():
        if stray := next((record for record in records if record.label is not None and record.label not in data.labels), None):
            raise record_error(stray, f"record '{stray.id}' of the {split} split has the label {stray.label!r}, which is not "
                                      f"one of the task's labels ({', '.join(map(repr, data.labels))})")
    counts = Counter(record.label for record in data["train"])
    seen = sorted(counts)
    if len(seen) < 2:
        raise DataError(f"dataset '{data.name}': the train split has {len(data['train'])} record(s) and "
                        f"{'only the label ' + repr(seen[0]) if seen else 'no labels'}; a classifier needs at least two")
    # A label on a handful of records among thousands is most often a typo, which would make a class of its own (a
    # label set given beforehand makes it an error instead).
    rare = [label for label, count in counts.items() if count < 10 and count * 100 < len(data["train"])]
    for label in sorted(rare) if labels_read_from_data(data) else ():
        # Numbers are classes by design ("1" is not a typo of "10").
        near = [] if label.isdigit() else difflib.get_close_matches(label, [other for other in seen if other != label], n=1, cutoff=0.6)
        logger.warning("the label %r is on %d of the %d train records: a class of its own%s", label, counts[label],
                       len(data["train"]), f" (a typo of {near[0]!r}?)" if near else "")
    if unseen := [label for label in data.labels if label not in seen]:
        logger.warning("no train record has the label(s) %s: the model cannot learn to predict %s", ", ".join(map(repr, unseen)),
                       "it" if len(unseen) == 1 else "them")
    if opts.metric in ("precision", "recall") and data.positive_label is None and data.splits.get("dev"):
        name_one = "name one with --positive-label, or " if len(data.labels) == 2 else ""
        raise OptionError(f"--metric {opts.metric} is that of the positive class, and this task of {len(data.labels)} labels "
                          f"({', '.join(data.labels)}) has none: {name_one}use macro_{opts.metric}")


def check_models(opts: TrainOptions) -> None:
    """Each model option names a model folder or a hub model (its config is read, nothing more): a wrong path is one
    line naming the option, not a traceback from deep in the loading."""
    from transformers import AutoConfig

    models = {"--text-model": opts.text_model, "--image-model": opts.image_model}
    if uses_teacher(opts):
        models["--teacher"] = opts.teacher
    for flag, name in models.items():
        if problem := lookup_problem(name):
            raise OptionError(f"{flag} {name}: {problem}")
        try:
            config = AutoConfig.from_pretrained(name)
        except (OSError, ValueError) as err:
            raise OptionError(f"{flag} {name}: not a model folder, nor a model the hub gave ({first_line(err)})") from None
        if problem := _wrong_kind(flag, config):
            raise OptionError(f"{flag} {name}: {problem}")


def _wrong_kind(flag: str, config) -> str | None:
    """Why a model cannot serve as ``flag`` (None if it can), from its config: a text student reads token ids, an
    image student pixels into patch tokens, and the teacher is a CLIP-style dual encoder with a joint embedding space."""
    kind = getattr(config, "model_type", "") or type(config).__name__
    dual = hasattr(config, "text_config") and hasattr(config, "vision_config")
    if flag == "--teacher":
        # A single CLIP tower "with projection" has projection_dim too, but no text and image pair to embed.
        return None if dual and hasattr(config, "projection_dim") else \
            f"a {kind} model, not a CLIP-style dual encoder (text and vision towers with a projection_dim)"
    if hasattr(config, "text_config") or hasattr(config, "vision_config"):
        return f"a {kind} model of several towers; a student is one encoder: give the folder or name of one tower"
    is_image = hasattr(config, "image_size")
    if flag == "--text-model" and (is_image or not hasattr(config, "vocab_size")):
        return f"a {kind} model without a token vocabulary, not a text encoder"
    if flag == "--image-model" and not is_image:
        return f"a {kind} model without an image_size, not a ViT-style image encoder (patch tokens in, features out)"
    if flag == "--image-model" and not hasattr(config, "hidden_size"):
        return (f"a {kind} model whose features come in several widths (a pyramid of feature maps, as a convolutional "
                "network's), not a ViT-style image encoder (patch tokens of one width)")
    if not hasattr(config, "hidden_size"):
        return f"a {kind} model without a hidden_size, the one width of its tokens that the mapping net reads"
    from transformers.models.auto.modeling_auto import MODEL_FOR_TEXT_ENCODING_MAPPING_NAMES, MODEL_MAPPING_NAMES

    if getattr(config, "is_encoder_decoder", False) and kind not in MODEL_FOR_TEXT_ENCODING_MAPPING_NAMES:
        return f"a {kind} encoder-decoder whose encoder transformers cannot load alone (AutoModelForTextEncoding)"
    if kind not in MODEL_MAPPING_NAMES:
        return f"a {kind} model, which transformers' AutoModel cannot build; a student is an AutoModel encoder"
    return None


def check_text_student(opts: TrainOptions, config: CLFAConfig, tokenizer, text_model) -> None:
    """What a text student's config does not tell: its tokenizer pads, and, for a ``cls`` pooling, its first token
    reads the text. Checked before the teacher and image caches are filled, which can take long."""
    if tokenizer.pad_token is None:
        raise OptionError(f"--text-model {opts.text_model}: its tokenizer has no padding token, and texts are padded to "
                          "--max-text-length; save the tokenizer with one (e.g. tokenizer.pad_token = tokenizer.eos_token)")
    # Where a cls pooling reads the text's first token: the classifier's, through these fusions; the alignment's,
    # whenever the students are aligned.
    pools_first = [flag for flag, reads_text in (
        ("--classifier-pooling cls", config.classifier_pooling == "cls" and config.fusion in ("cross_attention", "concat", "text_only")),
        ("--alignment-pooling cls", config.alignment_pooling == "cls" and config.uses_alignment)) if reads_text]
    if not pools_first:
        return
    if tokenizer.padding_side == "left":
        raise OptionError(f"{' and '.join(pools_first)}: the tokenizer of --text-model {opts.text_model} pads on the "
                          "left, so a short text's first token is padding; use mean")
    if not first_token_reads_the_text(text_model):
        raise OptionError(f"{' and '.join(pools_first)}: --text-model {opts.text_model} is a causal encoder, whose "
                          "first token does not see the text after it; use mean")


def experiment_trackers(report_to: str) -> list[str]:
    """``--report-to`` as the Trainer takes it, checked before any work: a tracker transformers does not know, or
    whose package is not installed, is an :class:`OptionError` rather than a traceback once the models have loaded."""
    from transformers.integrations import integration_utils as hf

    names = [name.strip() for name in report_to.split(",") if name.strip()]
    if names in ([], ["none"]):
        return []
    if names == ["all"]:
        return names
    if unknown := [name for name in names if name not in hf.INTEGRATION_TO_CALLBACK]:
        raise OptionError(f"--report-to {report_to}: unknown tracker(s) {unknown}; choose from none, all, "
                          + ", ".join(hf.INTEGRATION_TO_CALLBACK))
    available = set(hf.get_available_reporting_integrations())
    # That list leaves azure_ml out beside mlflow, and flyte always: those are asked directly.
    for name, check in (("azure_ml", "is_azureml_available"), ("flyte", "is_flytekit_available")):
        if getattr(hf, check, lambda: True)():
            available.add(name)
    if missing := [name for name in names if name not in available]:
        raise OptionError(f"--report-to {report_to}: {', '.join(missing)} cannot run here (its package is not installed, "
                          "or for kubeflow its server is not set); install it, or use --report-to none")
    return names
