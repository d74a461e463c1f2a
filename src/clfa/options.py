"""Training options: the paper's settings as defaults, overridable from a YAML/JSON file and the command line."""

from __future__ import annotations

import argparse
import difflib
import json
import math
import numbers
import os
import sys
from collections.abc import Hashable
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import yaml

from clfa.errors import OptionError

# The encoders a run starts from unless told otherwise. Kept here rather than with CLFAConfig: the command's help shows
# them, and clfa.configuration imports transformers, which `clfa --help` should not wait for.
DEFAULT_TEXT_MODEL = "bert-base-uncased"
DEFAULT_IMAGE_MODEL = "google/vit-base-patch32-224-in21k"
DEFAULT_TEACHER = "openai/clip-vit-base-patch32"


def _unique_keys(pairs: list[tuple]) -> dict:
    """A JSON object, or a YAML mapping's keys, with each key once: of two values for one option, the one the
    run would silently take is the last, which the reader may not have meant."""
    keys = [key for key, _ in pairs]
    if twice := sorted({str(key) for key in keys if keys.count(key) > 1}):
        raise ValueError(f"option(s) given twice: {', '.join(twice)}")
    return dict(pairs)


class _OptionsLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice in one mapping (see _unique_keys); "<<" merges may override."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):  # the safe loader names that itself
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"option {key!r} given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # resolved by clfa.precision
# The fusions clfa.fusion registers, in its order, named here so that checking --fusion does not import torch.
BUILT_IN_FUSIONS = ("cross_attention", "concat", "co_attention", "text_only", "image_only")
# clfa.metrics.HEADLINE, named here so that reading options does not import scikit-learn.
METRICS = ("accuracy", "precision", "recall", "f1", "macro_precision", "macro_recall", "macro_f1", "weighted_f1")
# Options that must be at least 1, checked whichever way they were given.
POSITIVE = ("batch_size", "eval_batch_size", "gradient_accumulation_steps", "max_text_length", "logging_steps",
            "fusion_layers", "fusion_heads", "mapping_hidden_dim", "fusion_ffn_dim", "align_dim")


# Numbers with a range, checked whichever way they were given: (test, what it says). nan and inf fail every test.
RANGES = {
    "learning_rate": (lambda v: 0 < v < math.inf, "a finite number above 0"),
    "weight_decay": (lambda v: 0 <= v < math.inf, "a finite number, 0 or more"),
    "max_grad_norm": (lambda v: 0 <= v < math.inf, "a finite number, 0 (no clipping) or more"),
    "warmup_ratio": (lambda v: 0 <= v < 1, "a fraction of the steps, from 0 up to (not including) 1"),
    "dropout": (lambda v: 0 <= v < 1, "a probability from 0 up to (not including) 1"),
    "temperature": (lambda v: 0 < v < math.inf, "a finite number above 0 (the paper's is 0.1)"),
    "alignment_weight": (lambda v: 0 <= v < math.inf, "a finite number, 0 or more"),
    "initializer_range": (lambda v: 0 < v < math.inf, "a finite number above 0"),
    "num_workers": (lambda v: v >= 0, "0 or more"),
    "seed": (lambda v: 0 <= v < 2**32, "from 0 to 2**32 - 1"),
    "max_steps": (lambda v: v == -1 or v >= 1, "at least 1, or -1 (the default: --epochs decides)"),
    "save_total_limit": (lambda v: v >= 0, "0 (keep all) or more"),
}


def default_cache_dir() -> str:
    return os.environ.get("CLFA_CACHE", str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "clfa"))


def progress_bars(given: bool | None = None) -> bool:
    """Whether progress bars are drawn: as ``given`` (``--progress``) says, else where stderr is a terminal or in a
    Jupyter kernel, where tqdm.auto draws its bars as widgets. In a log file (``clfa train ... > run.log 2>&1``, a batch
    scheduler's output, a script's ``2> log``) every redraw of a bar would stay, as carriage returns and cursor moves."""
    if given is not None:
        return given
    try:
        if sys.stderr is not None and sys.stderr.isatty():
            return True
    except (AttributeError, ValueError):  # a stream without isatty, or one closed
        pass
    # A Jupyter kernel (notebook, lab, VS Code, qtconsole) shows tqdm.auto's bars, as widgets or, without ipywidgets,
    # as text whose redraws it folds; its stderr is no terminal. The module is the one tqdm looks for.
    return "ipykernel.zmqshell" in sys.modules


