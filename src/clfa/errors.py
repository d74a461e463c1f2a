"""Errors that are a user's input, not a bug: the ``clfa`` command prints them as one line, without a traceback."""


class OptionError(ValueError):
    """An option, an options file or a combination of options that cannot run; the message names the option."""


def first_line(err: BaseException) -> str:
    """The first line of a library's error message, to quote inside one of ours."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
