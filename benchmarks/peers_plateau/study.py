"""(d5) RepUX-Net against its peers at a plateau: held-out Dice, and the CPU time to reach it.

(d3) gave every network the same 5 CPU minutes, where MONAI's UNet makes 4-5 steps for each
RepUX-Net step; it ranks steps per minute, not networks. Here every network trains to its own
plateau, on (d4)'s pinned settings, with 3 paired seeds:

- Part ``peers-plateau``: each (network, seed) runs a ladder of lengths (250, 500, 1000, 2000
  iterations), each length a separate run with the poly schedule over its own iterations, as a
  user who asks for that many iterations would get. A seed is at its plateau where doubling
  the last length moves the held-out mean Dice by less than 0.01; the plateau Dice is the
  longest run's. The iterations to reach it are the shortest length of the ladder whose Dice
  comes within 0.01 of it (so they are known to the ladder's resolution, a factor of 2).
  RepUX-Net's runs at lengths that (d4) also ran (BFR, k = 21, same seed, same settings) are
  taken from (d4)'s results instead of being trained twice.
- Part ``peers-plateau-steps``: a step time per network measured when nothing else runs, so
  that the ladder's runs may share the CPU with other work: short demo runs of every network
  in turn, 3 rounds, each run's step time the median of its logged windows
  (``step_seconds`` in metrics.csv) after the first (which holds the warm-up).

The cost of a plateau is its iterations times that step time.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
from pathlib import Path

from benchmarks.demo_runs import has_checkpoint, run_network
from benchmarks.grid import Grid, Unit, completeness, merge_keyed, run_grid
from benchmarks.kernel_plateau import study as kernel_plateau
from benchmarks.kernel_scaling.study import mean_sd, smallest_structure
from benchmarks.paired import difference_table, paired_difference

# (label, registered name, kernel size passed to the demo or None for the network's own)
ARMS = [
    ("RepUX-Net BFR 21^3", "repuxnet", 21),
    ("3D UX-Net 7^3", "uxnet", None),
    ("MONAI UNet", "unet", None),
]
ARMS_QUICK = [ARMS[2]]  # the smallest network: a demo run costs about half a minute here
REFERENCE = "repuxnet"  # the paired differences are RepUX-Net minus each peer
SHARED = ("val_every", "spacing_mm", "roi", "precision")  # as (d4), so its rows can be reused
SETTINGS_FULL = {
    **{key: kernel_plateau.SETTINGS_FULL[key] for key in SHARED},
    "seeds": (0, 1, 2),
    "lengths": (250, 500, 1000, 2000),
    "longer": {},  # network -> more lengths, for a network still rising at the last one
}
SETTINGS_QUICK = {
    **{key: kernel_plateau.SETTINGS_QUICK[key] for key in SHARED},
    "seeds": (0,),
    "lengths": (1, 2),
    "longer": {},
}
STEP_SETTINGS_FULL = {"rounds": 3, "iterations": 60}
STEP_SETTINGS_QUICK = {"rounds": 1, "iterations": 2}
KEY_FIELDS = ("name", "seed", "iterations")
PLATEAU_CHANGE = kernel_plateau.PLATEAU_CHANGE  # doubling moves the Dice by less than this
WITHIN = 0.01  # "reached the plateau": within this of the plateau's Dice
KEPT_SEED = 0  # this seed's longest run of each network keeps its checkpoint
STUDY = "peers_plateau"
BUSY_LOAD = 1.0  # a 1-minute load average above this: something else is running


def settings_for(quick: bool, seeds=None) -> dict:
    settings = dict(SETTINGS_QUICK if quick else SETTINGS_FULL)
    settings["seeds"] = tuple(seeds or settings["seeds"])
    return settings


def lengths_for(name: str, settings: dict) -> tuple[int, ...]:
    """The ladder of one network: the shared lengths and its own longer ones."""
    return tuple(sorted({*settings["lengths"], *settings.get("longer", {}).get(name, ())}))


def _fixed(settings: dict) -> dict:
    """What every row shares (seeds and lengths may be added to a grid)."""
    return {k: v for k, v in settings.items() if k not in ("seeds", "lengths", "longer")}


def ladder_grid(quick: bool, seeds=None) -> Grid:
    """Per seed, the longest runs of every network first, so that the plateau check of the
    first seed is answered before its short runs."""
    settings = settings_for(quick, seeds)
    results = None if quick else Path(__file__).parent.parent / "kernel_plateau" / "results.json"
    units = []
    for seed in settings["seeds"]:
        arms = ARMS_QUICK if quick else ARMS
        lengths = sorted({n for _, name, _ in arms for n in lengths_for(name, settings)})
        for iterations in reversed(lengths):
            for label, name, k in arms:
                if iterations in lengths_for(name, settings):
                    units.append(_unit(label, name, k, seed, iterations, settings, quick, results))
    return Grid(units, _fixed(settings), KEY_FIELDS)


def reusable_row(results: Path | None, k: int | None, seed: int, iterations: int, settings):
    """(d4)'s finished BFR row of this kernel, seed and length, if (d4) ran with the same
    shared settings; else None."""
    if results is None or k is None or not results.is_file():
        return None
    data = json.loads(results.read_text()).get("data") or {}
    stored = data.get("settings", {})
    if any(stored.get(key) != settings[key] for key in SHARED):
        return None
    wanted = ("BFR", k, seed, iterations)
    for row in data.get("rows", []):
        if (row["kind"], row["k"], row["seed"], row["iterations"]) == wanted and not row.get(
            "error"
        ):
            return row
    return None


def _unit(label, name, k, seed, iterations, settings, quick, results) -> Unit:
    fields = {"name": name, "seed": seed, "iterations": iterations}
    options = kernel_plateau.demo_options(k, seed, iterations, settings)
    keep = seed == KEPT_SEED and iterations == max(lengths_for(name, settings))

    def run(work: Path, resume: bool) -> dict:
        earlier = reusable_row(results, k, seed, iterations, settings)
        if earlier is not None:
            taken = {key: v for key, v in earlier.items() if key not in ("kind", "k", "finished")}
            return {**taken, "label": label, "reused_from": "kernel_plateau (d4)"}
        row = run_network(name, 0, work.parent, options, tag=work.name, resume=resume)
        if row.get("error"):
            return {**row, "label": label}
        row["label"] = label
        row["command"] = kernel_plateau.demo_command(name, options)
        if keep:
            root = kernel_plateau.kept_runs_root(quick, work, STUDY)
            target = root / f"{name}-seed{seed}-it{iterations}" / "best.pt"
            row["kept_checkpoint"] = str(
                kernel_plateau.keep_checkpoint(Path(row["run_dir"]), target)
            )
        return row

    return Unit(fields, run, has_checkpoint)


def _order(row: dict) -> tuple:
    names = [name for _, name, _ in ARMS]
    return (names.index(row["name"]), row["seed"], row["iterations"])


def merge_ladder(earlier: dict | None, new: dict) -> dict:
    merged = merge_keyed(earlier, new, KEY_FIELDS)
    merged["rows"].sort(key=_order)
    rows = merged["rows"]
    merged["settings"] = {
        **new["settings"],
        "seeds": sorted({r["seed"] for r in rows}),
        "lengths": sorted({r["iterations"] for r in rows}),
    }
    return merged


# -- the idle step time ------------------------------------------------------------------------


def step_seconds(metrics_csv: Path, training_seconds: float, iterations: int) -> float:
    """A run's step time: the median of its logged windows' ``step_seconds`` after the first
    (the warm-up); training time over iterations where it logged fewer than two windows."""
    with open(metrics_csv, newline="") as handle:
        windows = [
            float(r["step_seconds"]) for r in csv.DictReader(handle) if r.get("step_seconds")
        ]
    if len(windows) < 2:
        return training_seconds / iterations
    return statistics.median(windows[1:])


def run_steps(quick: bool, workdir: Path, log) -> dict:
    """Short runs of every network in turn; one row per (network, round)."""
    settings = dict(STEP_SETTINGS_QUICK if quick else STEP_SETTINGS_FULL)
    ladder = settings_for(quick)
    load_before = os.getloadavg()[0]
    if load_before > BUSY_LOAD:
        log(
            f"(d5) load average {load_before:.2f}: the machine is busy, so these are not idle times"
        )
    rows = []
    for round_ in range(settings["rounds"]):
        for label, name, k in ARMS_QUICK if quick else ARMS:
            # one validation, at the end: none interrupts the timed windows
            timed = {**ladder, "val_every": settings["iterations"]}
            options = kernel_plateau.demo_options(k, 0, settings["iterations"], timed)
            tag = f"steps-{name}-round{round_}"
            row = run_network(name, 0, workdir, options, tag=tag)
            if row.get("error"):
                rows.append({"name": name, "label": label, "round": round_, "error": row["error"]})
                continue
            seconds = step_seconds(
                Path(row["run_dir"]) / "metrics.csv", row["training_seconds"], row["iterations"]
            )
            rows.append({"name": name, "label": label, "round": round_, "step_seconds": seconds})
            log(f"(d5) {label} round {round_}: {seconds:.3f} s / step")
    settings.update({key: ladder[key] for key in SHARED}, load_before=load_before)
    return {"settings": settings, "rows": rows}


def run_part(part: str, context) -> dict:
    args = context.args
    data = dict(context.store.data or {})
    if part == "peers-plateau-steps":
        data["steps"] = run_steps(args.quick, context.workdir, context.log)
        return data
    grid = ladder_grid(args.quick, args.seeds)
    run_grid(grid, context.store, part, merge_ladder, context.log, within="ladder")
    return dict(context.store.data)  # the ladder and the step times


def grids(args) -> list[tuple[str, str, Grid]]:
    return [("peers-plateau", "ladder", ladder_grid(args.quick, args.seeds))]


# -- the report ------------------------------------------------------------------------------


def _good(rows: list[dict]) -> list[dict]:
    return [r for r in rows if not r.get("error")]


def idle_step_seconds(data: dict) -> dict[str, float]:
    """Each network's idle step time: the median over rounds."""
    rows = _good((data.get("steps") or {}).get("rows", []))
    names = {r["name"] for r in rows}
    return {n: statistics.median(r["step_seconds"] for r in rows if r["name"] == n) for n in names}


