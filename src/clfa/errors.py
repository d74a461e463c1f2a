"""Errors that are a user's input, not a bug: the ``clfa`` command prints them as one line, without a traceback."""


class OptionError(ValueError):
    """An option, an options file or a combination of options that cannot run; the message names the option."""


def first_line(err: BaseException) -> str:
    """The first line of a library's error message, to quote inside one of ours."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def message(err: BaseException) -> str:
    """The message of one of our errors. One raised in a DataLoader worker comes back re-raised in the main process,
    its message then the worker's whole traceback, which ends with the error's own line: that line is the message."""
    text = str(err)
    if text.startswith("Caught ") and "\nOriginal Traceback" in text:
        own = f"{type(err).__module__}.{type(err).__qualname__}: "
        if own in text:
            return text[text.rindex(own) + len(own):].strip()
    return text
