"""What the commands share: one declaration for each option that several commands take, how
the training flags become a config, and the error line and exit code of a failed command.

An option that maps to a config field has the field's name as its ``dest`` and ``None`` as its
default, so that only flags given on the command line override the config file (or the demo's
settings); its help shows the config's default.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from visprior.engine.config import RunConfig, load_config

__all__ = [
    "PRECISIONS",
    "add_cubic_roi",
    "add_device",
    "add_force_flag",
    "add_init",
    "add_iterations",
    "add_model",
    "add_output",
    "add_precision",
    "add_roi",
    "add_seed",
    "add_train_arguments",
    "add_upkern",
    "dispatch",
    "given_options",
    "positive_int",
    "train_config_from_args",
]

ConfigT = TypeVar("ConfigT", bound=RunConfig)

PRECISIONS = ("32", "bf16", "16-mixed")

# A parser, or a titled group of its options in the help.
Parser = argparse.ArgumentParser | argparse._ArgumentGroup


def dispatch(
    group: str, command: str, handlers: Mapping[str, Callable[[argparse.Namespace], int]], args
) -> int:
    """Run ``handlers[command]``; a bad input or file becomes one error line and exit code 2."""
    try:
        return handlers[command](args)
    except (ValueError, OSError) as error:  # OSError: missing, existing or unwritable files
        print(f"visprior {group} {command}: error: {error}", file=sys.stderr)
        return 2


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_output(parser: Parser, help: str, required: bool = False, type: type = Path) -> None:
    """``--output`` / ``-o``."""
    parser.add_argument("--output", "-o", type=type, required=required, help=help)


def add_model(
    parser: Parser,
    shown_default: str,
    purpose: str = "registered network name, see `visprior models`",
    default: str | None = None,
) -> None:
    """``--model``: ``None`` when not given, unless a ``default`` is set."""
    parser.add_argument("--model", default=default, help=f"{purpose} (default {shown_default})")


def add_iterations(parser: Parser, help: str) -> None:
    parser.add_argument("--iterations", type=positive_int, help=help)


def add_init(parser: Parser, help: str) -> None:
    """``--init CHECKPOINT``, the ``init_checkpoint`` field."""
    parser.add_argument("--init", dest="init_checkpoint", metavar="CHECKPOINT", help=help)


def add_upkern(parser: Parser) -> None:
    parser.add_argument(
        "--upkern",
        action="store_const",
        const=True,
        help="with --init: resample every depth-wise kernel of another size to this network's "
        "(MedNeXt's UpKern), e.g. a 21^3 RepUX-Net from a trained 7^3 one (default: off)",
    )


# The two forms of --roi: `seg train` takes a box, the demo one edge of a cube.
def add_roi(parser: Parser, shown_default: tuple[int, ...]) -> None:
    """``--roi X Y Z``, the ``roi_size`` field."""
    parser.add_argument(
        "--roi",
        type=positive_int,
        nargs=3,
        dest="roi_size",
        metavar=("X", "Y", "Z"),
        help="training crop size in voxels after resampling "
        f"(default {' '.join(map(str, shown_default))})",
    )


def add_cubic_roi(parser: Parser, shown_default: int | str) -> None:
    """``--roi N``: the edge of a cubic crop."""
    parser.add_argument(
        "--roi",
        type=positive_int,
        metavar="N",
        help="edge of the cubic training crop in voxels, one number where `seg train --roi` "
        f"takes three (default {shown_default})",
    )


# The two forms of --precision: a training run's choice, or the demo's, which also takes auto.
def add_precision(
    parser: Parser, help: str, default: str | None = None, auto: bool = False
) -> None:
    """``--precision``: float32, bfloat16 autocast or float16 autocast with a gradient scaler;
    with ``auto``, also the choice by device."""
    choices = ("auto", *PRECISIONS) if auto else PRECISIONS
    parser.add_argument("--precision", default=default, choices=choices, help=help)


def add_seed(parser: Parser, help: str, default: int | None = None) -> None:
    parser.add_argument("--seed", type=int, default=default, help=help)


def add_device(parser: Parser, default: str) -> None:
    parser.add_argument(
        "--device",
        default=default,
        help="cpu, cuda, cuda:N, or auto: a GPU if there is one (default %(default)s)",
    )


def add_force_flag(parser: Parser, help: str) -> None:
    """``--force`` (alias ``--overwrite``): without it a command never replaces a file."""
    parser.add_argument("--force", "--overwrite", dest="overwrite", action="store_true", help=help)


def add_train_arguments(parser: Parser, defaults: RunConfig, dataset_help: str) -> None:
    """The positional dataset and the flags every training command shares: ``--model``,
    ``--output``/``-o``, ``--config``, ``--time-limit``, ``--precision``, ``--resume`` and
    ``--set``."""
    parser.add_argument("dataset", nargs="?", help=f"{dataset_help} (not needed with --resume)")
    add_model(parser, defaults.model)
    add_output(parser, f"run folder (default {defaults.output})", type=str)
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
    add_precision(
        parser,
        "float32, bfloat16 autocast, or float16 autocast with a gradient scaler "
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


def given_options(args: argparse.Namespace, names: set[str]) -> dict[str, Any]:
    """The parsed options named in ``names`` that were given on the command line."""
    return {
        name: value for name, value in vars(args).items() if name in names and value is not None
    }


def train_config_from_args(
    cls: type[ConfigT], args: argparse.Namespace, base: dict[str, Any] | None = None
) -> ConfigT:
    """A training config from defaults, ``base`` (a dataset's plan), ``--config`` (or the
    resumed run's), flags, ``--set``.

    Every parsed option named like a field of ``cls`` and given on the command line (not
    ``None``) sets that field. With ``--resume RUN`` the run's own ``config.yaml`` is the base,
    the output is ``RUN`` and a dataset argument is ignored; otherwise a dataset is required.
    """
    flags = given_options(args, {field.name for field in dataclasses.fields(cls)})
    if args.resume:
        config_file = Path(args.resume) / "config.yaml"
        flags.pop("dataset", None)
        flags["output"] = args.resume
    else:
        if not args.dataset:
            raise ValueError("give a dataset folder (or --resume RUN)")
        config_file = args.config
    return load_config(cls, config_file, args.set, base, **flags)
