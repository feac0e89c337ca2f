"""Finding the error worth showing inside the wrappers libraries put around it."""

from __future__ import annotations

from typing import TypeVar

__all__ = ["find_cause"]

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
