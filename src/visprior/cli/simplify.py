"""``visprior simplify measure | shrink``: kernel redundancy, and networks cut down by it."""

from __future__ import annotations

import argparse
from pathlib import Path

from visprior.cli.options import add_device, add_force_flag, add_output, add_seed, dispatch
from visprior.simplify.criteria import CRITERIA
from visprior.simplify.shrink import ShrinkSettings

__all__ = ["add_commands", "run"]


def add_commands(commands: argparse._SubParsersAction) -> None:
    defaults = ShrinkSettings()
    simplify = commands.add_parser(
        "simplify", help="kernel redundancy of a trained CNN, and a smaller network from it"
    )
    actions = simplify.add_subparsers(dest="simplify_command", required=True)
    _add_measure(actions, defaults)
    _add_shrink(actions, defaults)


def _add_measure(actions: argparse._SubParsersAction, defaults: ShrinkSettings) -> None:
    measure = actions.add_parser(
        "measure", help="per-layer kernel redundancy: table, JSON/CSV and a PNG"
    )
    measure.add_argument("checkpoint", help="run folder or checkpoint file of a 2-D CNN")
    measure.add_argument(
        "data", type=Path, help="probe images: an EGD-CXR-layout folder, image files or folders"
    )
    _add_measure_options(measure, defaults)
    add_output(measure, "folder for the report (default <run>/redundancy)")
    add_force_flag(measure, "replace an earlier report")


def _add_shrink(actions: argparse._SubParsersAction, defaults: ShrinkSettings) -> None:
    shrink = actions.add_parser(
        "shrink",
        help="cut redundant blocks and kernels, fine-tune, repeat while the AUC holds",
    )
    shrink.add_argument("run", type=Path, help="a `visprior cxr train` run folder")
    add_output(shrink, "an unused folder", required=True)
    _add_measure_options(shrink, defaults)
    _add_round_options(shrink, defaults)
    _add_cut_options(shrink, defaults)
    add_seed(shrink, "seed of the fine-tuning and of the random criterion (default: the run's)")
    add_device(shrink, defaults.device)


def _add_round_options(parser: argparse.ArgumentParser, defaults: ShrinkSettings) -> None:
    """How many rounds, and how each fine-tunes and is kept."""
    shrink = parser.add_argument_group("rounds")
    shrink.add_argument(
        "--rounds",
        type=int,
        default=defaults.max_rounds,
        dest="max_rounds",
        help="most cut-and-fine-tune rounds (default %(default)s)",
    )
    shrink.add_argument(
        "--epochs",
        type=int,
        default=defaults.epochs,
        help="fine-tuning epochs per round (default %(default)s)",
    )
    shrink.add_argument(
        "--reinit",
        action="store_true",
        help="train each cut network from fresh weights (default: fine-tune the kept ones)",
    )
    shrink.add_argument(
        "--lr",
        type=float,
        default=defaults.lr,
        help="fine-tuning learning rate, 0: the run's own (default %(default)s)",
    )
    shrink.add_argument(
        "--auc-tolerance",
        type=float,
        default=defaults.auc_tolerance,
        help="largest validation AUC loss a kept round may have; inf: keep every round, for "
        "comparisons at equal size (default %(default)s)",
    )


def _add_cut_options(parser: argparse.ArgumentParser, defaults: ShrinkSettings) -> None:
    """What each round cuts, and how much."""
    shrink = parser.add_argument_group("cuts")
    shrink.add_argument(
        "--criterion",
        choices=CRITERIA,
        default=defaults.criterion,
        help="which channels go: the redundancy measure, global L1 magnitude, global Taylor, "
        "one ratio for all layers, or redundancy's counts with random channels; all but "
        "redundancy need --target-params (default %(default)s)",
    )
    shrink.add_argument(
        "--target-params",
        type=int,
        default=defaults.target_parameters,
        dest="target_parameters",
        help="cut to this many parameters, in rounds of at most --max-step each; 0: cut what "
        "the measure finds redundant (default %(default)s)",
    )
    shrink.add_argument(
        "--waypoints",
        type=int,
        nargs="+",
        default=list(defaults.waypoints),
        help="sizes above --target-params that a round also reaches exactly, largest first "
        "(default: none)",
    )
    shrink.add_argument(
        "--max-step",
        type=float,
        default=defaults.max_step,
        help="with --target-params: largest factor by which one round shrinks the network "
        "(default %(default)s)",
    )
    shrink.add_argument(
        "--max-cut",
        type=float,
        default=defaults.max_cut,
        help="largest share of a layer's kernels cut in one round (default %(default)s)",
    )
    shrink.add_argument(
        "--min-cut",
        type=float,
        default=defaults.min_cut,
        help="a round that loses AUC is retried with half the cut, down to this share "
        "(default %(default)s)",
    )
    shrink.add_argument(
        "--min-channels",
        type=int,
        default=defaults.min_channels,
        help="kernels every layer keeps (default %(default)s)",
    )


def _add_measure_options(parser: argparse.ArgumentParser, defaults: ShrinkSettings) -> None:
    """The redundancy measure's options, which ``measure`` and ``shrink`` share."""
    parser.add_argument(
        "--probes",
        type=int,
        default=defaults.probes,
        help="probe images to use (default %(default)s)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=defaults.threshold,
        help="SSIM from which a kernel counts as redundant (default %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    return dispatch(
        "simplify", args.simplify_command, {"measure": _measure, "shrink": _shrink}, args
    )


def _measure(args: argparse.Namespace) -> int:
    from visprior.simplify.shrink import measure_checkpoint

    report, output = measure_checkpoint(
        args.checkpoint, args.data, args.output, args.probes, args.threshold, args.overwrite
    )
    print(report.table())
    print(f"wrote {output}/redundancy.json, redundancy.csv and redundancy.png")
    return 0


def _shrink(args: argparse.Namespace) -> int:
    from visprior.engine.distributed import is_main_process
    from visprior.simplify.shrink import format_rounds, shrink_run

    names = [field for field in vars(ShrinkSettings()) if hasattr(args, field)]
    settings = ShrinkSettings(**{name: getattr(args, name) for name in names})
    settings.waypoints = tuple(settings.waypoints)
    rounds = shrink_run(args.run, args.output, settings)
    if is_main_process():  # under torchrun: one table, not one per process
        print(format_rounds(rounds))
    return 0
