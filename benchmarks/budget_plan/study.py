"""(k) A plan timed for the budget against hand-tuned settings, at the same wall time.

Two tasks with one training case and a held-out part: the demo's brain (Harvard-Oxford
subcortical structures, left hemisphere to train on, right held out) and a chest CT cut at
the midline (``visprior.seg.chest_halves``: nine paired structures, left half to train on,
right half held out). Each unit runs, in fresh processes, what a user would:

- **planned**: ``seg plan DATA --budget MIN``, then ``seg train DATA --budget MIN`` with no
  other option;
- **hand-tuned**: the demo's settings (widths 16/128, 1.5 mm, 48^3 crops, class-balanced crops,
  left-right flips, AdamW 1e-3 with the poly schedule) in bf16, the precision the plan takes
  on a machine that runs it faster, through ``seg train DATA --no-plan --config FILE --budget
  MIN``; on the CT with a chest window of -1000..1000 HU;

then ``seg predict`` and ``seg evaluate`` on the held-out part. ``--budget`` is wall time for
plan, training and validation together, so both arms get the same minutes. Pairs share a seed
(the crops' order and the network's start). The difference is planned minus hand-tuned mean
Dice, with its paired interval.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.grid import Grid, Unit, completeness, merge_keyed, run_grid
from benchmarks.paired import difference_table, paired_difference

ARMS = ("planned", "hand-tuned")
TASKS = {"brain": 10.0, "chest": 30.0}  # task -> budget minutes
SEEDS = (0, 1, 2)
KEY = ("task", "arm", "seed")
CHEST_WINDOW = (-1000.0, 1000.0)
# The spacing pilot (``--only budget-plan-chest-spacing``): the hand-tuned chest settings at
# coarser spacings, one seed, a shorter budget; what a patch of 48^3 covers is what changes.
# float32: it ran on a machine where bf16 is slower (no AMX).
PILOT = "spacing_pilot"
PILOT_PRECISION = "32"
PILOT_SPACINGS_MM = (1.5, 2.5, 3.5)
PILOT_MINUTES = 10.0
PILOT_KEY = ("spacing_mm", "seed")
# The width pilot (``--only budget-plan-brain-widths``): the brain at the spacing and precision
# the plan takes on a machine without fast bf16, the demo's widths against a first stage (the
# full-resolution decoder's width, where most of a step's convolution work is) halved.
WIDTH_PILOT = "width_pilot"
WIDTH_PILOT_WIDTHS = (
    {"feature_size": 16, "hidden_size": 128},
    {"feature_size": [8, 32, 64, 128], "hidden_size": 128},
)
WIDTH_PILOT_SPACING_MM = 1.27
WIDTH_PILOT_KEY = ("widths", "seed")
CHEST_PILOT = "chest_pilot"  # benchmarks/budget_plan/chest_pilot.py writes it
# The CPU default network (``--only budget-plan-chest-network``): the chest as a user without a
# GPU runs it, ``seg plan --budget 30`` then ``seg train --budget 30`` with no option at all,
# so that the plan picks the network too (MONAI's UNet on a CPU, ``seg.budget.default_network``).
NETWORK_PILOT = "default_network"
NETWORK_ARM = "planned, CPU default network"
NETWORK_KEY = ("seed",)
TABLE_HEAD = (
    "| task | budget | arm | seed | settings (widths, spacing, patch, precision, crops, flips) "
    "| steps | s/step (planned s/step) | train min | wall min | mean Dice |",
    "|---|---|---|---|---|---|---|---|---|---|",
)


def _visprior(*args: str, log_to: Path) -> None:
    """One ``visprior`` command in a fresh process; its output goes to ``log_to``."""
    with open(log_to, "a") as log:
        log.write(f"$ visprior {' '.join(args)}\n")
        log.flush()
        done = subprocess.run(
            [sys.executable, "-m", "visprior.cli", *args], stdout=log, stderr=subprocess.STDOUT
        )
    if done.returncode != 0:
        raise RuntimeError(f"visprior {args[0]} {args[1]} failed: see {log_to}")


def write_task(task: str, root: Path) -> Path:
    if task == "brain":
        from visprior.data.brain_atlas import write_hemisphere_dataset

        return write_hemisphere_dataset(root)
    from visprior.seg.chest_halves import write_chest_halves_dataset

    return write_chest_halves_dataset(root)


def hand_tuned_config(
    task: str,
    dataset: Path,
    run: Path,
    seed: int,
    spacing_mm: float | None = None,
    precision: str = "bf16",
    model_kwargs: dict | None = None,
) -> dict:
    """The demo's ``seg train`` config for ``task``, as a YAML mapping; ``spacing_mm``,
    ``precision`` and ``model_kwargs`` replace its own (the pilots)."""
    import dataclasses

    from visprior.engine.config import config_to_dict
    from visprior.seg.demo import DemoConfig, demo_train_config

    config = demo_train_config(DemoConfig(seed=seed, precision=precision), dataset, run)
    config = dataclasses.replace(config, time_limit_minutes=float("inf"))
    values = config_to_dict(config)
    if task == "chest":
        values["preprocessing"] |= {"intensity": "ct", "ct_window": list(CHEST_WINDOW)}
    if spacing_mm is not None:
        values["preprocessing"]["spacing"] = [spacing_mm] * 3
    if model_kwargs is not None:
        values["model_kwargs"] = dict(model_kwargs)
    values["time_limit_minutes"] = None  # YAML has no inf: the budget decides
    return {k: v for k, v in values.items() if v is not None}


def _unit(
    task: str,
    arm: str,
    seed: int,
    minutes: float,
    spacing_mm: float | None = None,
    precision: str = "bf16",
    model_kwargs: dict | None = None,
):
    def run(work: Path, resume: bool) -> dict:
        try:
            return attempt(work, resume)
        except RuntimeError as error:  # the row records it; the grid runs it again next time
            return {"error": f"{error}\n{(work / 'commands.log').read_text()[-1500:]}"}

    def attempt(work: Path, resume: bool) -> dict:
        log = work / "commands.log"
        dataset = write_task(task, work / "data")
        run_dir = work / "run"
        started = time.perf_counter()
        if resume:
            _visprior("seg", "train", "--resume", str(run_dir), log_to=log)
        elif arm in ("planned", NETWORK_ARM):
            # "planned": the network of the hand-tuned arm, so that the plan's settings are
            # compared; the CPU default arm lets the plan choose the network as well
            network = ("--model", "repuxnet") if arm == "planned" else ()
            _visprior(
                "seg", "plan", str(dataset), "--budget", f"{minutes:g}", *network, log_to=log
            )  # fmt: skip
            _visprior(
                "seg", "train", str(dataset), "--budget", f"{minutes:g}",
                "--output", str(run_dir), "--set", f"seed={seed}", log_to=log,
            )  # fmt: skip
        else:
            import yaml

            config_file = work / "hand_tuned.yaml"
            config = hand_tuned_config(
                task, dataset, run_dir, seed, spacing_mm, precision, model_kwargs
            )
            config_file.write_text(yaml.safe_dump(config))
            _visprior(
                "seg", "train", str(dataset), "--no-plan", "--config", str(config_file),
                "--budget", f"{minutes:g}", "--output", str(run_dir), log_to=log,
            )  # fmt: skip
        wall = time.perf_counter() - started
        predictions = work / "predictions"
        _visprior(
            "seg", "predict", str(run_dir), str(dataset / "imagesTs"), "--output",
            str(predictions), "--force", log_to=log,
        )  # fmt: skip
        _visprior(
            "seg", "evaluate", str(predictions), str(dataset / "labelsTs"), "--dataset",
            str(dataset), "--output", str(work / "evaluation"), "--force", log_to=log,
        )  # fmt: skip
        row = {**_figures(work, dataset, run_dir), "wall_minutes": wall / 60, "machine": _machine()}
        if arm == NETWORK_ARM:  # and what the mirrored prediction (`--tta`) adds
            mirrored = work / "predictions_mirrored"
            _visprior(
                "seg", "predict", str(run_dir), str(dataset / "imagesTs"), "--output",
                str(mirrored), "--force", "--tta", log_to=log,
            )  # fmt: skip
            _visprior(
                "seg", "evaluate", str(mirrored), str(dataset / "labelsTs"), "--dataset",
                str(dataset), "--output", str(work / "evaluation_mirrored"), "--force",
                log_to=log,
            )  # fmt: skip
            summary = json.loads((work / "evaluation_mirrored" / "summary.json").read_text())
            row["mirrored_mean_dice"] = summary["mean_foreground_dice"]
        return row

    return run


def _machine() -> str:
    from benchmarks.demo_holds.study import machine_label
    from benchmarks.record import machine_description

    return machine_label(machine_description())


def _figures(work: Path, dataset: Path, run_dir: Path) -> dict:
    from visprior.checkpoint_io import load_checkpoint

    summary = json.loads((work / "evaluation" / "summary.json").read_text())
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    config = yaml_config(run_dir / "config.yaml")
    plan = {}
    plan_file = dataset / "visprior_plans.json"
    if config.get("plan_file") and plan_file.is_file():
        budget = json.loads(plan_file.read_text())["plan"]["budget"]
        plan = {
            key: budget[key]
            for key in (
                "expected_step_seconds", "step_time_measured", "iterations", "planning_seconds",
                "bf16_speedup", "reaches_steps_target",
            )
        }  # fmt: skip
    iterations = int(state["iteration"])
    return {
        "mean_dice": summary["mean_foreground_dice"],
        "dice": {c: v["dice"]["mean"] for c, v in summary["classes"].items()},
        "iterations": iterations,
        "training_minutes": state["training_seconds"] / 60,
        "step_seconds": state["training_seconds"] / max(iterations, 1),
        "settings": {
            "model": config["model"],
            "model_kwargs": config["model_kwargs"],
            "spacing": config["preprocessing"]["spacing"],
            "roi_size": config["roi_size"],
            "precision": config["precision"],
            "crop_sampling": config["crop_sampling"],
            "flip_axes": config["flip_axes"],
        },
        "plan": plan,
    }


def yaml_config(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def _started(work: Path) -> bool:
    return (work / "run" / "checkpoints" / "last.pt").is_file()


def budget_grid(tasks: dict[str, float], seeds=SEEDS) -> Grid:
    """Pairs first: both arms of a seed before the next seed, the brain before the chest."""
    units = [
        Unit({"task": task, "arm": arm, "seed": seed}, _unit(task, arm, seed, minutes), _started)
        for task, minutes in tasks.items()
        for seed in seeds
        for arm in ARMS
    ]
    return Grid(units, {_budget_key(task): minutes for task, minutes in tasks.items()}, KEY)


def _budget_key(task: str) -> str:
    """One setting per task, so that a grid run on one task resumes a file holding others."""
    return f"budget_minutes_{task}"


def _budgets(settings: dict) -> dict[str, float]:
    return {task: settings[_budget_key(task)] for task in TASKS if _budget_key(task) in settings}


def _tasks(args) -> dict[str, float]:
    if getattr(args, "quick", False):
        return {"brain": 0.5}
    chosen = getattr(args, "tasks", None) or list(TASKS)
    return {task: TASKS[task] for task in chosen}


def _seeds(args) -> tuple[int, ...]:
    return (0,) if getattr(args, "quick", False) else SEEDS


def pilot_grid(minutes: float = PILOT_MINUTES, spacings=PILOT_SPACINGS_MM) -> Grid:
    units = [
        Unit(
            {"spacing_mm": s, "seed": 0},
            _unit("chest", "hand-tuned", 0, minutes, s, PILOT_PRECISION),
            _started,
        )
        for s in spacings
    ]
    return Grid(units, {"minutes": minutes, "precision": PILOT_PRECISION}, PILOT_KEY)


def _widths_name(model_kwargs: dict) -> str:
    feature = model_kwargs["feature_size"]
    feature = "-".join(map(str, feature)) if isinstance(feature, list) else str(feature)
    return f"{feature}/{model_kwargs['hidden_size']}"


def width_pilot_grid(minutes: float = PILOT_MINUTES) -> Grid:
    units = [
        Unit(
            {"widths": _widths_name(kwargs), "seed": 0},
            _unit("brain", "hand-tuned", 0, minutes, WIDTH_PILOT_SPACING_MM, "32", kwargs),
            _started,
        )
        for kwargs in WIDTH_PILOT_WIDTHS
    ]
    settings = {"minutes": minutes, "precision": "32", "spacing_mm": WIDTH_PILOT_SPACING_MM}
    return Grid(units, settings, WIDTH_PILOT_KEY)


def network_grid(minutes: float = TASKS["chest"], seeds=SEEDS) -> Grid:
    units = [
        Unit(
            {"task": "chest", "arm": NETWORK_ARM, "seed": seed},
            _unit("chest", NETWORK_ARM, seed, minutes),
            _started,
        )
        for seed in seeds
    ]
    return Grid(units, {"minutes": minutes}, NETWORK_KEY)


PILOTS = {  # part -> (where in the data, its grid, its key)
    "budget-plan-chest-spacing": (PILOT, pilot_grid, PILOT_KEY),
    "budget-plan-brain-widths": (WIDTH_PILOT, width_pilot_grid, WIDTH_PILOT_KEY),
    "budget-plan-chest-network": (NETWORK_PILOT, network_grid, NETWORK_KEY),
}


def grids(args) -> list:
    pilots = [(part, within, build()) for part, (within, build, _) in PILOTS.items()]
    return [("budget-plan", None, budget_grid(_tasks(args), _seeds(args))), *pilots]


def run(part: str, context) -> dict:
    if part in PILOTS:
        within, build, key = PILOTS[part]

        def merge_rows(earlier: dict | None, new: dict) -> dict:
            return merge_pilot(earlier, new, key)

        run_grid(build(), context.store, part, merge_rows, context.log, within=within)
        return dict(context.store.data)
    seeds = _seeds(context.args)

    def merge_rows(earlier: dict | None, new: dict) -> dict:
        return merge(earlier, new, seeds)

    grid = budget_grid(_tasks(context.args), seeds)
    return run_grid(grid, context.store, part, merge_rows, context.log)


def merge(earlier: dict | None, new: dict, seeds=SEEDS) -> dict:
    """``new``'s rows replace earlier rows of the same task, arm and seed; ``seeds``: the
    grid's, for the report's count of what is left."""
    rows = {tuple(r[k] for k in KEY): r for r in (earlier or {}).get("rows", [])}
    rows.update({tuple(r[k] for k in KEY): r for r in new["rows"]})
    order = {task: i for i, task in enumerate(TASKS)}
    ordered = sorted(
        rows.values(), key=lambda r: (order[r["task"]], r["seed"], ARMS.index(r["arm"]))
    )
    settings = (earlier or {}).get("settings", {}) | new["settings"]
    merged = {"settings": settings, "seeds": list(seeds), "rows": ordered}
    for kept in (
        "superseded",
        PILOT,
        WIDTH_PILOT,
        CHEST_PILOT,
        NETWORK_PILOT,
    ):  # earlier rules; the pilots
        if (earlier or {}).get(kept):
            merged[kept] = earlier[kept]
    return merged


def merge_pilot(earlier: dict | None, new: dict, key=PILOT_KEY) -> dict:
    merged = merge_keyed(earlier, new, key)
    if (earlier or {}).get("superseded"):  # rows of an earlier rule stay on record
        merged["superseded"] = earlier["superseded"]
    return merged


def _shown(settings: dict) -> str:
    widths = "/".join(str(v) for v in settings["model_kwargs"].values()) or "default"
    if settings.get("model", "repuxnet") != "repuxnet":
        widths = f"{settings['model']} {widths}"
    spacing = " x ".join(f"{s:.3g}" for s in settings["spacing"])
    roi = " x ".join(str(s) for s in settings["roi_size"])
    flips = ",".join(str(a) for a in settings["flip_axes"])
    return (
        f"{widths}, {spacing} mm, {roi}, {settings['precision']}, "
        f"{settings['crop_sampling']}, flips {flips}"
    )


def section(data: dict) -> list[str]:
    budgets = _budgets(data["settings"])
    lines = [
        "## (k) A plan timed for the budget against hand-tuned settings",
        "",
        "Each arm's whole run (plan, training, validation) gets the same wall-time budget "
        "(`--budget`); held-out mean Dice over the structures. Planned: `seg plan --budget` then "
        "`seg train --budget` with no other option. Hand-tuned: the demo's settings in bf16.",
        "",
        *TABLE_HEAD,
    ]
    rows = [r for r in data["rows"] if not r.get("error")]
    lines += [_row(r, budgets) for r in rows]
    differences = {}
    for task in budgets:
        arms = {
            arm: {r["seed"]: r["mean_dice"] for r in rows if r["task"] == task and r["arm"] == arm}
            for arm in ARMS
        }
        if set(arms["planned"]) & set(arms["hand-tuned"]):
            differences[f"{task}: planned - hand-tuned"] = paired_difference(
                arms["planned"], arms["hand-tuned"]
            )
    if differences:
        lines += ["", *difference_table(differences, "mean Dice")]
    grid = budget_grid(budgets, data.get("seeds", SEEDS))
    done, planned = completeness([tuple(u.fields[k] for k in KEY) for u in grid.units], data, KEY)
    if done < planned:
        lines += ["", f"Partial: {done} of {planned} units done; the grid resumes."]
    failed = [r for r in data["rows"] if r.get("error")]
    for r in failed:
        lines.append(f"- failed: {r['task']} {r['arm']} seed {r['seed']}: {r['error'][-300:]}")
    if data.get(PILOT):
        lines += ["", *pilot_section(data[PILOT])]
    if data.get(WIDTH_PILOT):
        lines += ["", *width_pilot_section(data[WIDTH_PILOT])]
    if data.get(NETWORK_PILOT):
        lines += ["", *network_section(data[NETWORK_PILOT])]
    if data.get(CHEST_PILOT):
        from benchmarks.budget_plan import chest_pilot

        lines += ["", *chest_pilot.section(data[CHEST_PILOT])]
    if data.get("superseded"):
        lines += [
            "",
            "Rows of earlier rules, kept as the evidence for the change (not paired above):",
            "",
            *TABLE_HEAD,
            *[_row(r, budgets) for r in data["superseded"]],
            "",
            *[f"- {r['arm']} seed {r['seed']}: {r['rule']}" for r in data["superseded"]],
        ]
    return lines


def network_section(pilot: dict) -> list[str]:
    """The chest as a user without a GPU runs it: the plan chose the network."""
    minutes = pilot["settings"]["minutes"]
    rows = [r for r in pilot["rows"] if not r.get("error")]
    classes = list(rows[0]["dice"]) if rows else []
    lines = [
        f"The chest with no option but the budget (`--only budget-plan-chest-network`): `seg plan "
        f"--budget {minutes:g}`, then `seg train --budget {minutes:g}`; the plan picks the "
        "network as well (on a machine without a GPU, MONAI's UNet). Predicted in one pass.",
        "",
        *TABLE_HEAD,
        *[_row(r, {"chest": minutes}) for r in rows],
    ]
    if rows:
        lines += [
            "",
            "| seed | machine | " + " | ".join(classes) + " |",
            "|---|---|" + "---|" * len(classes),
            *[
                f"| {r['seed']} | {r.get('machine', '')} | "
                + " | ".join(f"{r['dice'][c]:.3f}" for c in classes)
                + " |"
                for r in rows
            ],
        ]
    mirrored = [r for r in rows if "mirrored_mean_dice" in r]
    if mirrored:
        lines += [
            "",
            "Predicted mirrored left-right (`seg predict --tta`): "
            + "; ".join(f"seed {r['seed']} {r['mirrored_mean_dice']:.3f}" for r in mirrored)
            + ".",
        ]
    if pilot.get("superseded"):
        lines += [
            "",
            "Rows of an earlier rule, kept as the evidence for the change:",
            "",
            *TABLE_HEAD,
            *[_row(r, {"chest": minutes}) for r in pilot["superseded"]],
            "",
            *[
                f"- seed {r['seed']}: {r['rule']}; mirrored {r['mirrored_mean_dice']:.3f}"
                for r in pilot["superseded"]
            ],
        ]
    grid = network_grid(minutes, pilot.get("seeds", SEEDS))
    done, planned = completeness([(u.fields["seed"],) for u in grid.units], pilot, NETWORK_KEY)
    if done < planned:
        lines += ["", f"Partial: {done} of {planned} units done; the grid resumes."]
    for r in pilot["rows"]:
        if r.get("error"):
            lines.append(f"- failed: seed {r['seed']}: {r['error'][-300:]}")
    return lines


def _row(r: dict, budgets: dict) -> str:
    expected = r["plan"].get("expected_step_seconds")
    step = f"{r['step_seconds']:.2f}" + (f" ({expected:.2f})" if expected else "")
    return (
        f"| {r['task']} | {budgets[r['task']]:g} min | {r['arm']} | {r['seed']} | "
        f"{_shown(r['settings'])} | {r['iterations']} | {step} | "
        f"{r['training_minutes']:.1f} | {r['wall_minutes']:.1f} | {r['mean_dice']:.3f} |"
    )


def pilot_section(pilot: dict) -> list[str]:
    classes = list(next(r["dice"] for r in pilot["rows"] if not r.get("error")))
    lines = [
        f"Spacing pilot on the chest: the hand-tuned settings (48^3 crops) in "
        f"{'float32' if pilot['settings']['precision'] == '32' else 'bf16'} at "
        f"{pilot['settings']['minutes']:g} minutes, seed 0, at other spacings; held-out Dice "
        "per structure.",
        "",
        "| spacing | steps | s/step | mean Dice | " + " | ".join(classes) + " |",
        "|---" * (4 + len(classes)) + "|",
    ]
    for r in pilot["rows"]:
        if r.get("error"):
            lines.append(f"| {r['spacing_mm']:g} mm | failed: {r['error'][-200:]} |")
            continue
        lines.append(
            f"| {r['spacing_mm']:g} mm | {r['iterations']} | {r['step_seconds']:.2f} | "
            f"{r['mean_dice']:.3f} | " + " | ".join(f"{r['dice'][c]:.3f}" for c in classes) + " |"
        )
    return lines


def width_pilot_section(pilot: dict) -> list[str]:
    from benchmarks.demo_holds.study import steps_and_dice_table

    settings = pilot["settings"]
    lines = [
        f"Width pilot on the brain: the hand-tuned settings (48^3 crops) in float32 at "
        f"{settings['spacing_mm']:g} mm and {settings['minutes']:g} minutes, seed 0; widths "
        "as feature size (or the four stage widths) / hidden size.",
        "",
        *steps_and_dice_table(pilot["rows"], "widths", lambda r: r["widths"]),
    ]
    return lines
