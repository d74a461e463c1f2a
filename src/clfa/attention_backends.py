"""Which of PyTorch's attention kernels (SDPA backends) the model's attention calls may use, and in which order.

By default PyTorch picks one per call from its own priority order (on an H100 with a recent cuDNN, cuDNN's kernel
first). At CLFA's short sequences (77 text and 50 image tokens) the kernels are far from their best and their
ranking is not the one for long sequences: ``benchmarks/step_parts.py --part attention`` times each backend on each
of the model's calls and names the fastest, under the names used here. A call takes the first backend in the list
that supports it (flash attention, for one, takes no padding mask), and one that none supports is an error, so
ending the list with ``math``, which supports every call, keeps every call possible.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING

from clfa.errors import OptionError

if TYPE_CHECKING:
    from torch.nn.attention import SDPBackend

# The name of each backend's SDPBackend member: torch is imported where the backends are used, not where their names
# are checked, which the command line does while it parses (`clfa ... --help` and usage errors should not wait for it).
BACKENDS = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION", "math": "MATH"}


def check_attention_backends(text: str | None) -> list[str] | None:
    """The backend names in ``text``, each known and named once; None or empty: PyTorch's own choice."""
    if not text or not text.strip():
        return None
    names = [name.strip().lower() for name in text.split(",")]
    unknown = [name for name in names if name not in BACKENDS]
    if unknown:
        raise OptionError(f"--attention-backends {text!r}: unknown backend(s) {unknown}; "
                         f"expected a comma-separated list of {', '.join(BACKENDS)}")
    if len(set(names)) != len(names):
        raise OptionError(f"--attention-backends {text!r}: a backend is named twice")
    return names


def parse_attention_backends(text: str | None) -> list[SDPBackend] | None:
    """``"efficient,flash,math"`` -> those backends in that order; None or empty: PyTorch's own choice."""
    if (names := check_attention_backends(text)) is None:
        return None
    from torch.nn.attention import SDPBackend

    return [getattr(SDPBackend, BACKENDS[name]) for name in names]


# The backends are a process-wide setting of PyTorch's: contexts entered in several threads at once (one Predictor
# serving a threaded web server) would each save the setting another had made and restore it on leaving, so that the
# last to leave could leave another's list in force for the whole process. Contexts of one list share the setting
# (the first to enter sets it, the last to leave restores it); one of another list waits until they have all left.
# Inside a context, a thread alone under it may ask for another list for a while; with other threads under it, that
# would change their kernels under them, and is an error.
_shared = threading.Condition()
_in_force: list[SDPBackend] | None = None
_users = 0
_nested_other = False  # a thread's nested context of another list is in force: nobody joins it
_restore = contextlib.ExitStack()
_thread = threading.local()


@contextlib.contextmanager
def _process_wide(backends: list[SDPBackend]):
    global _in_force, _users, _restore, _nested_other
    from torch.nn.attention import sdpa_kernel

    if getattr(_thread, "depth", 0):  # nested in a context of this thread, which holds the setting already
        with _shared:
            outer, was_other = _in_force, _nested_other
            if backends != outer:
                if _users > 1:
                    raise RuntimeError(f"attention backends {_names(backends)} asked for inside a context of "
                                       f"{_names(outer)} that other threads share: their kernels would change under them")
                _in_force, _nested_other = backends, True
        _thread.depth += 1
        try:
            with sdpa_kernel(backends, set_priority=True) if backends != outer else contextlib.nullcontext():
                yield
        finally:
            _thread.depth -= 1
            with _shared:
                _in_force, _nested_other = outer, was_other
                _shared.notify_all()
        return
    with _shared:
        _shared.wait_for(lambda: _users == 0 or (_in_force == backends and not _nested_other))
        if _users == 0:
            _restore = contextlib.ExitStack()
            _restore.enter_context(sdpa_kernel(backends, set_priority=True))
            _in_force = backends
        _users += 1
    _thread.depth = 1
    try:
        yield
    finally:
        _thread.depth = 0
        with _shared:
            _users -= 1
            if _users == 0:
                _restore.close()
                _in_force = None
                _shared.notify_all()


def _names(backends: list[SDPBackend] | None) -> str:
    return ",".join(next(name for name, member in BACKENDS.items() if member == backend.name) for backend in backends or [])


@contextlib.contextmanager
def attention_backends(text: str | None):
    """A context in which attention calls use the backends ``text`` names, first supported first; while it lasts it
    sets PyTorch's process-wide choice, which torch.compile reads when it compiles. A call that none of them supports
    is an :class:`OptionError` that says how to fix the list. Contexts entered in several threads at once share the
    setting when they name the same backends; one that names others waits for them to end (a thread that asks for no
    backends runs under whatever is in force)."""
    backends = parse_attention_backends(text)
    if backends is None:
        yield
        return
    with _process_wide(backends):
        try:
            yield
        except RuntimeError as err:
            # PyTorch's words when no allowed backend takes a call, eagerly and from its fused-kernel dispatch.
            if not any(words in str(err) for words in ("No viable backend for scaled_dot_product_attention", "No available kernel")):
                raise
            raise OptionError(f"--attention-backends {text}: none of these supports one of the model's attention calls "
                              "on this device; end the list with math, which supports every call") from err