def _opt(default, help: str, factory=None, **kw):
    """An option's field; ``factory`` makes its default when an options object is made, not when this module loads."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainOptions:
    """The options of a training run; the defaults are the paper's. One field per ``clfa train`` flag, named as the
    flag without ``--`` and with underscores; the data options are not among them (see
    :func:`clfa.data.registry.load_dataset`)."""

    output_dir: str = _opt("runs/clfa", "where the final model, metrics.json and checkpoints/ go")
    # models
    text_model: str = _opt(DEFAULT_TEXT_MODEL, "text student: hub name or local dir (AutoModel + AutoTokenizer)")
    image_model: str = _opt(DEFAULT_IMAGE_MODEL, "image student: hub name or local dir (AutoModel + AutoImageProcessor)")
    teacher: str = _opt(DEFAULT_TEACHER, "frozen CLIP-style teacher: hub name or local dir")
    fusion: str = _opt("cross_attention", "aggregation: cross_attention, concat, co_attention, text_only, image_only (without "
                                      "alignment, these two run their one student alone)")
    alignment: str = _opt("clfa", "clfa (align both students with the teacher) or none", choices=("clfa", "none"))
    alignment_weight: float = _opt(1.0, "lambda in L = CE + lambda * L_align (0 = BERT+ViT baseline)")
    temperature: float = _opt(0.1, "InfoNCE temperature of the alignment loss")
    alignment_pooling: str = _opt("mean", "token pooling for the alignment loss", choices=("mean", "cls"))
    classifier_pooling: str = _opt("mean", "pooling of fused text states for the classifier", choices=("mean", "cls"))
    align_dim: int = _opt(512, "mapped feature width when no teacher is used (else the teacher's projection dim)")
    mapping_hidden_dim: int = _opt(1536, "hidden width of the mapping nets")
    fusion_layers: int = _opt(3, "cross-attention layers")
    fusion_heads: int = _opt(8, "attention heads in the fusion layers")
    fusion_ffn_dim: int = _opt(2048, "feed-forward width in the fusion layers")
    dropout: float = _opt(0.1, "dropout in fusion and classifier")
    initializer_range: float = _opt(0.02, "std of the initial weights of mapping nets, fusion and classifier")
    max_text_length: int = _opt(77, "tokens per text (texts are padded to this length)")
    # optimisation
    learning_rate: float = _opt(1e-5, "AdamW learning rate")
    weight_decay: float = _opt(0.01, "AdamW weight decay")
    warmup_ratio: float = _opt(0.1, "fraction of steps with linear warm-up, then linear decay")
    max_grad_norm: float = _opt(1.0, "clip the gradients' global norm to this before each step, 0 = no clipping (the "
                                     "paper says nothing; its released code clips at 1.0)")
    batch_size: int = _opt(8, "training batch size per device")
    eval_batch_size: int = _opt(64, "evaluation batch size per device")
    gradient_accumulation_steps: int = _opt(1, "micro-batches per optimiser step")
    epochs: float = _opt(15, "training epochs")
    max_steps: int = _opt(-1, "stop after this many optimiser steps (overrides epochs when > 0)")
    seed: int = _opt(42, "seed for initialisation, shuffling and dropout")
    metric: str = _opt("f1", "dev metric that picks the best checkpoint (f1: the positive class's in a binary task, "
                                 "weighted F1 otherwise)", choices=METRICS)
    # speed and infrastructure
    precision: str = _opt("auto", "fp32, bf16, fp16 (GPUs only), or auto (bf16 on GPUs with bf16 arithmetic: A100, H100, RTX 30xx and newer; else fp32)", choices=PRECISIONS)
    compile: bool = _opt(False, "torch.compile the model; the last partial training batch of each epoch is then dropped so shapes stay static")
    compile_mode: str | None = _opt(
        None,
        "torch.compile mode (implies --compile): reduce-overhead adds CUDA graphs (best for small batches), "
        "max-autotune also tunes kernels (slow to compile)",
        choices=("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
    )
    cuda_graph: bool = _opt(
        False,
        "on a GPU, capture the whole training step (forward, backward, clipping, AdamW) in one CUDA graph after 3 "
        "eager steps, for small batches, where the GPU otherwise waits for the host; one process, bf16 or fp32, "
        "no gradient accumulation, combines with --compile (default mode or max-autotune-no-cudagraphs); the last "
        "partial batch of each epoch is dropped",
    )
    overlap_towers: bool = _opt(
        False,
        "with --cuda-graph on a GPU: run the image student on a second CUDA stream, side by side with the text "
        "student, forward and backward (at small batches each leaves much of the GPU idle)",
    )
    fuse_linears: bool = _opt(
        False,
        "with --compile: linear layers that read the same input (attention's queries, keys and values) run as one "
        "matrix product over their concatenated weights, forward and backward: fewer, larger kernels for the same "
        "products; parameters and checkpoints are unchanged",
    )
    attention_backends: str | None = _opt(
        None,
        "PyTorch attention kernels the model may use, first supported first, comma-separated: flash, efficient, "
        "cudnn, math (default: PyTorch's choice; end with math so that every call has one; "
        "benchmarks/step_parts.py --part attention names the fastest for each of the model's calls)",
    )
    num_workers: int = _opt(2, "data loader workers")
    image_cache: bool = _opt(True, "decode and resize each image once into an on-disk uint8 cache")
    # Read when the options are made: a notebook sets CLFA_CACHE after importing clfa as often as before.
    cache_dir: str = _opt(None, "where the teacher-embedding and image caches live (env CLFA_CACHE)", factory=default_cache_dir)
    eval_steps: int | None = _opt(None, "evaluate every N steps (default: every epoch)")
    logging_steps: int = _opt(50, "log losses every N steps")
    report_to: str = _opt("tensorboard", "experiment tracker(s) for the Trainer: tensorboard, wandb, none, ...")
    save_total_limit: int = _opt(2, "checkpoints kept: at most this many, but the best and the latest always while "
                                       "training (0 keeps all; 1 leaves only the best at the end)")
    progress: bool = _opt(None, "show progress bars (default: where stderr is a terminal, or in a notebook)",
                          factory=progress_bars)

    def __post_init__(self):
        self._check_kinds()
        for name in POSITIVE:
            if getattr(self, name) < 1:
                raise OptionError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name, (ok, allowed) in RANGES.items():
            if not ok(getattr(self, name)):
                raise OptionError(f"--{name.replace('_', '-')} must be {allowed}, got {getattr(self, name)}")
        if not math.isfinite(self.epochs) or (self.epochs <= 0 and self.max_steps <= 0):
            raise OptionError(f"--epochs must be a finite number above 0 (or --max-steps set), got {self.epochs}")
        if self.eval_steps is not None and self.eval_steps < 1:
            raise OptionError(f"--eval-steps must be at least 1, got {self.eval_steps}")
        # An options file gets no shell to expand "~", which would otherwise be a folder named "~" here; no hub name
        # begins with it.
        for name in ("output_dir", "cache_dir", "text_model", "image_model", "teacher"):
            if isinstance(value := getattr(self, name), str) and value.startswith("~"):
                setattr(self, name, os.path.expanduser(value))
        for name in ("output_dir", "cache_dir"):  # "" would be the current folder, filled with a run's files
            if not getattr(self, name).strip():
                raise OptionError(f"--{name.replace('_', '-')} is empty: give a folder")
        for name in ("text_model", "image_model", "teacher"):  # "" would be read as the current folder, and named so
            if not getattr(self, name).strip():
                raise OptionError(f"--{name.replace('_', '-')} is empty: give a folder or a hub name")
        if self.compile_mode is not None:  # it implies --compile, as for the Trainer; recorded so in metrics.json
            self.compile = True
        # A registry open to new methods, so checked here rather than by argparse choices. clfa.fusion imports torch,
        # which a refused option should not wait for: a method registered there has imported it, and until then the
        # built-in ones are all there are.
        fusions = module.FUSIONS if (module := sys.modules.get("clfa.fusion")) else BUILT_IN_FUSIONS
        if self.fusion not in fusions:
            raise OptionError(f"--fusion {self.fusion}: unknown; choose from {', '.join(fusions)}")

    def _check_kinds(self) -> None:
        """Each option of its declared kind and among its choices, as the command line and an options file make them.
        From Python a wrong one would otherwise pass until far into the run (an unknown metric at the first evaluation,
        a compile mode when torch compiles, a numpy int when metrics.json is written) or fail in a bare TypeError."""
        for f in fields(self):
            value, flag = getattr(self, f.name), "--" + f.name.replace("_", "-")
            if value is None and "None" in str(f.type):
                continue
            kind = _kind(f)
            if (plain := _plain(value, kind)) is None:
                listed = isinstance(value, (list, tuple)) and kind is str
                several = " (several values are one comma-separated text)" if listed else ""
                raise OptionError(f"{flag} must be {_KIND_NAMES[kind]}, got {value!r}{several}")
            if (choices := f.metadata.get("choices")) and plain not in choices:
                raise OptionError(f"{flag} must be one of {', '.join(choices)}, got {value!r}")
            setattr(self, f.name, plain)

    @classmethod
    def from_file(cls, path: str | Path) -> dict:
        """Options from a YAML or JSON file, each converted as its command-line flag converts it (``1e-5`` is a
        number, ``no`` is false); unknown keys, values of the wrong kind and unreadable files are errors naming the
        file and the option."""
        path = Path(path)
        if path.is_dir():  # else named by the system's "[Errno 21] Is a directory"
            raise OptionError(f"{path}: a folder, not an options file (a YAML or JSON file of options)")
        try:
            text = path.read_text(encoding="utf-8")
            data = json.loads(text, object_pairs_hook=_unique_keys) if path.suffix == ".json" else yaml.load(text, _OptionsLoader)
        except yaml.MarkedYAMLError as exc:
            where = f" (line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1})" if exc.problem_mark else ""
            raise OptionError(f"{path}: cannot read options: {exc.problem or exc.context}{where}") from None
        except UnicodeDecodeError as exc:  # its own message counts bytes from the file's start, not lines
            line = exc.object[: exc.start].count(b"\n") + 1
            raise OptionError(f"{path}: cannot read options: not UTF-8 text at line {line} (byte {exc.object[exc.start]:#04x}); "
                              "save the file as UTF-8") from None
        except (OSError, json.JSONDecodeError, yaml.YAMLError, ValueError) as exc:
            raise OptionError(f"{path}: cannot read options: {' '.join(str(exc).split()) or type(exc).__name__}") from None
        if data is None:  # an empty file: no options
            return {}
        if not isinstance(data, dict):
            raise OptionError(f"{path}: expected a mapping of option names to values")
        by_name = {f.name: f for f in fields(cls)}
        if unknown := sorted(map(str, set(data) - set(by_name))):
            hints = [f"{name} (write {name.replace('-', '_')})" for name in unknown if name.replace("-", "_") in by_name]
            near = [f"{name} ({' or '.join(close)}?)" for name in unknown if name.replace("-", "_") not in by_name
                    and (close := [_SHORT_NAMES[name]] if name in _SHORT_NAMES else
                         difflib.get_close_matches(name, by_name, n=2, cutoff=0.75))]
            data_flags = [name for name in unknown if name.replace("-", "_") in ("dataset", "data_dir")]
            # Options grouped under headings, as other tools' files are (training: {epochs: 3}).
            grouped = [value for key, value in data.items() if str(key) in unknown and isinstance(value, dict)]
            nested = sorted({name for value in grouped for key in value if (name := str(key).replace("-", "_")) in by_name})
            raise OptionError(f"{path}: unknown option(s) {unknown}"
                              + (f"; keys are written with underscores: {', '.join(hints)}" if hints else "")
                              + (f"; did you mean: {', '.join(near)}" if near else "")
                              + ("; the data is given on the command line (--dataset, --data-dir)" if data_flags else "")
                              + ("; options are flat keys, named as the command-line flags (e.g. epochs: 3), not grouped "
                                 "under headings" if grouped else "")
                              + (f": write {', '.join(nested)} at the top level" if nested else ""))
        return {name: _from_file_value(by_name[name], value, path) for name, value in data.items()}

    def to_dict(self) -> dict:
        """The options by name, as metrics.json records them."""
        return asdict(self)


def _kind(f) -> type:
    """The converter of an option's text: its declared type (``int``, ``float``, ``bool``, ``str``, or ``X | None``)."""
    return {"bool": parse_bool, "int": int, "float": float}.get(str(f.type).split(" ")[0], str)


