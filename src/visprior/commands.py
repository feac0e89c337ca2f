"""What the task command groups (``visprior seg ...``, ``visprior cxr ...``) share: the error
line and exit code of a failed command, the flags every training command takes, and how those
flags become a training config."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from visprior.engine.config import RunConfig, load_config

__all__ = ["add_force_flag", "add_train_arguments", "dispatch", "train_config_from_args"]

ConfigT = TypeVar("ConfigT", bound=RunConfig)


def dispatch(
    group: str, command: str, handlers: Mapping[str, Callable[[argparse.Namespace], int]], args
) -> int:
    """Run ``handlers[command]``; a bad input or file becomes one error line and exit code 2."""
    try:
        return handlers[command](args)
    except (ValueError, OSError) as error:  # OSError: missing, existing or unwritable files
        print(f"visprior {group} {command}: error: {error}", file=sys.stderr)
        return 2


def add_train_arguments(
    parser: argparse.ArgumentParser, defaults: RunConfig, dataset_help: str
) -> None:
    """The positional dataset and the flags every training command shares: ``--model``,
    ``--output``/``-o``, ``--config``, ``--time-limit``, ``--precision``, ``--resume`` and
    ``--set``.

    A flag that maps to a config field has the field's name as its ``dest`` and ``None`` as
    its default, so that only flags given on the command line override the config file; the
    help shows the config's default.
    """
    parser.add_argument("dataset", nargs="?", help=f"{dataset_help} (not needed with --resume)")
    parser.add_argument(
        "--model", help=f"registered network name, see `visprior models` (default {defaults.model})"
    )
    parser.add_argument("--output", "-o", help=f"run folder (default {defaults.output})")
    parser.add_argument(
        "--config", type=Path, help="YAML file of options (default: the recipe's defaults)"
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        dest="time_limit_minutes",
        metavar="MIN",
        help="stop after this many minutes of training, summed over resumed sessions "
        f"(default {defaults.time_limit_minutes:g}: no limit)",
    )
    parser.add_argument(
        "--precision",
        choices=("32", "bf16", "16-mixed"),
        help="float32, bfloat16 autocast, or float16 autocast with a gradient scaler "
        "(default: bf16 on CUDA, 32 on the CPU; the `amp` key says the same)",
    )
    parser.add_argument(
        "--resume",
        metavar="RUN",
        help="continue the run in this folder, with its config.yaml (default: a new run)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any config option, e.g. --set lr=3e-4; repeatable, applied last (default: none)",
    )


def train_config_from_args(
    cls: type[ConfigT], args: argparse.Namespace, base: dict[str, Any] | None = None
) -> ConfigT:
    """A training config from defaults, ``base`` (a dataset's plan), ``--config`` (or the
    resumed run's), flags, ``--set``.

    Every parsed option named like a field of ``cls`` and given on the command line (not
    ``None``) sets that field. With ``--resume RUN`` the run's own ``config.yaml`` is the base,
    the output is ``RUN`` and a dataset argument is ignored; otherwise a dataset is required.
    """
    fields = {field.name for field in dataclasses.fields(cls)}
    flags: dict[str, Any] = {
        name: value for name, value in vars(args).items() if name in fields and value is not None
    }
    if args.resume:
        config_file = Path(args.resume) / "config.yaml"
        flags.pop("dataset", None)
        flags["output"] = args.resume
    else:
        if not args.dataset:
            raise ValueError("give a dataset folder (or --resume RUN)")
        config_file = args.config
    return load_config(cls, config_file, args.set, base, **flags)


def add_force_flag(parser: argparse.ArgumentParser, help: str) -> None:
    """``--force`` (alias ``--overwrite``): without it a command never replaces a file."""
    parser.add_argument("--force", "--overwrite", dest="overwrite", action="store_true", help=help)
