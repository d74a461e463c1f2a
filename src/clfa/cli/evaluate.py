"""``clfa evaluate``, and its refusal to write over the files it reads."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from clfa.cli.checks import check_model, make_parent, progress_of, unread_files
from clfa.cli.predict import write_prediction_rows
from clfa.data.arguments import check_dataset_args, dataset_from_args
from clfa.data.records import DataError, require_labels
from clfa.data.registry import check_positive_label, uses_option
from clfa.errors import OptionError
from clfa.files import whole_output, writing


def evaluate_command(args: argparse.Namespace) -> int:
    # --labels and --positive-label are checked against the model's labels; the model's go to a custom file below.
    check_dataset_args(args, labels=None, positive_label=None)
    # Only the splits evaluated are read: a file named for another would be passed over without a word, and the
    # figures printed would be those of another file than the one named.
    if unread := unread_files(args, args.split):
        raise OptionError(f"{' and '.join(unread)} would not be read: evaluate reads the --split splits only "
                          f"({' '.join(args.split)}); give --split " + " ".join([*args.split, *(f.split("-")[2] for f in unread)])
                          + " to evaluate " + ("it" if len(unread) == 1 else "them") + " as well")
    _refuse_overwriting(args, {split: getattr(args, f"{split}_file") for split in args.split if getattr(args, f"{split}_file")})
    make_parent(args.output)
    make_parent(args.predictions, "--predictions")
    check_model(args.model)
    progress = progress_of(args)
    from clfa.data.kept_pixels import KeptPixels
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
    # The pixels are made from the images the data check decodes (every one under --skip-invalid), not decoded again,
    # where this process reads the batches: loader workers make them side by side (see predict_command).
    kept = KeptPixels([predictor.transform]) if "image" in config.modalities and args.num_workers == 0 else None
    data = dataset_from_args(args, labels=labels, positive_label=None, splits=args.split, decoded=kept.keep if kept else None)
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
        probs = predictor.run(records, batch_size=args.batch_size, num_workers=args.num_workers, progress=progress,
                              images=kept.images(records, predictor.transform) if kept else None)["probabilities"]
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
        with writing(args.output), whole_output(args.output) as target:  # never cut short under its name
            target.write_text(text, encoding="utf-8")
    if args.predictions:
        from clfa.prediction_files import EVALUATE_FIELDS, evaluation_rows

        rows = (row for split in args.split for row in evaluation_rows(data[split], probabilities[split], config.labels, split))
        written = write_prediction_rows(rows, config.labels, args.predictions, EVALUATE_FIELDS, "--predictions")
        print(f"{written} predictions written to {args.predictions}", file=sys.stderr)
    return 0


def _refuse_overwriting(args: argparse.Namespace, inputs: dict[str, str]) -> None:
    """evaluate's --output and --predictions name a file each, and not one of ``inputs`` (split -> file read)."""
    if args.output and args.predictions and _same_file(args.output, args.predictions):
        raise OptionError(f"--predictions {args.predictions} is the --output file: the predictions would replace the metrics")
    for flag, output in (("--output", args.output), ("--predictions", args.predictions)):
        if split := next((split for split, file in inputs.items() if output and _same_file(output, file)), None):
            raise OptionError(f"{flag} {output} is the {split} file: it would be replaced by what evaluate writes")


def _same_file(one: str, other: str) -> bool:
    return Path(one).resolve() == Path(other).resolve()
