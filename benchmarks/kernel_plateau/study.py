"""(d4) The kernel study at a plateau: plain against BFR RepUX-Net kernels at k = 7 and 21,
five paired seeds, each run long enough that doubling its iterations no longer moves the
held-out Dice by 0.01.

(d2) stopped at 200 iterations: its curves still rose and the smallest structure scored 0 in
every run, so it could not say whether BFR rescues large kernels. This study pins its own
settings (:data:`SETTINGS_FULL`) so that changes to the demo's defaults do not move it: the
demo's widths, 1.6 mm, 48^3 crops (more than 2k voxels a side for k = 21), bf16 autocast, the
poly schedule over the iterations. Every unit is one ``visprior demo --settings hand-tuned``
run in a fresh process; Dice is measured on the held-out right hemisphere, and the
checkpoint is chosen on the training hemisphere (the demo's ``--fold -1`` validation).

The plateau is shown, not assumed: for :data:`SETTINGS_FULL`'s ``plateau_seeds`` every arm
also runs at half the iterations, and the report gives the change of held-out Dice.

One seed's run of each arm keeps its best checkpoint outside the repository, under
``$VISPRIOR_STUDY_RUNS`` (default ``~/visprior-study-runs``) / ``kernel_plateau``; the row
records the path, and the unit's command remakes it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from benchmarks.demo_runs import has_checkpoint, run_network
from benchmarks.grid import Grid, Unit, completeness, merge_keyed, run_grid
from benchmarks.kernel_scaling.study import (
    KINDS,
    initial_profile,
    mean_sd,
    profile_table,
    scaling_table,
    smallest_structure,
    trained_profile,
)
from benchmarks.paired import difference_table, paired_difference

SETTINGS_FULL = {
    "kernels": (7, 21),
    "seeds": (0, 1, 2, 3, 4),
    "iterations": 2000,
    "plateau_iterations": 1000,  # the doubling check: these against "iterations"
    "plateau_seeds": (0,),
    "val_every": 250,
    "spacing_mm": 1.6,
    "roi": 48,
    "precision": "bf16",
}
SETTINGS_QUICK = {
    **SETTINGS_FULL,
    "kernels": (3,),
    "seeds": (0,),
    "iterations": 2,
    "plateau_iterations": 1,
    "plateau_seeds": (),  # the doubling check's tables are tested on made-up rows
    "val_every": 1,
    "precision": "32",
}
KEY_FIELDS = ("kind", "k", "seed", "iterations")
PLATEAU_CHANGE = 0.01  # held-out mean Dice moves less than this when iterations double
KEPT_SEED = 0  # this seed's full-length run of each arm keeps its checkpoint
RUNS_ENV = "VISPRIOR_STUDY_RUNS"


def settings_for(quick: bool, seeds=None, kernels=None) -> dict:
    settings = dict(SETTINGS_QUICK if quick else SETTINGS_FULL)
    settings["seeds"] = tuple(seeds or settings["seeds"])
    settings["kernels"] = tuple(kernels or settings["kernels"])
    return settings


def _fixed(settings: dict) -> dict:
    """What every row shares: everything but the seeds and kernels (units may be added)."""
    return {k: v for k, v in settings.items() if k not in ("seeds", "kernels")}


def kept_runs_root(quick: bool, work: Path, study: str = "kernel_plateau") -> Path:
    """Where ``study``'s kept checkpoints go: ``$VISPRIOR_STUDY_RUNS`` or
    ``~/visprior-study-runs``, then the study's name; a quick run keeps them beside its
    results file instead (``work`` is a unit's folder under the study's ``.work``)."""
    if os.environ.get(RUNS_ENV):
        return Path(os.environ[RUNS_ENV]) / study
    if quick:
        return work.parent.parent / ".kept"
    return Path.home() / "visprior-study-runs" / study


def demo_options(k: int | None, seed: int, iterations: int, settings: dict) -> list[str]:
    """The ``visprior demo`` options of one unit (besides ``--model``); ``k`` None keeps the
    network's own kernel size."""
    return [
        "--iterations", str(iterations),
        *(["--kernel-size", str(k)] if k is not None else []),
        "--seed", str(seed),
        "--val-every", str(settings["val_every"]),
        "--spacing-mm", str(settings["spacing_mm"]),
        "--roi", str(settings["roi"]),
        "--precision", settings["precision"],
    ]  # fmt: skip


def demo_command(name: str, options: list[str]) -> str:
    """The command a reader runs to remake one unit's run (OUT: a folder of their choice)."""
    return " ".join(["visprior demo --settings hand-tuned --model", name, "--output OUT", *options])


