"""Error messages: the error worth showing inside the wrappers libraries put around it, and
other errors' text and values quoted in ours on one short line."""

from __future__ import annotations

import reprlib
from typing import Any, TypeVar

__all__ = ["brief", "error_text", "find_cause", "one_line"]

ErrorT = TypeVar("ErrorT", bound=BaseException)


def find_cause(error: BaseException | None, kind: type[ErrorT]) -> ErrorT | None:
    """The first ``kind`` in ``error``'s chain of causes (``error`` itself included), e.g. the
    input error under MONAI's "applying transform ..." ``RuntimeError``; ``None`` if none."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kind):
            return error
        seen.add(id(error))
        error = error.__cause__
    return None


def one_line(text: str) -> str:
    """``text`` with every run of white space (line breaks included) made one space."""
    return " ".join(text.split())


def error_text(error: BaseException) -> str:
    """An error's message on one line, or its type's name when it has none."""
    return one_line(str(error)) or type(error).__name__


def brief(value: Any, width: int, depth: int) -> str:
    """``repr(value)`` cut short: strings and other scalars to about ``width`` characters,
    containers to 6 items and ``depth`` levels; for values quoted from untrusted files."""
    shortener = reprlib.Repr()
    shortener.maxstring = shortener.maxother = shortener.maxlong = width
    shortener.maxlevel, shortener.maxlist, shortener.maxdict = depth, 6, 6
    return shortener.repr(value)
