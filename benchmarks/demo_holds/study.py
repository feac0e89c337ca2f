"""(l) Whether ``make demo`` holds: ``visprior demo --seed S`` with nothing else, 3 seeds.

Each unit runs the demo as a user would, in a fresh process: it plans for its 10 minutes on
this machine (``seg plan --budget``'s timing), trains, predicts the held-out right hemisphere
and scores it. The target (issue: "the demo holds on any 2-core machine"): held-out mean Dice
at least 0.90 and the accumbens, the smallest structure, at least 0.8, on every seed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.grid import Grid, Unit, completeness, run_grid

SEEDS = (0, 1, 2)
MINUTES = 10.0
KEY = ("seed",)
TARGET_MEAN, TARGET_ACCUMBENS = 0.90, 0.8


def _minutes(args) -> float:
    return 0.3 if getattr(args, "quick", False) else MINUTES


def _seeds(args) -> tuple[int, ...]:
    return (0,) if getattr(args, "quick", False) else SEEDS


def _unit(seed: int, minutes: float) -> Unit:
    def run(work: Path, resume: bool) -> dict:
        command = [sys.executable, "-m", "visprior.cli", "demo", "--seed", str(seed)]
        command += ["--minutes", f"{minutes:g}", "--output", str(work)]
        command += ["--resume"] if resume else []
        started = time.perf_counter()
        with open(work / "demo.log", "a") as log:
            done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            return {"error": (work / "demo.log").read_text()[-2000:]}
        return {**_figures(work), "wall_minutes": (time.perf_counter() - started) / 60}

    def started(work: Path) -> bool:
        return any(work.glob("runs/*/checkpoints/last.pt"))

    return Unit({"seed": seed}, run, started)


def _figures(work: Path) -> dict:
    import yaml

    from visprior.checkpoint_io import load_checkpoint

    (run_dir,) = (work / "runs").iterdir()
    summary = json.loads((run_dir / "evaluation" / "summary.json").read_text())
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    budget = json.loads(Path(config["plan_file"]).read_text())["plan"]["budget"]
    iterations = int(state["iteration"])
    return {
        "mean_dice": summary["mean_foreground_dice"],
        "dice": {c: v["dice"]["mean"] for c, v in summary["classes"].items()},
        "iterations": iterations,
        "expected_iterations": budget["iterations"],
        "expected_step_seconds": budget["expected_step_seconds"],
        "step_seconds": state["training_seconds"] / max(iterations, 1),
        "planning_seconds": budget["planning_seconds"],
        "settings": {
            "model_kwargs": config["model_kwargs"],
            "spacing": config["preprocessing"]["spacing"],
            "roi_size": config["roi_size"],
            "precision": config["precision"],
        },
    }


def demo_grid(minutes: float, seeds=SEEDS) -> Grid:
    units = [_unit(seed, minutes) for seed in seeds]
    return Grid(units, {"minutes": minutes}, KEY)


def grids(args) -> list:
    return [("demo-holds", None, demo_grid(_minutes(args), _seeds(args)))]


def run(part: str, context) -> dict:
    seeds = _seeds(context.args)

    def merge(earlier: dict | None, new: dict) -> dict:
        rows = {r["seed"]: r for r in (earlier or {}).get("rows", [])}
        rows.update({r["seed"]: r for r in new["rows"]})
        ordered = [rows[s] for s in sorted(rows)]
        return {"settings": new["settings"], "seeds": list(seeds), "rows": ordered}

    grid = demo_grid(_minutes(context.args), seeds)
    return run_grid(grid, context.store, part, merge, context.log)


def section(data: dict) -> list[str]:
    minutes = data["settings"]["minutes"]
    lines = [
        "## (l) Whether the demo holds",
        "",
        f"`visprior demo --seed S --minutes {minutes:g}`: planned on this machine for its "
        "wall time, then trained, predicted and scored on the held-out right hemisphere. Target: "
        f"mean Dice >= {TARGET_MEAN:.2f} and accumbens >= {TARGET_ACCUMBENS:.1f} on every seed.",
        "",
        "| seed | widths, spacing, patch, precision | steps (plan expected) "
        "| s/step (planned) | demo wall min | mean Dice | accumbens |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = [r for r in data["rows"] if not r.get("error")]
    for r in rows:
        s = r["settings"]
        shown = (
            f"{'/'.join(str(v) for v in s['model_kwargs'].values())}, "
            f"{' x '.join(f'{v:.3g}' for v in s['spacing'])} mm, "
            f"{' x '.join(str(v) for v in s['roi_size'])}, "
            f"{'float32' if s['precision'] == '32' else s['precision']}"
        )
        lines.append(
            f"| {r['seed']} | {shown} | {r['iterations']} ({r['expected_iterations']}) | "
            f"{r['step_seconds']:.2f} ({r['expected_step_seconds']:.2f}) | "
            f"{r['wall_minutes']:.1f} | {r['mean_dice']:.3f} | {r['dice']['accumbens']:.3f} |"
        )
    if rows:
        held = [
            r for r in rows
            if r["mean_dice"] >= TARGET_MEAN and r["dice"]["accumbens"] >= TARGET_ACCUMBENS
        ]  # fmt: skip
        lines += ["", f"Target met on {len(held)} of {len(rows)} seeds."]
    grid = demo_grid(minutes, data.get("seeds", SEEDS))
    done, planned = completeness([(u.fields["seed"],) for u in grid.units], data, KEY)
    if done < planned:
        lines += ["", f"Partial: {done} of {planned} units done; the grid resumes."]
    for r in data["rows"]:
        if r.get("error"):
            lines.append(f"- failed: seed {r['seed']}: {r['error'][-300:]}")
    return lines
