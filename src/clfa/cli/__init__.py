"""The ``clfa`` command: main, and why a command other than train is refused under a launcher. Each command's
handler is in the module named for it (``clfa data``'s in clfa.data.commands); the work is in the library."""

from __future__ import annotations

import logging
import os
import sys
import traceback

from clfa.cli import checks
from clfa.cli.parser import build_parser, did_you_mean
from clfa.data.records import DataError
from clfa.errors import OptionError, message
from clfa.launch import first_process, said_by_this_process

__all__ = ["build_parser", "main", "run"]


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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the subcommand, with its usage, not by `clfa` with the list of commands
        command = getattr(args, "_parser", parser)
        command.error(f"unrecognized arguments: {' '.join(unknown)}{did_you_mean(unknown, command)}")
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
        _say(err, f"clfa: error: {message(err)}")  # every process still ends with the status: a launcher reports the run failed
        return 2
    except KeyboardInterrupt as err:  # torchrun and accelerate launch pass a Ctrl-C on to each process: said once a machine
        _say(err, "clfa: interrupted")
        return 130  # as a shell reports a command that SIGINT ended


def _say(err: BaseException, line: str) -> None:
    if said_by_this_process(err, line):
        print(line, file=sys.stderr)


def run() -> None:
    """The ``clfa`` command (and ``python -m clfa.cli``): :func:`main` in a process of its own, which ends with its
    status."""
    checks._OWN_PROCESS = True
    try:
        status = main()
    except Exception as err:
        # A bug, or a failure that may be one process's own (its GPU, its share of the data): its traceback, as Python
        # (or torch, which prefixes the rank once the processes are joined) prints it, once a machine when several
        # processes meet the same.
        if said_by_this_process(err, "".join(traceback.format_exception(err))):
            raise
        status = 1  # as Python ends a process on an exception
    sys.exit(status)