def plateaus(data: dict) -> dict[tuple[str, int], dict]:
    """Per (network, seed) with at least two lengths: its ladder of Dice, whether the last
    doubling stayed under PLATEAU_CHANGE, the plateau Dice (the longest run's, and its row)
    and the shortest length within WITHIN of it."""
    rows = _good((data.get("ladder") or {}).get("rows", []))
    ladders: dict[tuple[str, int], dict[int, dict]] = {}
    for row in rows:
        ladders.setdefault((row["name"], row["seed"]), {})[row["iterations"]] = row
    out = {}
    for key, ladder in ladders.items():
        longest = max(ladder)
        if longest // 2 not in ladder:
            continue  # the doubling check needs the half-length run
        top = ladder[longest]["mean_foreground_dice"]
        dice = {n: ladder[n]["mean_foreground_dice"] for n in sorted(ladder)}
        change = top - dice[longest // 2]
        out[key] = {
            "dice": dice,
            "change": change,
            "plateau": abs(change) < PLATEAU_CHANGE,
            "plateau_dice": top,
            "row": ladder[longest],
            "reached_at": min(n for n, d in dice.items() if d >= top - WITHIN),
        }
    return out


def cpu_minutes(plateau: dict, step_seconds: float) -> float:
    """One seed's cost: the iterations to come within WITHIN of its plateau, at the idle step
    time."""
    return plateau["reached_at"] * step_seconds / 60


def _by_seed(found: dict, name: str, score) -> dict[int, float]:
    return {seed: score(value) for (n, seed), value in found.items() if n == name}


def _label(name: str) -> str:
    return next(label for label, n, _ in ARMS if n == name)


def ladder_table(data: dict) -> list[str]:
    rows = _good((data.get("ladder") or {}).get("rows", []))
    lengths = sorted({r["iterations"] for r in rows})
    if not rows:
        return []
    lines = [
        "| network | " + " | ".join(f"Dice @ {n}" for n in lengths) + " |",
        "|---|" + "---|" * len(lengths),
    ]
    for _, name, _ in ARMS:
        cells = [
            mean_sd(
                [
                    r["mean_foreground_dice"]
                    for r in rows
                    if r["name"] == name and r["iterations"] == n
                ]
            )
            for n in lengths
        ]
        if any(cell != "-" for cell in cells):
            lines.append(f"| {_label(name)} | " + " | ".join(cells) + " |")
    return lines


def plateau_table(data: dict) -> list[str]:
    """Per network: the plateau Dice and smallest structure, the seeds at a plateau, the
    iterations to reach it per seed, the idle step time and the cost in CPU minutes."""
    found = plateaus(data)
    if not found:
        return []
    steps = idle_step_seconds(data)
    small = smallest_structure([v["row"] for v in found.values()])
    lines = [
        f"| network | seeds at a plateau | held-out mean Dice at the plateau | {small} Dice | "
        "iterations to within 0.01, per seed | idle s / step | CPU minutes to within 0.01 |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, name, _ in ARMS:
        seeds = sorted(seed for (n, seed) in found if n == name)
        if not seeds:
            continue
        mine = [found[(name, seed)] for seed in seeds]
        reached = [v["reached_at"] for v in mine]
        step = steps.get(name)
        cost = mean_sd([cpu_minutes(v, step) for v in mine], 1) if step else "-"
        lines.append(
            f"| {_label(name)} | {sum(v['plateau'] for v in mine)} of {len(mine)} | "
            f"**{mean_sd([v['plateau_dice'] for v in mine])}** | "
            f"{mean_sd([v['row']['dice'][small] for v in mine]) if small else '-'} | "
            f"{', '.join(map(str, reached))} | {f'{step:.3f}' if step else '-'} | {cost} |"
        )
    return lines


def doubling_table(data: dict) -> list[str]:
    found = plateaus(data)
    lines = [
        "| network | seed | Dice @ half | Dice @ longest | change | plateau |",
        "|---|---|---|---|---|---|",
    ]
    names = [name for _, name, _ in ARMS]
    for (name, seed), value in sorted(
        found.items(), key=lambda kv: (names.index(kv[0][0]), kv[0][1])
    ):
        longest = max(value["dice"])
        lines.append(
            f"| {_label(name)} | {seed} | {value['dice'][longest // 2]:.3f} @ {longest // 2} | "
            f"{value['plateau_dice']:.3f} @ {longest} | {value['change']:+.3f} | "
            f"{'yes' if value['plateau'] else 'no'} |"
        )
    return lines if len(lines) > 2 else []


def differences(data: dict) -> dict:
    """RepUX-Net minus each peer at the plateau, paired by seed: mean Dice, the smallest
    structure's Dice, and the CPU minutes to within 0.01 (lower is better)."""
    found = plateaus(data)
    small = smallest_structure([v["row"] for v in found.values()])
    steps = idle_step_seconds(data)
    scores = {"mean Dice": lambda v: v["plateau_dice"]}
    if small:
        scores[f"{small} Dice"] = lambda v: v["row"]["dice"][small]
    out = {}
    reference = _label(REFERENCE)
    for _, name, _ in ARMS:
        if name == REFERENCE:
            continue
        for what, score in scores.items():
            arm, base = _by_seed(found, REFERENCE, score), _by_seed(found, name, score)
            if set(arm) & set(base):
                out[f"{reference} - {_label(name)}, {what}"] = paired_difference(arm, base)
        if REFERENCE in steps and name in steps:
            arm = _by_seed(found, REFERENCE, lambda v, step=steps[REFERENCE]: cpu_minutes(v, step))
            base = _by_seed(found, name, lambda v, step=steps[name]: cpu_minutes(v, step))
            if set(arm) & set(base):
                key = f"{reference} - {_label(name)}, CPU minutes to the plateau"
                out[key] = paired_difference(arm, base, higher_is_better=False)
    return out


def _design(data: dict) -> dict:
    settings = (data.get("ladder") or {}).get("settings") or {}
    return (
        SETTINGS_FULL
        if settings.get("val_every") == SETTINGS_FULL["val_every"]
        else {
            **SETTINGS_QUICK,
            **settings,
        }
    )


def section(data: dict) -> list[str]:
    data = data or {}
    ladder = data.get("ladder") or {"settings": _design(data), "rows": []}
    design = _design(data)
    grid_keys = [
        (name, seed, n)
        for seed in design["seeds"]
        for _, name, _ in (ARMS if design is SETTINGS_FULL else ARMS_QUICK)
        for n in lengths_for(name, design)
    ]
    done, planned = completeness(grid_keys, ladder, KEY_FIELDS)
    settings = ladder["settings"]
    lines = [
        "## (d5) Peers at a plateau: held-out Dice, and the CPU time to reach it",
        "",
        f"{done} of {planned} planned ladder runs done"
        + ("." if done == planned else ": **partial**, the grid resumes where it stopped."),
        "",
        "`visprior demo --settings hand-tuned --model NAME --iterations N` at (d4)'s pinned "
        f"settings ({settings.get('spacing_mm')} mm, {settings.get('roi')}^3 crops, the demo's "
        f"widths, precision {settings.get('precision')}, poly schedule over the N iterations), "
        f"N in {', '.join(map(str, design['lengths']))}, each N a run of its own; Dice on the "
        "held-out right hemisphere. A seed is at its plateau where doubling its longest run "
        f"moved the Dice by less than {PLATEAU_CHANGE}; the iterations to reach it are the "
        f"shortest N within {WITHIN} of the longest run's Dice (known to a factor of 2). "
        "Mean ± sample standard deviation over seeds.",
        "",
        *plateau_table(data),
        "",
    ]
    steps = data.get("steps")
    if steps:
        step_settings = steps["settings"]
        lines += [
            f"Idle s / step: runs of {step_settings['iterations']} iterations of every network "
            f"in turn ({step_settings['rounds']} round(s)), each run's median logged window "
            "after the first, then the median over rounds; the 1-minute load average before "
            f"the part was {step_settings['load_before']:.2f}.",
            "",
        ]
    lines += ["Held-out mean Dice along the ladder:", "", *ladder_table(data), ""]
    doubling = doubling_table(data)
    if doubling:
        lines += ["The plateau check, per seed:", "", *doubling, ""]
    compared = differences(data)
    if compared:
        lines += [
            "Paired by seed: a row is better or worse only where its interval excludes 0.",
            "",
            *difference_table(compared, "comparison"),
            "",
        ]
    rows = _good(ladder["rows"])
    reused = sum(1 for r in rows if r.get("reused_from"))
    if reused:
        lines += [f"{reused} RepUX-Net runs are (d4)'s runs of the same seed and length.", ""]
    kept = [r["kept_checkpoint"] for r in rows if r.get("kept_checkpoint")]
    if kept:
        lines += [
            f"Checkpoints kept outside the repository (seed {KEPT_SEED}, the longest run of "
            "each network): "
            + ", ".join(f"`{path}`" for path in kept)
            + "; each row's `command` in results.json remakes its run.",
            "",
        ]
    return lines


def summary(data: dict) -> list[str]:
    return plateau_table(data or {})
