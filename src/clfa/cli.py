"""The ``clfa`` command: train, evaluate, predict, heatmap, export, demo, data. Each handler is thin; the work is in the library."""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import sys
from pathlib import Path

from clfa.data.arguments import add_dataset_arguments, check_dataset_args, dataset_from_args
from clfa.data.records import DataError, require_labels
from clfa.data.registry import check_positive_label, uses_option
from clfa.errors import OptionError, message
from clfa.files import make_folder, regular_file_or_none, write_whole
from clfa.launch import alike_in_every_process, first_on_this_machine, first_process, said_by_this_process


def _train(args: argparse.Namespace) -> int:
    from clfa.options import options_from_args

    with alike_in_every_process():  # the same command line and files in each process of a launch
        opts = options_from_args(args, args.config)
        data = dataset_from_args(args)
        if args.skip_invalid:
            data.drop_unlabelled(list(data.splits), "training")
    # Under torchrun / accelerate launch every process runs this command; the first speaks for the run.
    notes = [report] if (report := data.report()) else []
    if not data.splits.get("dev"):
        notes.append("no dev split: no checkpoint is picked by its dev score; the model of the last step is kept")
    if not data.splits.get("test"):
        notes.append("no test split: the model is not scored on held-out data after training")
    if notes and first_process():
        print("\n".join(notes), file=sys.stderr)
    _quiet_libraries(args.verbose, opts.progress)
    from accelerate import PartialState

    from clfa.training import print_summary, train

    metrics = train(opts, data, resume=args.resume)
    finite = metrics["train"]["weights_finite"]
    if not PartialState().is_main_process:
        return 0 if finite else 1
    print(data.sizes())  # after the run: an option refused before it is the command's one line of output
    print_summary(metrics, f"{data.name}: " + ("best dev checkpoint" if data.splits.get("dev") else "last model"))
    print(f"model and metrics.json written to {opts.output_dir}")
    if not finite:
        print("clfa: error: training diverged: the model written has weights that are not numbers; lower --learning-rate, "
              "or use --precision bf16 or fp32 rather than fp16", file=sys.stderr)
        return 1
    if metrics["train"]["steps_this_run"] == 0:
        print(f"note: the checkpoint's step, {metrics['train']['steps']}, is the last of the run or past it (by the "
              "--epochs or --max-steps given): nothing was trained; the model and metrics.json were written again",
              file=sys.stderr)
    elif metrics["train"]["loss"] is None:
        print("warning: the training loss became nan; the model written is a dev checkpoint from before, with finite "
              "weights, but later epochs were lost: lower --learning-rate", file=sys.stderr)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    # --labels and --positive-label are checked against the model's labels; the model's go to a custom file below.
    check_dataset_args(args, labels=None, positive_label=None)
    # Only the splits evaluated are read: a file named for another would be passed over without a word, and the
    # figures printed would be those of another file than the one named.
    if unread := _unread_files(args, args.split):
        raise OptionError(f"{' and '.join(unread)} would not be read: evaluate reads the --split splits only "
                          f"({' '.join(args.split)}); give --split " + " ".join([*args.split, *(f.split("-")[2] for f in unread)])
                          + " to evaluate " + ("it" if len(unread) == 1 else "them") + " as well")
    _refuse_overwriting(args, {split: getattr(args, f"{split}_file") for split in args.split if getattr(args, f"{split}_file")})
    _make_parent(args.output)
    _make_parent(args.predictions, "--predictions")
    _check_model(args.model)
    progress = _progress(args)
    from clfa.metrics import classification_metrics
    from clfa.predict import Predictor
    from clfa.report import class_table, metrics_table, print_table

    predictor = Predictor.from_pretrained(args.model, device=args.device, precision=args.precision, attention_backends=args.attention_backends)
    config = predictor.model.config
    if args.labels and args.labels.split(",") != list(config.labels):
        raise OptionError(f"--labels {args.labels}: the model was trained on the labels {','.join(config.labels)}, in that order")
    positive = args.positive_label or config.positive_label
    if positive is not None and positive not in config.labels:
        raise OptionError(f"--positive-label {positive}: not one of the model's labels ({', '.join(config.labels)})")
    check_positive_label(args.positive_label, config.labels)
    # A model trained on rewritten texts rewrites by itself; one whose training is not known (None) is
    # evaluated as the option asks.
    if getattr(args, "normalize_text", False) and config.normalize_text is False:
        raise OptionError(f"--normalize-text: {args.model} was trained on the texts as released; rewritten texts would "
                          "not measure it (leave the option out)")
    # A custom file is read with the model's labels; a public dataset's are fixed, and checked below.
    labels = list(config.labels) if uses_option(args.dataset, "labels") else None
    data = dataset_from_args(args, labels=labels, positive_label=None, splits=args.split)
    if list(data.labels) != list(config.labels):  # a public dataset's labels are its own, whatever the model's
        raise OptionError(f"dataset '{data.name}' has the labels {', '.join(data.labels)}; the model was trained on "
                          f"{', '.join(config.labels)}")
    _refuse_overwriting(args, data.files)  # those found in --data-dir too
    if args.skip_invalid:
        data.drop_unlabelled(args.split, "evaluation")
    print(data.sizes(), file=sys.stderr)
    if report := data.report():
        print(report, file=sys.stderr)
    results, probabilities = {}, {}
    for split in args.split:
        records = data[split]
        if not records:
            raise DataError(f"dataset '{data.name}': the {split} split has no records to evaluate")
        require_labels(records, "evaluation")
        probs = predictor.run(records, batch_size=args.batch_size, num_workers=args.num_workers, progress=progress)["probabilities"]
        probabilities[split] = probs  # (N, C): the rows of --predictions are made from them, not from a second run
        truth = [config.label2id[r.label] for r in records]
        results[split] = classification_metrics(truth, probs.argmax(-1), config.labels, positive)
        if absent := results[split].get("absent_classes"):
            zero = f"; {positive}'s P/R/F1 are 0 by convention" if positive in absent else ""
            print(f"note: the {split} split has no sample of {', '.join(map(repr, absent))}: the macro figures average the "
                  f"other classes{zero}", file=sys.stderr)
    print_table(metrics_table(results, title=f"{args.model} on {data.name}"))
    for split, metrics in results.items():  # where each class's errors went, as the figures above do not tell
        print_table(class_table(metrics, title=f"{split}: per class"))
    if args.output:
        from clfa import __version__

        # What produced the figures, so that a file of results read later still says what it measured.
        about = {"model": str(Path(args.model).resolve()) if Path(args.model).exists() else args.model,
                 "dataset": data.name, "data_dir": data.data_dir, "files": data.files, "data_options": data.options,
                 "labels": list(config.labels), "positive_label": positive, "device": str(predictor.device),
                 "precision": str(predictor.precision), "clfa_version": __version__}
        text = json.dumps(results | about | {"skipped": data.skipped.to_json(), "removed_by_cleaning": data.removed},
                          indent=2)
        if regular_file_or_none(args.output):  # never cut short under its name, whatever stops the write
            write_whole(Path(args.output).resolve(), text)
        else:  # a pipe or /dev/stdout, which cannot be replaced
            Path(args.output).write_text(text, encoding="utf-8")
    if args.predictions:
        from clfa.prediction_files import EVALUATE_FIELDS, evaluation_rows

        rows = (row for split in args.split for row in evaluation_rows(data[split], probabilities[split], config.labels, split))
        written = _write_predictions(rows, config.labels, args.predictions, EVALUATE_FIELDS)
        print(f"{written} predictions written to {args.predictions}", file=sys.stderr)
    return 0