def plateau_grid(quick: bool, seeds=None, kernels=None) -> Grid:
    """Every (kind, k, seed) at the full iterations; a plateau seed's runs at half follow its
    full-length ones, so that the doubling check is answered early (before the grid is run
    out at iterations that may prove too few)."""
    settings = settings_for(quick, seeds, kernels)
    units = []
    for seed in settings["seeds"]:
        lengths = [settings["iterations"]]
        if seed in settings["plateau_seeds"]:
            lengths.append(settings["plateau_iterations"])
        for iterations in lengths:
            for k in settings["kernels"]:
                for kind, name in KINDS:
                    units.append(_unit(kind, name, k, seed, iterations, settings, quick))
    return Grid(units, _fixed(settings), KEY_FIELDS)


def _unit(
    kind: str, name: str, k: int, seed: int, iterations: int, settings: dict, quick: bool
) -> Unit:
    fields = {"kind": kind, "k": k, "seed": seed, "iterations": iterations}
    options = demo_options(k, seed, iterations, settings)
    keep = seed == KEPT_SEED and iterations == settings["iterations"]

    def run(work: Path, resume: bool) -> dict:
        row = run_network(name, 0, work.parent, options, tag=work.name, resume=resume)
        if row.get("error"):
            return row
        run_dir = Path(row["run_dir"])
        row["kernel_profile"] = trained_profile(run_dir)
        row["initial_profile"] = initial_profile(name, k)
        row["command"] = demo_command(name, options)
        if keep:
            target = kept_runs_root(quick, work) / f"{kind}-k{k}-seed{seed}" / "best.pt"
            row["kept_checkpoint"] = str(keep_checkpoint(run_dir, target))
        return row

    return Unit(fields, run, has_checkpoint)


def keep_checkpoint(run_dir: Path, target: Path) -> Path:
    """Copy the run's best checkpoint to ``target``, whole or not at all; ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".pt.partial")
    shutil.copyfile(run_dir / "checkpoints" / "best.pt", partial)
    partial.replace(target)
    return target


def merge(earlier: dict | None, new: dict) -> dict:
    merged = merge_keyed(earlier, new, KEY_FIELDS)
    order = {kind: i for i, (kind, _) in enumerate(KINDS)}
    merged["rows"].sort(key=lambda r: (r["iterations"], r["k"], order[r["kind"]], r["seed"]))
    rows = merged["rows"]
    merged["settings"] = {
        **new["settings"],
        "kernels": sorted({r["k"] for r in rows}),
        "seeds": sorted({r["seed"] for r in rows}),
    }
    return merged


def run_part(part: str, context) -> dict:
    args = context.args
    grid = plateau_grid(args.quick, args.seeds, args.kernels)
    return run_grid(grid, context.store, part, merge, context.log)


def grids(args) -> list[tuple[str, None, Grid]]:
    return [("kernel-plateau", None, plateau_grid(args.quick, args.seeds, args.kernels))]


def _good(rows: list[dict]) -> list[dict]:
    return [r for r in rows if not r.get("error")]


def _full_length(data: dict) -> dict:
    """The data as (d2)'s tables take it: the rows at the full iteration count."""
    iterations = data["settings"]["iterations"]
    rows = [r for r in data["rows"] if r["iterations"] == iterations]
    return {"settings": data["settings"], "rows": rows}


def plateau_table(data: dict) -> list[str]:
    settings = data["settings"]
    full, half = settings["iterations"], settings["plateau_iterations"]
    rows = _good(data["rows"])
    by_key = {(r["kind"], r["k"], r["seed"], r["iterations"]): r for r in rows}
    lines = [
        f"| k | kernel | seed | mean Dice @ {half} | mean Dice @ {full} | change | plateau |",
        "|---|---|---|---|---|---|---|",
    ]
    for (kind, k, seed, iterations), short in sorted(by_key.items()):
        long = by_key.get((kind, k, seed, full))
        if iterations != half or long is None:
            continue
        change = long["mean_foreground_dice"] - short["mean_foreground_dice"]
        reached = "yes" if abs(change) < PLATEAU_CHANGE else "no"
        lines.append(
            f"| {k} | {kind} | {seed} | {short['mean_foreground_dice']:.3f} | "
            f"{long['mean_foreground_dice']:.3f} | {change:+.3f} | {reached} |"
        )
    return lines if len(lines) > 2 else []


