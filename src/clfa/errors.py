"""Errors that are a user's input, not a bug: the ``clfa`` command prints them as one line, without a traceback."""


class OptionError(ValueError):
    """An option, an options file or a combination of options that cannot run; the message names the option."""