def _plain(value, kind):
    """``value`` as the plain Python value an option of ``kind`` holds, or None if it is not one: numpy numbers become
    int or float and paths text, as the options are written to JSON (metrics.json, each checkpoint's record)."""
    if kind is parse_bool:
        # numpy's booleans too (a grid of settings made with numpy); a numpy value means numpy is loaded already.
        numpy = sys.modules.get("numpy")
        return bool(value) if isinstance(value, bool) or (numpy is not None and isinstance(value, numpy.bool_)) else None
    if isinstance(value, bool):  # an int to Python, but no count or rate
        return None
    if kind is int:
        whole = isinstance(value, numbers.Integral) or (isinstance(value, numbers.Real) and float(value).is_integer())
        return int(value) if whole else None
    if kind is float:
        return float(value) if isinstance(value, numbers.Real) else None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    return value if isinstance(value, str) else None


def _from_file_value(f, value, path: Path):
    if value is None:
        if "None" in str(f.type):
            return None
        raise OptionError(f"{path}: {f.name}: a value is needed")
    kind = _kind(f)
    # A list or mapping is no option's value: as text it would become its repr ("['none']").
    if (isinstance(value, bool) and kind is not parse_bool) or isinstance(value, (list, dict)):
        several = " (several values are one comma-separated text)" if isinstance(value, list) and kind is str else ""
        raise OptionError(f"{path}: {f.name}: expected {_KIND_NAMES[kind]}, got {value!r}{several}")
    try:
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        converted = kind(str(value)) if kind in (parse_bool, str) else kind(value)
    except (ValueError, TypeError, argparse.ArgumentTypeError):
        raise OptionError(f"{path}: {f.name}: expected {_KIND_NAMES[kind]}, got {value!r}") from None
    if (choices := f.metadata.get("choices")) and converted not in choices:
        raise OptionError(f"{path}: {f.name}: expected one of {', '.join(choices)}, got {value!r}")
    return converted


