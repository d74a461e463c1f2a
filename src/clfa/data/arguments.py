"""Command-line options that select and read a dataset, shared by every command that reads data."""

from __future__ import annotations

import argparse

from clfa.data.registry import DatasetSplits, check_options, load_dataset


def add_dataset_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", required=required, help="dataset format: jsonl, csv, mmsd, mmsd2, mvsa-single, mvsa-multiple")
    g.add_argument("--data-dir", help="the dataset's folder, laid out as published (custom formats: train/dev/test .jsonl, .json or .csv)")
    g.add_argument("--train-file", help="custom formats: the train file (default DATA_DIR/train.jsonl|json|csv)")
    g.add_argument("--dev-file", help="custom formats: the dev file (default DATA_DIR/dev.jsonl|json|csv, or valid, validation, val)")
    g.add_argument("--test-file", help="custom formats: the test file (default DATA_DIR/test.jsonl|json|csv)")
    g.add_argument("--labels", help="custom formats: comma-separated label names in class-id order (default: sorted labels of the train file)")
    g.add_argument("--positive-label", help="binary tasks: the class whose precision/recall/F1 are reported (default: sarcastic, positive, yes, 1... or the last label)")
    g.add_argument("--image-dir", help="public datasets: folder of <id>.jpg images (MMSD: default DATA_DIR/dataset_image; MVSA: DATA_DIR/data, else DATA_DIR/dataset_image, else DATA_DIR)")
    g.add_argument("--mmsd-filter", choices=["token", "substring", "none"], help="MMSD cleaning of hashtag-leaking words (default: token)")
    g.add_argument("--splits-dir", help="MVSA: folder with pre-made train/dev/test.json splits, or where to write the split made from the raw release")
    g.add_argument("--normalize-text", action="store_true", help="MMSD and MMSD2.0: rewrite <url>/<user>/<num>/emoji_NNN placeholders and spaced hashtags (off, as in the paper)")
    g.add_argument("--skip-invalid", action="store_true", help="drop invalid records (counted and reported) instead of stopping at the first")


def dataset_options(args: argparse.Namespace) -> dict:
    return {
        "train": args.train_file,
        "dev": args.dev_file,
        "test": args.test_file,
        "labels": [label.strip() for label in args.labels.split(",")] if args.labels else None,
        "positive_label": args.positive_label,
        "image_dir": args.image_dir,
        "mmsd_filter": args.mmsd_filter,
        "splits_dir": args.splits_dir,
        "normalize_text": args.normalize_text,
    }


def check_dataset_args(args: argparse.Namespace, **overrides) -> None:
    """The data options as dataset_from_args would take them, checked before slow work such as loading a model."""
    check_options(args.dataset, dataset_options(args) | overrides)


def dataset_from_args(args: argparse.Namespace, **overrides) -> DatasetSplits:
    options = dataset_options(args) | overrides
    return load_dataset(args.dataset, args.data_dir, skip_invalid=args.skip_invalid, **options)
