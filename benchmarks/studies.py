"""Every study, its folder and its parts: the table ``python -m benchmarks`` dispatches through.

A study lives in ``benchmarks/<name>/``: ``study.py`` (its code), ``results.json`` (its data and,
per part, the machine, date, repeats and command), ``figure.png`` where it draws one,
``analysis.md`` (written by hand) and ``RESULTS.md`` (generated: its tables, then its analysis).
A part is what ``--only`` runs; most studies have one part of their own name.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.record import ResultsFile


@dataclass
class RunContext:
    """What a part's runner gets: the options, the study's results file, a scratch folder that
    is removed afterwards, and the progress log."""

    args: argparse.Namespace
    store: ResultsFile
    workdir: Path
    log: Callable[[str], None]


@dataclass(frozen=True)
class Study:
    name: str  # its folder under benchmarks/
    label: str  # the letters the analyses cite it by, e.g. "(d2)"
    title: str
    parts: tuple[str, ...]  # the --only names that run it
    run: Callable[[str, RunContext], object]  # (part, context) -> the study's new data
    section: Callable[[object], list[str]]  # data -> its tables
    summary: Callable[[object], list[str]] | None = None  # data -> the index's short table
    figure: Callable[[object, Path], object] | None = None  # data, path -> draws figure.png
    grids: Callable[[argparse.Namespace], list] | None = None  # resumable grids, for --status
    records_repeats: bool = False  # timings: the part's --repeats is recorded
    options: tuple[str, ...] = field(default_factory=tuple)  # the --options it reads
    full_run: tuple[str, ...] = ()  # the parts a run of every study runs (default: the first)


def _module(name: str):
    return importlib.import_module(f"benchmarks.{name}.study")


def _speed(part: str, context: RunContext):
    return _module("speed").run_part(part, context)


def _quality(part: str, context: RunContext):
    quality = _module("quality")
    args = context.args
    minutes = args.minutes or (0.05 if args.quick else 10.0)
    new = quality.run(minutes, args.quick, context.workdir, context.log, args.models)
    return quality.merge(context.store.data, new)


def _mednext_speed(part: str, context: RunContext):
    return _module("mednext_speed").run(context.args.quick, context.args.repeats, context.log)


def _kernel_scaling(part: str, context: RunContext):
    return _module("kernel_scaling").run_part(part, context)


def _kernel_plateau(part: str, context: RunContext):
    return _module("kernel_plateau").run_part(part, context)


def _peers_plateau(part: str, context: RunContext):
    return _module("peers_plateau").run_part(part, context)


def _peers(part: str, context: RunContext):
    peers = _module("peers")
    args = context.args
    new = peers.run_peers(
        args.quick, context.workdir, context.log, args.seeds, args.models, args.minutes
    )
    return peers.merge(context.store.data, new)


def _ggcam(part: str, context: RunContext):
    return _module("ggcam").run_ggcam(context.args.quick, context.workdir)


def _mtunet(part: str, context: RunContext):
    return _module("mtunet").run_mtunet(context.args.quick, context.workdir)


def _gaze_ct(part: str, context: RunContext):
    return _module("gaze_ct").run_part(part, context)


def _simplify(part: str, context: RunContext):
    return _module("simplify").run_simplify(context.args.quick, context.workdir)


def _simplify_criteria(part: str, context: RunContext):
    criteria = _module("simplify_criteria")
    args = context.args
    new = criteria.run_criteria(args.quick, context.workdir, context.log, args.seeds, args.criteria)
    return criteria.merge(context.store.data, new)


def _large_volume(part: str, context: RunContext):
    return _module("large_volume").run(context.args.quick, context.log)


def _planning(part: str, context: RunContext):
    study, args = _module("planning"), context.args
    data = dict(context.store.data or {})  # each part keeps the other's rows
    if part == "planning-chest":
        data["chest"] = study.run_chest_plan(args.quick, context.workdir, context.log)
    else:
        data.update(study.run(args.quick, context.workdir, context.log))
    return data


def _precision(part: str, context: RunContext):
    args = context.args
    minutes = args.minutes or (0.05 if args.quick else 5.0)
    return _module("precision").run(args.quick, args.repeats, minutes, context.workdir, context.log)


def _budget_plan(part: str, context: RunContext):
    return _module("budget_plan").run(part, context)


def _demo_holds(part: str, context: RunContext):
    return _module("demo_holds").run(part, context)


def _lazy(name: str, function: str) -> Callable:
    """``benchmarks.<name>.study.<function>``, imported when first called."""

    def call(*args):
        return getattr(_module(name), function)(*args)

    return call


STUDIES: tuple[Study, ...] = (
    Study(
        "speed",
        "(a)-(c)",
        "the 21^3 depth-wise conv, a training step, sliding-window inference",
        ("speed", "bfr-overhead", "kernel-cut", "malloc", "step-ratio", "autotune-cost"),
        _speed,
        _lazy("speed", "section"),
        summary=_lazy("speed", "summary"),
        figure=_lazy("speed", "write_figure"),
        records_repeats=True,
    ),
    Study(
        "quality",
        "(d)",
        "equal training time on real anatomy",
        ("quality",),
        _quality,
        _lazy("quality", "section"),
        summary=_lazy("quality", "summary"),
        options=("minutes", "models"),
    ),
    Study(
        "mednext_speed",
        "(b2)",
        "MedNeXt-S steps with MONAI's and visprior's depth-wise convs",
        ("mednext-speed",),
        _mednext_speed,
        _lazy("mednext_speed", "mednext_speed_section"),
        records_repeats=True,
    ),
    Study(
        "kernel_scaling",
        "(d2)",
        "plain against BFR kernels at k 7 / 13 / 21, equal iterations",
        ("kernel-scaling", "kernel-scaling-upkern"),
        _kernel_scaling,
        _lazy("kernel_scaling", "scaling_section"),
        summary=_lazy("kernel_scaling", "summary"),
        figure=_lazy("kernel_scaling", "write_scaling_plot"),
        grids=_lazy("kernel_scaling", "grids"),
        options=("seeds", "kernels"),
        full_run=("kernel-scaling", "kernel-scaling-upkern"),
    ),
    Study(
        "kernel_plateau",
        "(d4)",
        "plain against BFR kernels at k 7 / 21, 5 paired seeds, at a plateau",
        ("kernel-plateau",),
        _kernel_plateau,
        _lazy("kernel_plateau", "section"),
        summary=_lazy("kernel_plateau", "summary"),
        grids=_lazy("kernel_plateau", "grids"),
        options=("seeds", "kernels"),
    ),
    Study(
        "peers_plateau",
        "(d5)",
        "peers at a plateau: held-out Dice and the CPU time to reach it, 3 paired seeds",
        ("peers-plateau", "peers-plateau-steps"),
        _peers_plateau,
        _lazy("peers_plateau", "section"),
        summary=_lazy("peers_plateau", "summary"),
        grids=_lazy("peers_plateau", "grids"),
        options=("seeds",),
        full_run=("peers-plateau", "peers-plateau-steps"),
    ),
    Study(
        "peers",
        "(d3)",
        "Dice at equal CPU time: six networks, 5 minutes each",
        ("peers",),
        _peers,
        _lazy("peers", "peers_section"),
        options=("seeds", "models", "minutes"),
    ),
    Study(
        "ggcam",
        "(e)",
        "GG-CAM against no gaze, synthetic films",
        ("ggcam",),
        _ggcam,
        _lazy("ggcam", "ggcam_section"),
    ),
    Study(
        "mtunet",
        "(f)",
        "MT-UNet against its single-task versions, synthetic films",
        ("mtunet",),
        _mtunet,
        _lazy("mtunet", "mtunet_section"),
    ),
    Study(
        "gaze_ct",
        "(e2), (f2)",
        "gaze guidance under a shortcut, and MT-UNet, on films rendered from a real CT",
        ("gaze-ct", "ggcam-ct", "mtunet-ct"),
        _gaze_ct,
        _lazy("gaze_ct", "section"),
        summary=_lazy("gaze_ct", "summary"),
        grids=_lazy("gaze_ct", "grids"),
        options=("rhos",),
    ),
    Study(
        "simplify",
        "(g)",
        "ResNet50 shrunk by kernel redundancy, synthetic films",
        ("simplify",),
        _simplify,
        _lazy("simplify", "simplify_section"),
    ),
    Study(
        "simplify_criteria",
        "(g2)",
        "which channels to cut: the redundancy measure against standard pruning",
        ("simplify-criteria",),
        _simplify_criteria,
        _lazy("simplify_criteria", "criteria_section"),
        figure=_lazy("simplify_criteria", "write_criteria_plot"),
        options=("seeds", "criteria"),
    ),
    Study(
        "large_volume",
        "(h)",
        "a whole 512 x 512 x 300 CT predicted on the CPU",
        ("large-volume",),
        _large_volume,
        _lazy("large_volume", "large_volume_section"),
    ),
    Study(
        "planning",
        "(i)",
        "fingerprint cost, and plans beside nnU-Net v2's",
        ("planning", "planning-chest"),
        _planning,
        _lazy("planning", "planning_section"),
    ),
    Study(
        "precision",
        "(j)",
        "bf16 against float32 on this CPU",
        ("precision",),
        _precision,
        _lazy("precision", "precision_section"),
        records_repeats=True,
        options=("minutes",),
    ),
    Study(
        "budget_plan",
        "(k)",
        "`seg plan --budget` against hand-tuned settings at the same wall time",
        ("budget-plan", "budget-plan-chest-spacing", "budget-plan-brain-widths"),
        _budget_plan,
        _lazy("budget_plan", "section"),
        grids=_lazy("budget_plan", "grids"),
        options=("tasks",),
    ),
    Study(
        "demo_holds",
        "(l)",
        "`make demo` as it ships, 3 seeds: whether it holds on this machine",
        ("demo-holds", "demo-holds-patch", "demo-holds-spacing"),
        _demo_holds,
        _lazy("demo_holds", "section"),
        grids=_lazy("demo_holds", "grids"),
    ),
)

PARTS: dict[str, Study] = {part: study for study in STUDIES for part in study.parts}