def _unread_files(args: argparse.Namespace, splits: list[str]) -> list[str]:
    """The --train-file/--dev-file/--test-file flags given for a split other than ``splits``, the ones read."""
    return [f"--{split}-file" for split in ("train", "dev", "test") if getattr(args, f"{split}_file") and split not in splits]


def _refuse_overwriting(args: argparse.Namespace, inputs: dict[str, str]) -> None:
    """evaluate's --output and --predictions name a file each, and not one of ``inputs`` (split -> file read)."""
    if args.output and args.predictions and _same_file(args.output, args.predictions):
        raise OptionError(f"--predictions {args.predictions} is the --output file: the predictions would replace the metrics")
    for flag, output in (("--output", args.output), ("--predictions", args.predictions)):
        if split := next((split for split, file in inputs.items() if output and _same_file(output, file)), None):
            raise OptionError(f"{flag} {output} is the {split} file: it would be replaced by what evaluate writes")


def _same_file(one: str, other: str) -> bool:
    return Path(one).resolve() == Path(other).resolve()


def _write_predictions(rows, labels: list[str], output: str | None, fields: tuple[str, ...]) -> int:
    """prediction_files.write_predictions, with where a run that stops half-way left the rows it wrote said first."""
    from clfa.prediction_files import PredictionsCut, write_predictions

    try:
        return write_predictions(rows, labels, output, fields)
    except PredictionsCut as cut:
        print(f"clfa: {cut}", file=sys.stderr)
        raise cut.__cause__ from None


