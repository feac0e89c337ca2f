"""The ``visprior`` command: the parser of every command group, and the entry point."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from visprior.cli import cxr, demo, export, seg, simplify
from visprior.engine.cpu_memory import keep_freed_memory
from visprior.engine.distributed import exit_distributed
from visprior.nets.registry import list_models

__all__ = ["build_parser", "main"]

DESCRIPTION = (
    "Medical image networks with priors from human vision: 3D segmentation (seg), chest X-rays "
    "with radiologists' gaze (cxr), kernel redundancy (simplify) and deployment (export)."
)


def _list_models(args: argparse.Namespace) -> int:
    print("\n".join(list_models()))
    return 0


def _add_models_command(commands: argparse._SubParsersAction) -> None:
    commands.add_parser("models", help="list the registered networks")


# command -> (declare its parser, run it)
COMMANDS: dict[str, tuple[Callable, Callable[[argparse.Namespace], int]]] = {
    "models": (_add_models_command, _list_models),
    "demo": (demo.add_commands, demo.run),
    "seg": (seg.add_commands, seg.run),
    "cxr": (cxr.add_commands, cxr.run),
    "simplify": (simplify.add_commands, simplify.run),
    "export": (export.add_commands, export.run),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visprior", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)
    for add_commands, _ in COMMANDS.values():
        add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()  # a CPU step re-faults its freed activations otherwise
    code = COMMANDS[args.command][1](args)
    exit_distributed(code)  # under torchrun: leave together, then exit
    return code
