"""What the task command groups (``visprior seg ...``, ``visprior cxr ...``) share."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["add_force_flag", "dispatch", "train_config_from_args"]

ConfigT = TypeVar("ConfigT")


def dispatch(
    group: str, command: str, handlers: Mapping[str, Callable[[argparse.Namespace], int]], args
) -> int:
    """Run ``handlers[command]``; a bad input or file becomes one error line and exit code 2."""
    try:
        return handlers[command](args)
    except (ValueError, OSError) as error:  # OSError: missing, existing or unwritable files
        print(f"visprior {group} {command}: error: {error}", file=sys.stderr)
        return 2


def train_config_from_args(
    cls: type[ConfigT], args: argparse.Namespace, flag_names: Sequence[str]
) -> ConfigT:
    """A training config from defaults, ``--config`` (or the resumed run's), flags, ``--set``.

    With ``--resume RUN`` the run's own ``config.yaml`` is the base and the output is ``RUN``;
    otherwise a dataset argument is required.
    """
    from visprior.engine.config import load_config

    flags: dict[str, Any] = {name: getattr(args, name) for name in flag_names}
    if args.resume:
        config_file = Path(args.resume) / "config.yaml"
        flags["output"] = args.resume
    else:
        if not args.dataset:
            raise ValueError("give a dataset folder (or --resume RUN)")
        config_file = args.config
        flags["dataset"] = args.dataset
    return load_config(cls, config_file, args.set, **flags)


def add_force_flag(parser: argparse.ArgumentParser, help: str) -> None:
    """``--force`` (alias ``--overwrite``): without it a command never replaces a file."""
    parser.add_argument("--force", "--overwrite", dest="overwrite", action="store_true", help=help)