def _int_at_least(text: str, minimum: int, bound: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
    return value


def whole_number(text: str) -> int:
    """argparse type: a whole number of at least 0."""
    return _int_at_least(text, 0, "0 or more")


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    return _int_at_least(text, 1, "at least 1")


def parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_option_arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per option. Defaults are left unset so that a config file can sit between the
    built-in defaults and the command line."""
    group = parser.add_argument_group("training options (defaults: the paper's settings)")
    for f in fields(TrainOptions):
        if f.name in skip:
            continue
        kind = _kind(f)
        group.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=kind,
            default=argparse.SUPPRESS,
            choices=f.metadata.get("choices"),
            metavar="{" + ",".join(f.metadata["choices"]) + "}" if f.metadata.get("choices") else
            f.name.upper() if kind is not parse_bool else "{true,false}",
            help=f.metadata["help"] if "(default:" in f.metadata["help"] else f"{f.metadata['help']} (default: {_default(f)})",
        )


def _default(f):
    return f.default if f.default is not MISSING else f.default_factory() if f.default_factory is not MISSING else None


def options_from_args(args: argparse.Namespace, config_file: str | None = None) -> TrainOptions:
    from_file = TrainOptions.from_file(config_file) if config_file else {}
    given = {f.name: getattr(args, f.name) for f in fields(TrainOptions) if hasattr(args, f.name)}
    try:
        return TrainOptions(**(from_file | given))
    except OptionError as err:
        # A value out of range is named by its flag; one that came from the file is named where it is written.
        flag, _, problem = str(err).partition(" ")
        if (name := flag.removeprefix("--").replace("-", "_")) in from_file and name not in given:
            raise OptionError(f"{config_file}: {name}: {problem}") from None
        raise


# Names other tools give some options, which no spelling distance leads to.
_SHORT_NAMES = {"lr": "learning_rate", "bs": "batch_size", "wd": "weight_decay", "num_epochs": "epochs",
                "num_train_epochs": "epochs", "train_batch_size": "batch_size", "per_device_train_batch_size": "batch_size"}


_KIND_NAMES = {int: "a whole number", float: "a number", parse_bool: "true or false", str: "text"}
