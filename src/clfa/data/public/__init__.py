"""Readers for the public datasets, registered by name on import: ``mmsd``, ``mmsd2``, ``mvsa-single``,
``mvsa-multiple``. See docs/datasets/ for the layouts they expect."""

from clfa.data.public import mmsd, mvsa  # noqa: F401  (importing registers the readers)
from clfa.data.public.common import ReaderNotes

__all__ = ["ReaderNotes", "mmsd", "mvsa"]