def _progress(args: argparse.Namespace) -> bool:
    """Whether evaluate, predict or demo draws its bars (see progress_bars); when not, the libraries' go too."""
    from clfa.options import progress_bars

    progress = progress_bars(args.progress)
    _quiet_libraries(args.verbose, progress)
    return progress


def _quiet_libraries(verbose: bool, progress: bool = True) -> None:
    """transformers and huggingface_hub imported, and quieted without -v. Each command calls it once the checks that
    need neither them nor torch have passed: importing them takes seconds, which a refused option should not wait for."""
    import huggingface_hub
    import transformers

    if not verbose:
        # Load reports (unused pooler weights, missing torchvision for fast image processors) are noise here.
        transformers.logging.set_verbosity_error()
        huggingface_hub.utils.logging.set_verbosity_error()  # its retry warnings, printed twice through the root logger
    # transformers' weight loading and saving bars (not the training's): shown only under -v, and there only where
    # clfa's own bars are drawn too.
    if not verbose or not progress:
        transformers.logging.disable_progress_bar()


def _check_model(model: str) -> None:
    """--model names a folder or a model the hub may give, found out before the seconds of importing torch."""
    from clfa.hub import trained_model_location

    trained_model_location(model)


def _make_parent(output: str | None, flag: str = "--output") -> None:
    """The folder of an output file made, and the file found writable, before the work rather than after it."""
    if not output:
        return
    path = Path(output)
    if path.is_dir():
        raise OptionError(f"{flag} {output} is a folder; give a file name")
    make_folder(path.parent, f"{flag} {output}")
    if path.exists() or path.is_symlink():
        # Never opened here: a pipe would block or see an early end, and a link's target must not be made.
        if not os.access(path if path.exists() else path.parent, os.W_OK):
            raise OptionError(f"{flag} {output}: cannot be written (permission denied)")
        # A file is replaced by a whole new one made beside it (clfa.prediction_files).
        if path.is_file() and not os.access(path.resolve().parent, os.W_OK):
            raise OptionError(f"{flag} {output}: its folder cannot be written (permission denied)")
        return
    try:
        path.touch(exist_ok=False)
        path.unlink()
    except OSError as err:
        raise OptionError(f"{flag} {output}: cannot be written ({err.strerror or err})") from None


def _predict(args: argparse.Namespace) -> int:
    from clfa.data.custom import check_image_file, read_custom
    from clfa.data.records import SkipReport, url_instead_of_file
    from clfa.prediction_files import PREDICT_FIELDS, prediction_row

    one = args.text is not None or args.image is not None
    if one and (args.input or args.output or args.skip_invalid):
        raise OptionError("--text/--image predict one pair to stdout; --input, --output and --skip-invalid are for files of pairs")
    if not one and args.input is None:
        raise OptionError("give --text and --image, or --input pairs.jsonl")
    if args.text is not None and not args.text.strip():
        raise OptionError("--text is empty")
    if args.image is not None and (problem := url_instead_of_file(args.image) or check_image_file(Path(args.image), decode=True)):  # the URL as given
        raise DataError(problem)
    if args.output and args.input and Path(args.output).resolve() == Path(args.input).resolve():
        raise OptionError(f"--output {args.output} is the --input file: the predictions would replace the pairs")
    _make_parent(args.output)
    _check_model(args.model)
    progress = _progress(args)
    from clfa.predict import Predictor

    predictor = Predictor.from_pretrained(args.model, device=args.device, precision=args.precision, attention_backends=args.attention_backends)
    if one:
        # A single-modality baseline reads one of the two, and is given that one alone.
        reads = predictor.model.config.modalities
        if missing := [flag for flag, kind, value in (("--text", "text", args.text), ("--image", "image", args.image))
                       if value is None and kind in reads]:
            raise OptionError(f"--text and --image go together: {args.model} reads the {' and the '.join(reads)} of a pair; "
                              f"give {missing[0]} too")
        print(json.dumps(predictor.predict(args.text, args.image)))
        return 0
    skip = SkipReport() if args.skip_invalid else None
    # Skipping means finding every image that cannot be decoded now, not when its batch is read; a text-only baseline
    # reads none.
    check_images = ("decode" if skip is not None else True) if "image" in predictor.model.config.modalities else False
    records = read_custom(args.input, skip=skip, check_images=check_images)
    if skip is not None and len(skip):
        print(skip.summary(), file=sys.stderr)
    if not records:
        raise DataError("no pairs to predict" + (" (every one was skipped)" if skip is not None and len(skip) else ""), file=args.input)
    results = predictor.iter_predictions(records, batch_size=args.batch_size, num_workers=args.num_workers, progress=progress)
    rows = (prediction_row(record, result) for record, result in zip(records, results))
    try:
        written = _write_predictions(rows, predictor.labels, args.output, PREDICT_FIELDS)
    except BrokenPipeError:
        if args.output is not None:
            raise
        # The reader of stdout stopped early (| head): stop quietly, as other commands do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    if args.output:
        print(f"{written} predictions written to {args.output}", file=sys.stderr)
    return 0


