"""``clfa predict``, and the writing of prediction rows that evaluate --predictions shares."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from clfa.cli.checks import check_model, make_parent, progress_of
from clfa.data.records import DataError, blank
from clfa.errors import OptionError


def predict_command(args: argparse.Namespace) -> int:
    from clfa.data.custom import decoded_image_file, read_custom
    from clfa.data.kept_pixels import KeptPixels
    from clfa.data.records import SkipReport, url_instead_of_file
    from clfa.prediction_files import PREDICT_FIELDS, prediction_row

    one = args.text is not None or args.image is not None
    if one and (args.input or args.output or args.skip_invalid):
        raise OptionError("--text/--image predict one pair to stdout; --input, --output and --skip-invalid are for files of pairs")
    if not one and args.input is None:
        raise OptionError("give --text and --image, or --input pairs.jsonl")
    if args.text is not None and blank(args.text):
        raise OptionError("--text is empty")
    if args.image is not None and (problem := url_instead_of_file(args.image)):  # the URL as given
        raise DataError(problem)
    # Checked by decoding it, before the model loads, and those pixels are the ones predicted: not decoded twice.
    image = decoded_image_file(Path(args.image)) if args.image is not None else None
    if args.output and args.input and Path(args.output).resolve() == Path(args.input).resolve():
        raise OptionError(f"--output {args.output} is the --input file: the predictions would replace the pairs")
    make_parent(args.output)
    check_model(args.model)
    progress = progress_of(args)
    from clfa.predict import Predictor

    predictor = Predictor.from_pretrained(args.model, device=args.device, precision=args.precision, attention_backends=args.attention_backends)
    if one:
        # A single-modality baseline reads one of the two, and is given that one alone.
        reads = predictor.model.config.modalities
        if missing := [flag for flag, kind, value in (("--text", "text", args.text), ("--image", "image", args.image))
                       if value is None and kind in reads]:
            raise OptionError(f"--text and --image go together: {args.model} reads the {' and the '.join(reads)} of a pair; "
                              f"give {missing[0]} too")
        print(json.dumps(predictor.predict(args.text, image)))
        return 0
    skip = SkipReport() if args.skip_invalid else None
    # Skipping means finding every image that cannot be decoded now, not when its batch is read; a text-only baseline
    # reads none. The pixels are made from the images the check decodes, not from a second decoding, where this process
    # reads the batches: loader workers make them side by side, and resizing an image takes longer than decoding it.
    reads_images = "image" in predictor.model.config.modalities
    check_images = ("decode" if skip is not None else True) if reads_images else False
    kept = KeptPixels([predictor.transform]) if reads_images and args.num_workers == 0 else None
    records = read_custom(args.input, skip=skip, check_images=check_images, decoded=kept.keep if kept else None)
    if skip is not None and len(skip):
        print(skip.summary(), file=sys.stderr)
    if not records:
        raise DataError("no pairs to predict" + (" (every one was skipped)" if skip is not None and len(skip) else ""), file=args.input)
    results = predictor.iter_predictions(records, batch_size=args.batch_size, num_workers=args.num_workers, progress=progress,
                                         images=kept.images(records, predictor.transform) if kept else None)
    rows = (prediction_row(record, result) for record, result in zip(records, results))
    try:
        written = write_prediction_rows(rows, predictor.labels, args.output, PREDICT_FIELDS)
    except BrokenPipeError:
        if args.output is not None:
            raise
        # The reader of stdout stopped early (| head): stop quietly, as other commands do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    if args.output:
        print(f"{written} predictions written to {args.output}", file=sys.stderr)
    return 0


def write_prediction_rows(rows, labels: list[str], output: str | None, fields: tuple[str, ...], flag: str = "--output") -> int:
    """prediction_files.write_predictions, with where a run that stops half-way left the rows it wrote said first, and
    a full disk named as the problem of ``flag``'s file."""
    from clfa.files import made_apart, writing
    from clfa.prediction_files import PredictionsCut, write_predictions

    with writing(output, flag):
        try:
            return write_predictions(made_apart(rows), labels, output, fields)
        except PredictionsCut as cut:
            print(f"clfa: {cut}", file=sys.stderr)
            raise cut.__cause__ from None
