"""``clfa heatmap``: the paper's Figure 4 for trained models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clfa.cli.checks import check_model, make_parent, progress_of, unread_files
from clfa.data.arguments import check_dataset_args, dataset_from_args
from clfa.errors import OptionError


def heatmap_command(args: argparse.Namespace) -> int:
    check_dataset_args(args)
    models = _titled_models(args.model)
    if args.samples < 2:
        raise OptionError(f"--samples {args.samples}: a heat map compares at least 2 pairs")
    if unread := unread_files(args, [args.split]):
        raise OptionError(f"{' and '.join(unread)} would not be read: heatmap draws its pairs from the --split split only "
                          f"({args.split})")
    for model in models.values():
        check_model(model)
    # matplotlib knows the formats it writes, and takes longer to import than the checks above take: asked after them,
    # and before the output's folder is made, which a refused format or model would leave behind.
    from clfa.visualize import figure_format

    figure_format(args.output, "--output")
    make_parent(args.output)
    data = dataset_from_args(args, splits=[args.split])  # read before the model is loaded: no torch is needed
    if report := data.report():
        print(report, file=sys.stderr)
    from clfa.visualize import model_heatmaps, row_records

    records = data[args.split]
    if args.samples > len(drawable := row_records(records, args.rows)):
        with_captions = f", {len(drawable)} of them with a caption" if args.rows == "caption" else ""
        raise OptionError(f"--samples {args.samples}: the {args.split} split of '{data.name}' has {len(records)} "
                          f"pairs{with_captions}")
    progress = progress_of(args)
    model_heatmaps(models, records, args.output, args.samples, args.seed, rows=args.rows, device=args.device,
                   precision=args.precision, attention_backends=args.attention_backends, batch_size=args.batch_size,
                   num_workers=args.num_workers, progress=progress, option="--output")
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
