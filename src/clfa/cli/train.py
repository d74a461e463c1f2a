"""``clfa train``."""

from __future__ import annotations

import argparse
import sys

from clfa.cli.checks import quiet_libraries
from clfa.data.arguments import dataset_from_args
from clfa.launch import alike_in_every_process, first_process


def train_command(args: argparse.Namespace) -> int:
    from clfa.options import options_from_args

    with alike_in_every_process():  # the same command line and files in each process of a launch
        opts = options_from_args(args, args.config)
        data = dataset_from_args(args)
        if args.skip_invalid:
            data.drop_unlabelled(list(data.splits), "training")
    # Under torchrun / accelerate launch every process runs this command; the first speaks for the run.
    notes = [report] if (report := data.report()) else []
    if not data.splits.get("dev"):
        notes.append(f"{_no_records(data, 'dev')}: no checkpoint is picked by its dev score; the model of the last step is kept")
    if not data.splits.get("test"):
        notes.append(f"{_no_records(data, 'test')}: the model is not scored on held-out data after training")
    if notes and first_process():
        print("\n".join(notes), file=sys.stderr)
    quiet_libraries(args.verbose, opts.progress)
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


def _no_records(data, split: str) -> str:
    """Why ``split`` has no records: it was not given, or it was read and every record skipped (as the summary above
    counts them), which is no split left out."""
    if split not in data.splits:
        return f"no {split} split"
    return f"the {split} split's records were all skipped" if len(data.skipped) else f"the {split} split holds no records"