def _heatmap(args: argparse.Namespace) -> int:
    check_dataset_args(args)
    models = _titled_models(args.model)
    if args.samples < 2:
        raise OptionError(f"--samples {args.samples}: a heat map compares at least 2 pairs")
    if unread := _unread_files(args, [args.split]):
        raise OptionError(f"{' and '.join(unread)} would not be read: heatmap draws its pairs from the --split split only "
                          f"({args.split})")
    _make_parent(args.output)
    for model in models.values():
        _check_model(model)
    # matplotlib knows the formats it writes, and takes longer to import than the checks above take: asked last,
    # before the data and models are read.
    from clfa.visualize import figure_format

    figure_format(args.output, "--output")
    data = dataset_from_args(args, splits=[args.split])  # read before the model is loaded: no torch is needed
    if report := data.report():
        print(report, file=sys.stderr)
    from clfa.visualize import model_heatmaps, row_records

    records = data[args.split]
    if args.samples > len(drawable := row_records(records, args.rows)):
        with_captions = f", {len(drawable)} of them with a caption" if args.rows == "caption" else ""
        raise OptionError(f"--samples {args.samples}: the {args.split} split of '{data.name}' has {len(records)} "
                          f"pairs{with_captions}")
    progress = _progress(args)
    model_heatmaps(models, records, args.output, args.samples, args.seed, rows=args.rows, device=args.device,
                   precision=args.precision, attention_backends=args.attention_backends, batch_size=args.batch_size,
                   num_workers=args.num_workers, progress=progress)
    print(args.output)
    return 0


def _titled_models(given: list[str]) -> dict[str, str]:
    """heatmap's --model [NAME=]RUN options as title -> model; an existing folder whose name holds '=' is a RUN."""
    models: dict[str, str] = {}
    for item in given:
        title, sep, model = item.partition("=")
        if not sep or Path(item).exists():
            title, model = (Path(item).resolve() if Path(item).exists() else Path(item)).name, item
        if not title or not model:
            raise OptionError(f"--model {item}: give a model folder, or NAME=RUN to title its panel")
        if title in models:
            raise OptionError(f"--model {item}: a second panel titled '{title}'; title each as NAME=RUN")
        models[title] = model
    return models


