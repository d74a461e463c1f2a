"""Model names that are neither a local folder nor a model the hub can give, told apart before the hub is asked.

Asking the hub for a mistyped local path, or for anything on a machine that cannot reach it, means retries for half a
minute before it fails; these checks answer at once.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

from huggingface_hub import constants, try_to_load_from_cache
from huggingface_hub.utils import validate_repo_id

from clfa.errors import OptionError

MODEL_HINT = "; give the folder clfa train wrote (its --output-dir)"


def trained_model_location(path: str | Path) -> tuple[str | Path, bool]:
    """``path`` as a trained model is loaded from, and whether it is on disk; an OptionError for a file, or for a name
    that is neither a folder nor a model the hub may give. Needs neither torch nor transformers: the commands check
    ``--model`` with it before they import them, which takes seconds."""
    if str(path).startswith("~"):  # no hub name starts so; a shell leaves a quoted ~ as it is
        path = Path(path).expanduser()
    local = Path(path).exists()
    if local and not Path(path).is_dir():
        raise OptionError(f"{path}: a file, not a folder{MODEL_HINT}")
    if local and (instead := _checkpoints_hint(Path(path))):
        raise OptionError(f"{path}: {instead}")
    if not local and (problem := lookup_problem(str(path))):
        raise OptionError(f"{path}: {problem}{MODEL_HINT}")
    return path, local


def _checkpoints_hint(folder: Path) -> str | None:
    """For a run's folder of Trainer checkpoints (OUTPUT_DIR/checkpoints), which holds no model of its own: the models
    to give instead, its checkpoints (the best, as the latest one's trainer_state.json records it, and the latest) and
    the run's folder where that holds the run's model. None for any other folder."""
    if (folder / "config.json").exists():
        return None
    steps = sorted(int(match[1]) for entry in folder.iterdir()
                   if entry.is_dir() and (match := re.fullmatch(r"checkpoint-(\d+)", entry.name)))
    if not steps:
        return None
    latest = folder / f"checkpoint-{steps[-1]}"
    try:
        best = json.loads((latest / "trainer_state.json").read_text()).get("best_global_step")
    except (OSError, ValueError, AttributeError):  # none, cut short or not a record: no best is known
        best = None
    named = [f"{folder / f'checkpoint-{best}'} (the best)"] if best in steps and best != steps[-1] else []
    named.append(f"{latest} (the latest{', and the best' if best == steps[-1] else ''})")
    run = folder.resolve().parent
    model = f", or the run's folder, {folder.parent} (the model the run kept)" if (run / "config.json").is_file() else ""
    return f"a folder of {len(steps)} checkpoint(s), not a model: give one of them, {' or '.join(named)}{model}"


def lookup_problem(name: str, revision: str | None = None, subfolder: str = "") -> str | None:
    """Why ``name`` cannot be a model (None when it is a folder, is in the hub cache, or the hub may have it).
    ``revision`` and ``subfolder``: where in the hub repository the model is, as ``from_pretrained`` takes them."""
    folder = Path(name)
    if folder.exists():
        return None
    nearby = folder.parent != Path(".") and folder.parent.is_dir()  # a typo beside the folder it was meant for
    try:
        validate_repo_id(name)
    except ValueError:  # absolute, ./, ~, three parts, "--"...: no hub name looks like that
        return _no_such_folder(folder) if nearby else "no such folder"
    config = f"{subfolder.strip('/')}/config.json" if subfolder else "config.json"
    if isinstance(try_to_load_from_cache(name, config, revision=revision), str):
        return None
    if nearby:
        return _no_such_folder(folder)
    if constants.HF_HUB_OFFLINE:
        return "no such folder, and not in the hub cache (HF_HUB_OFFLINE is set)"
    if not _hub_resolves():
        return f"no such folder, and the hub ({urlparse(constants.ENDPOINT).hostname}) cannot be reached from here to look it up"
    return None


def _no_such_folder(folder: Path) -> str:
    models = sorted(p.name for p in folder.parent.iterdir() if (p / "config.json").is_file())
    close = difflib.get_close_matches(folder.name, models, n=3)
    return f"no such folder in {folder.parent}" + (f" (did you mean {', '.join(close)}?)" if close else "")


@functools.cache
def _hub_resolves() -> bool:
    # A name lookup fails at once where there is no network; the hub client would retry its request for 30 s.
    host = urlparse(constants.ENDPOINT).hostname
    try:
        socket.getaddrinfo(host, 443)
        return True
    except (OSError, UnicodeError):
        return False
