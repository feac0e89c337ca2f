"""The ``visprior`` command: ``models``, ``demo``, and the ``seg``, ``cxr``, ``simplify`` and
``export`` groups. Each group's module declares its commands (``add_commands``) and runs them
(``run``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from visprior import demo
from visprior.cxr import cli as cxr_cli
from visprior.deploy import cli as export_cli
from visprior.engine.distributed import exit_distributed
from visprior.nets.registry import list_models
from visprior.seg import cli as seg_cli
from visprior.simplify import cli as simplify_cli

__all__ = ["build_parser", "main"]


def _list_models(args: argparse.Namespace) -> int:
    print("\n".join(list_models()))
    return 0


def _add_models_command(commands: argparse._SubParsersAction) -> None:
    commands.add_parser("models", help="list the registered networks")


# command -> (declare its parser, run it)
COMMANDS: dict[str, tuple[Callable, Callable[[argparse.Namespace], int]]] = {
    "models": (_add_models_command, _list_models),
    "demo": (demo.add_commands, demo.run),
    "seg": (seg_cli.add_commands, seg_cli.run),
    "cxr": (cxr_cli.add_commands, cxr_cli.run),
    "simplify": (simplify_cli.add_commands, simplify_cli.run),
    "export": (export_cli.add_commands, export_cli.run),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visprior", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for add_commands, _ in COMMANDS.values():
        add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code = COMMANDS[args.command][1](args)
    exit_distributed(code)  # under torchrun: leave together, then exit
    return code


if __name__ == "__main__":
    sys.exit(main())
