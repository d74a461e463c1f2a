"""The parser of ``clfa`` and of its commands, and the nearest flags named for a mistyped one."""

from __future__ import annotations

import argparse
import difflib

from clfa.cli.demo import demo_command
from clfa.cli.evaluate import evaluate_command
from clfa.cli.export import export_command
from clfa.cli.heatmap import heatmap_command
from clfa.cli.predict import predict_command
from clfa.cli.train import train_command
from clfa.data.arguments import add_dataset_arguments
from clfa.launch import first_on_this_machine


def _attention_backends(text: str) -> str:
    from clfa.attention_backends import check_attention_backends

    try:
        check_attention_backends(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


_MODEL_HELP = "the folder clfa train wrote (its --output-dir), one of its checkpoints (OUTPUT_DIR/checkpoints/checkpoint-N), or a hub name"


def add_predictor_arguments(p: argparse.ArgumentParser) -> None:
    from clfa.options import PRECISIONS, parse_bool, positive_int, whole_number

    p.add_argument("--batch-size", type=positive_int, default=64, help="pairs per batch (default 64)")
    p.add_argument("--num-workers", type=whole_number, default=0,
                   help="processes that decode images while the model runs (default 0: in the main process)")
    p.add_argument("--progress", type=parse_bool, metavar="{true,false}", help="show a progress bar (default: when stderr is a terminal)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto (default): bf16 autocast on GPUs with bf16 arithmetic, as in training; else fp32")
    p.add_argument("--attention-backends", metavar="LIST", type=_attention_backends,
                   help="attention kernels allowed, first supported first, e.g. flash,efficient,math (default: PyTorch's choice)")


def _versions() -> str:
    """What a bug report needs: clfa's version and those of the libraries whose behaviour it depends on."""
    from importlib.metadata import PackageNotFoundError, version

    from clfa import __version__

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return f"clfa {__version__} (" + ", ".join(f"{name} {installed(name)}" for name in ("torch", "transformers", "accelerate")) + ")"


class _Parser(argparse.ArgumentParser):
    """The parser of ``clfa`` and of each of its commands (argparse makes a command's parser of its parent's class).

    No prefix of a flag stands for the flag: --splits would run as --splits-dir, a meaning not asked for, and a prefix
    that names one flag today names none once a second flag begins with it. A prefix is refused with the flags it
    begins (see did_you_mean)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def _print_message(self, message: str, file=None):
        # Under torchrun / accelerate launch every process reads the same command line: the first of each machine
        # prints the help, the version or what is wrong, in that machine's log. argparse prints all three through here.
        if first_on_this_machine():
            super()._print_message(message, file)


def build_parser() -> argparse.ArgumentParser:
    from clfa.data.commands import add_data_parser
    from clfa.options import add_option_arguments, parse_bool

    parser = _Parser(prog="clfa", description="CLIP-guided contrastive cross-modal feature alignment for image+text classification.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    parser.add_argument("--version", action="version", version=_versions(), help="print the versions of clfa, torch, transformers and accelerate")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a classifier (paper settings by default), pick the best dev checkpoint, test it")
    p.add_argument("--config", help="YAML or JSON file of training options; command-line flags override it")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in OUTPUT_DIR/checkpoints")
    add_dataset_arguments(p)
    add_option_arguments(p)
    p.set_defaults(func=train_command)

    p = sub.add_parser("evaluate", help="evaluate a trained model on dataset splits")
    p.add_argument("--model", required=True, help=_MODEL_HELP)
    p.add_argument("--split", nargs="+", default=["test"], choices=["train", "dev", "test"], help="the splits to evaluate (default: test)")
    add_predictor_arguments(p)
    p.add_argument("--output", help="write the metrics JSON here")
    p.add_argument("--predictions", metavar="FILE", help="a row per record evaluated: split, id, true_label, label (the "
                   "predicted one), correct, the probabilities, text, image; JSON Lines, or CSV for a .csv name")
    add_dataset_arguments(p)
    p.set_defaults(func=evaluate_command)

    p = sub.add_parser("predict", help="label new image+text pairs")
    p.add_argument("--model", required=True, help=_MODEL_HELP)
    p.add_argument("--text", help="one text ...")
    p.add_argument("--image", help="... and its image (a text-only or image-only baseline takes its one input alone)")
    p.add_argument("--input", help="JSONL/CSV of pairs: id, text, image (relative to the file)")
    p.add_argument("--output", help="predictions, one per pair: JSON Lines (id, label, probabilities, text, image), or CSV "
                   "(id, label, p_LABEL..., text, image) for a .csv name (default: JSON Lines to stdout); written as "
                   "NAME.partial until whole")
    add_predictor_arguments(p)
    p.add_argument("--skip-invalid", action="store_true", help="drop invalid pairs (counted and reported)")
    p.set_defaults(func=predict_command)

    p = sub.add_parser("heatmap", help="the paper's Figure 4 for trained models: cosine similarity of each one's aligned text "
                       "features against its image features, for pairs drawn from a split; matched pairs on the diagonal")
    p.add_argument("--model", required=True, action="append", metavar="[NAME=]RUN", help="a model, a panel each (give it "
                   "once per model); titled by its folder's name, or NAME; RUN as evaluate's --model")
    p.add_argument("--split", default="test", choices=["train", "dev", "test"],
                   help="the split the pairs are drawn from (default: test)")
    p.add_argument("--samples", type=int, default=16, metavar="N", help="pairs drawn, the same for every model (default 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draw (default 0)")
    p.add_argument("--rows", default="text", choices=["text", "caption"], help="what the rows read: each pair's text "
                   "(default), or its image's caption as in the paper's Figure 4 (a record's caption field; pairs "
                   "without one are not drawn)")
    p.add_argument("--output", required=True, metavar="FILE.png", help="the figure (its format by the name's suffix)")
    add_predictor_arguments(p)
    add_dataset_arguments(p)
    p.set_defaults(func=heatmap_command)

    p = sub.add_parser("export", help="copy what prediction needs (config, safetensors weights, tokenizer, image "
                       "processor), the run's metrics and a model card to a new folder: no checkpoints, optimizer states, "
                       "pickles or paths of this machine")
    p.add_argument("--model", required=True, help="a trained model directory, or one of its checkpoints")
    p.add_argument("--output-dir", required=True, help="a new (or empty) folder")
    p.set_defaults(func=export_command)

    p = sub.add_parser("demo", help="offline demo: generate a sarcasm world, train CLFA and baselines, compare")
    # --output-dir, as train and export name their folder; --out as before.
    p.add_argument("--output-dir", "--out", dest="out", metavar="DIR", default="clfa-demo", help="output folder (default: clfa-demo)")
    p.add_argument("--quick", action="store_true", help="a smaller run (about 35 s on 2 CPU cores)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated world, the teacher, the students and every training run (default 0)")
    p.add_argument("--progress", type=parse_bool, metavar="{true,false}", help="show progress bars (default: when stderr is a "
                   "terminal; without them, a line per teacher epoch, per evaluation and per model trained)")
    p.set_defaults(func=demo_command)

    add_data_parser(sub)
    for command in sub.choices.values():  # the parser whose usage an unknown option is shown with (data's own set theirs)
        command.set_defaults(_parser=command)
    return parser


def did_you_mean(unknown: list[str], command: argparse.ArgumentParser) -> str:
    """The options nearest the mistyped ones, as " (did you mean --x?)": the usage above the error lists some forty
    flags, and --learning_rate (a --config file's key) or --lerning-rate is hard to match there by eye. A prefix, which
    is no flag, is answered with the few flags it begins (--splits: --splits-dir; --spl: --split or --splits-dir)."""
    flags = [flag for action in command._actions for flag in action.option_strings if flag.startswith("--")]
    near = []
    for token in unknown:
        name = token.split("=", 1)[0].replace("_", "-")
        if not name.startswith("--"):
            continue
        if 0 < len(begun := [flag for flag in flags if flag.startswith(name)]) <= 3:
            near.append(" or ".join(begun))
        elif match := difflib.get_close_matches(name, flags, n=1, cutoff=0.8):
            near.append(match[0])
    return f" (did you mean {', '.join(near)}?)" if near else ""
