"""What the commands check before the seconds of importing torch and transformers, and those libraries quieted
once the checks have passed."""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
from pathlib import Path

from clfa.errors import OptionError
from clfa.files import make_folder


def unread_files(args: argparse.Namespace, splits: list[str]) -> list[str]:
    """The --train-file/--dev-file/--test-file flags given for a split other than ``splits``, the ones read."""
    return [f"--{split}-file" for split in ("train", "dev", "test") if getattr(args, f"{split}_file") and split not in splits]


def progress_of(args: argparse.Namespace) -> bool:
    """Whether evaluate, predict or demo draws its bars (see progress_bars); when not, the libraries' go too."""
    from clfa.options import progress_bars

    progress = progress_bars(args.progress)
    quiet_libraries(args.verbose, progress)
    return progress


# Set by clfa.cli.run: the process is the command's own, and what the command imports stays until the process ends.
_OWN_PROCESS = False


@contextlib.contextmanager
def _collector_paused():
    """What the block imports left out of the garbage collector's rounds, in a process of the command's own: torch and
    transformers' model code make some 400,000 objects that live until the process ends, and the collector went through
    them again and again as they were made, and at exit (1.2 s of a 5.5 s `clfa predict`). Called in-process (main()),
    nothing is frozen: the caller's own garbage would never be collected."""
    if not (_OWN_PROCESS and gc.isenabled()):
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def quiet_libraries(verbose: bool, progress: bool = True) -> None:
    """torch, transformers (with its model code) and huggingface_hub imported, and quieted without -v. Each command
    calls it once the checks that need none of them have passed: importing them takes seconds, which a refused option
    should not wait for."""
    with _collector_paused():
        import huggingface_hub
        import transformers
        import transformers.modeling_utils  # noqa: F401 (and torch): what every command that calls this goes on to use

    if not verbose:
        # Load reports (unused pooler weights, missing torchvision for fast image processors) are noise here.
        transformers.logging.set_verbosity_error()
        huggingface_hub.utils.logging.set_verbosity_error()  # its retry warnings, printed twice through the root logger
    # transformers' weight loading and saving bars (not the training's): shown only under -v, and there only where
    # clfa's own bars are drawn too.
    if not verbose or not progress:
        transformers.logging.disable_progress_bar()


def check_model(model: str) -> None:
    """--model names a folder or a model the hub may give, found out before the seconds of importing torch."""
    from clfa.hub import trained_model_location

    trained_model_location(model)


def make_parent(output: str | None, flag: str = "--output") -> None:
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
