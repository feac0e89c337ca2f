"""Moved to :mod:`visprior.errors`; kept so that earlier imports keep working."""

from visprior.errors import brief, error_text, find_cause, one_line

__all__ = ["brief", "error_text", "find_cause", "one_line"]