def _export(args: argparse.Namespace) -> int:
    from clfa.export import check_export, export_model

    out = Path(args.output_dir)
    check_export(args.model, out)  # before the seconds of importing torch; export_model checks again, for Python callers
    _quiet_libraries(args.verbose)
    files = export_model(args.model, out)
    for file in files:
        print(f"{file.stat().st_size:>12,}  {file}")
    print(f"exported {args.model} to {out}: {len(files)} files, {sum(f.stat().st_size for f in files):,} bytes", file=sys.stderr)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from clfa.demo.folder import check_out_folder

    make_folder(Path(args.out), f"--output-dir {args.out}")
    check_out_folder(Path(args.out))
    progress = _progress(args)
    from clfa.demo.run import run_demo

    run_demo(Path(args.out), quick=args.quick, seed=args.seed, progress=progress)
    return 0


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
    begins (see _did_you_mean)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        # Under torchrun / accelerate launch every process reads the same command line: the first of each machine says
        # what is wrong, in that machine's log.
        if not first_on_this_machine():
            self.exit(2)
        super().error(message)


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
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="evaluate a trained model on dataset splits")
    p.add_argument("--model", required=True, help=_MODEL_HELP)
    p.add_argument("--split", nargs="+", default=["test"], choices=["train", "dev", "test"], help="the splits to evaluate (default: test)")
    add_predictor_arguments(p)
    p.add_argument("--output", help="write the metrics JSON here")
    p.add_argument("--predictions", metavar="FILE", help="a row per record evaluated: split, id, true_label, label (the "
                   "predicted one), correct, the probabilities, text, image; JSON Lines, or CSV for a .csv name")
    add_dataset_arguments(p)
    p.set_defaults(func=_evaluate)

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
    p.set_defaults(func=_predict)

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
    p.set_defaults(func=_heatmap)

    p = sub.add_parser("export", help="copy what prediction needs (config, safetensors weights, tokenizer, image "
                       "processor), the run's metrics and a model card to a new folder: no checkpoints, optimizer states, "
                       "pickles or paths of this machine")
    p.add_argument("--model", required=True, help="a trained model directory, or one of its checkpoints")
    p.add_argument("--output-dir", required=True, help="a new (or empty) folder")
    p.set_defaults(func=_export)

    p = sub.add_parser("demo", help="offline demo: generate a sarcasm world, train CLFA and baselines, compare")
    # --output-dir, as train and export name their folder; --out as before.
    p.add_argument("--output-dir", "--out", dest="out", metavar="DIR", default="clfa-demo", help="output folder (default: clfa-demo)")
    p.add_argument("--quick", action="store_true", help="a smaller run (about a minute)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated world, the teacher, the students and every training run (default 0)")
    p.add_argument("--progress", type=parse_bool, metavar="{true,false}", help="show progress bars (default: when stderr is a "
                   "terminal; without them, a line per teacher epoch, per evaluation and per model trained)")
    p.set_defaults(func=_demo)

    add_data_parser(sub)
    for command in sub.choices.values():  # the parser whose usage an unknown option is shown with (data's own set theirs)
        command.set_defaults(_parser=command)
    return parser


def _launcher_refusal(command: str) -> str | None:
    """Only ``clfa train`` shares its work among the processes of a torchrun / accelerate launch run. Any other command
    would run whole in every process, each writing the same --output (predictions under one NAME.partial, which the
    processes would take from each other): why it is refused, or None."""
    processes = int(world) if (world := os.environ.get("WORLD_SIZE", "1")).isdigit() else 1  # set by a launcher, or not at all
    # torchrun, accelerate launch and deepspeed give each process its LOCAL_RANK; a WORLD_SIZE alone is often one a job
    # script or a cluster (SLURM, Kubeflow) exported for the whole job, and this process was then started as one.
    if command != "train" and processes > 1 and "LOCAL_RANK" in os.environ:
        return (f"clfa {command} runs in one process, not in each of the {processes} that torchrun or accelerate launch "
                f"started (WORLD_SIZE={processes}): run it as `clfa {command} ...`")
    return None


def _did_you_mean(unknown: list[str], command: argparse.ArgumentParser) -> str:
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the subcommand, with its usage, not by `clfa` with the list of commands
        command = getattr(args, "_parser", parser)
        command.error(f"unrecognized arguments: {' '.join(unknown)}{_did_you_mean(unknown, command)}")
    if refusal := _launcher_refusal(args.command):
        if first_process():  # one line for the run, not one per process
            print(f"clfa: error: {refusal}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not first_process():  # under torchrun / accelerate launch the first process warns for all
        logging.getLogger("clfa").setLevel(logging.ERROR)
    try:
        return args.func(args)
    except (DataError, OptionError) as err:
        if said_by_this_process(err):  # every process still ends with the status: a launcher reports the run failed
            print(f"clfa: error: {message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("clfa: interrupted", file=sys.stderr)
        return 130  # as a shell reports a command that SIGINT ended


if __name__ == "__main__":
    sys.exit(main())