def class_table(data: dict) -> list[str]:
    rows = _good(_full_length(data)["rows"])
    if not rows:
        return []
    classes = sorted(rows[0]["dice"], key=lambda c: rows[0].get("class_voxels", {}).get(c, 0))
    lines = [
        "| structure | "
        + " | ".join(f"{kind} k = {k}" for k in data["settings"]["kernels"] for kind, _ in KINDS)
        + " |",
        "|---|" + "---|" * (len(KINDS) * len(data["settings"]["kernels"])),
    ]
    for name in classes:
        cells = []
        for k in data["settings"]["kernels"]:
            for kind, _ in KINDS:
                values = [r["dice"][name] for r in rows if r["k"] == k and r["kind"] == kind]
                cells.append(mean_sd(values))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _by_seed(rows: list[dict], kind: str, k: int, score) -> dict[int, float]:
    return {r["seed"]: score(r) for r in rows if r["kind"] == kind and r["k"] == k}


def differences(data: dict) -> dict:
    """BFR - plain at each k, and k = largest - smallest for each kind, paired by seed:
    mean Dice and the smallest structure's Dice."""
    rows = _good(_full_length(data)["rows"])
    small = smallest_structure(rows)
    scores = {"mean Dice": lambda r: r["mean_foreground_dice"]}
    if small:
        scores[f"{small} Dice"] = lambda r: r["dice"][small]
    kernels = data["settings"]["kernels"]
    out = {}
    for what, score in scores.items():
        for k in kernels:
            arm, base = _by_seed(rows, "BFR", k, score), _by_seed(rows, "plain", k, score)
            if set(arm) & set(base):
                out[f"k = {k}, BFR - plain, {what}"] = paired_difference(arm, base)
        if len(kernels) > 1:
            large, little = max(kernels), min(kernels)
            for kind, _ in KINDS:
                arm = _by_seed(rows, kind, large, score)
                base = _by_seed(rows, kind, little, score)
                if set(arm) & set(base):
                    key = f"{kind}, k = {large} - k = {little}, {what}"
                    out[key] = paired_difference(arm, base)
    return out


def section(data: dict) -> list[str]:
    settings = data["settings"]
    # the planned design: the full one, or (a quick or restricted run) what the data holds
    design = SETTINGS_FULL if settings["iterations"] == SETTINGS_FULL["iterations"] else settings
    grid_keys = [
        (kind, k, seed, iterations)
        for iterations, seeds in (
            (settings["iterations"], design["seeds"]),
            (settings["plateau_iterations"], settings["plateau_seeds"]),
        )
        for seed in seeds
        for k in design["kernels"]
        for kind, _ in KINDS
    ]
    done, planned = completeness(grid_keys, data, KEY_FIELDS)
    full = _full_length(data)
    lines = [
        f"## (d4) Plain against BFR kernels at a plateau: {settings['iterations']} iterations",
        "",
        f"{done} of {planned} planned units done"
        + ("." if done == planned else ": **partial**, the grid resumes where it stopped."),
        "",
        "`visprior demo --settings hand-tuned --model NAME` with the study's own settings: "
        f"{settings['spacing_mm']} mm, {settings['roi']}^3 crops, the demo's widths, "
        f"precision {settings['precision']}, poly schedule over the iterations, validation "
        f"every {settings['val_every']} iterations on the training hemisphere choosing the "
        "checkpoint; Dice on the held-out right hemisphere. Mean ± sample standard deviation "
        "over seeds.",
        "",
        *scaling_table(full),
        "",
    ]
    plateau = plateau_table(data)
    if plateau:
        lines += [
            f"The plateau: held-out mean Dice at {settings['plateau_iterations']} and "
            f"{settings['iterations']} iterations of the same seed; a plateau where doubling "
            f"moves it by less than {PLATEAU_CHANGE}.",
            "",
            *plateau,
            "",
        ]
    compared = differences(data)
    if compared:
        lines += [
            "Paired by seed: the per-seed differences, their mean, the paired-t 95% interval, "
            "and the smallest true difference these seeds would detect at 80% power; a row is "
            "better or worse only where its interval excludes 0.",
            "",
            *difference_table(compared, "comparison"),
            "",
        ]
    classes = class_table(data)
    if classes:
        lines += ["Held-out Dice per structure, smallest first:", "", *classes, ""]
    kept = [r["kept_checkpoint"] for r in _good(data["rows"]) if r.get("kept_checkpoint")]
    if kept:
        lines += [
            f"Checkpoints kept outside the repository (seed {KEPT_SEED}, one per arm): "
            + ", ".join(f"`{path}`" for path in kept)
            + "; each row's `command` in results.json remakes its run.",
            "",
        ]
    return [*lines, *profile_table(full)]


def summary(data: dict) -> list[str]:
    compared = {k: v for k, v in differences(data).items() if k.endswith("mean Dice")}
    return difference_table(compared, "mean Dice") if compared else []
