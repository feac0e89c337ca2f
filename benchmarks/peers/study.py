"""(d3) RepUX-Net against its peers at an equal training time, with seeds.

Every network runs ``visprior demo`` (demo widths) for the same minutes, each seed in a fresh
process. MedNeXt-S runs at k3, and at k5 initialised by UpKern from the k3 run of the same
seed (``--init ... --upkern``), which then trains for the same minutes again: its total time
counts both runs.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from benchmarks.demo_runs import run_network
from benchmarks.kernel_scaling.study import mean_sd

UPKERN = "upkern"
# (label, registered name, kernel size or None, start); the UpKern row follows its k3 row
PEERS_FULL = [
    ("RepUX-Net BFR 21^3", "repuxnet", None, None),
    ("3D UX-Net 7^3", "uxnet", None, None),
    ("MONAI UNet", "unet", None, None),
    ("MedNeXt-S k3", "mednext_s", 3, None),
    ("MedNeXt-S k5, UpKern from k3", "mednext_s", 5, UPKERN),
    ("SegResNet", "segresnet", None, None),
]
PEERS_QUICK = [PEERS_FULL[3], PEERS_FULL[4]]
SETTINGS_FULL = {"minutes": 5.0, "seeds": (0, 1)}
SETTINGS_QUICK = {"minutes": 0.05, "seeds": (0,)}


def row_key(row: dict) -> tuple:
    """Rows of the same network and settings replace each other."""
    return (row["name"], row.get("kernel_size"), row.get("start"), row["minutes"], row["seed"])


def run_peers(quick: bool, workdir: Path, log, seeds=None, names=None, minutes=None) -> dict:
    """Every peer and seed (``seeds``, ``names``: a subset; ``minutes``: another budget)."""
    settings = dict(SETTINGS_QUICK if quick else SETTINGS_FULL)
    settings["seeds"] = tuple(seeds or settings["seeds"])
    settings["minutes"] = minutes or settings["minutes"]
    peers = PEERS_QUICK if quick else PEERS_FULL
    if names:
        unknown = sorted(set(names) - {name for _, name, _, _ in PEERS_FULL})
        if unknown:
            raise ValueError(f"--models: not among the peers: {', '.join(unknown)}")
        peers = [p for p in peers if p[1] in names]
    minutes = settings["minutes"]
    rows = []
    for seed in settings["seeds"]:
        k3_run = None
        for label, name, kernel_size, start in peers:
            options = ["--seed", str(seed)]
            if kernel_size is not None:
                options += ["--kernel-size", str(kernel_size)]
            tag = f"{name}-k{kernel_size}-{start}-s{seed}"
            row = {"label": label, "kernel_size": kernel_size, "start": start}
            if start == UPKERN:
                if k3_run is None or k3_run.get("error"):
                    continue  # its k3 run is not in this part, or failed
                init = Path(k3_run["run_dir"]) / "checkpoints" / "best.pt"
                options += ["--init", str(init), "--upkern"]
            result = run_network(name, minutes, workdir, options, tag=tag)
            row.update(result, minutes=minutes, seed=seed)
            if start == UPKERN and not result.get("error"):
                row["total_training_seconds"] = (
                    k3_run["training_seconds"] + result["training_seconds"]
                )
            if name == "mednext_s" and kernel_size == 3:
                k3_run = row
            rows.append(row)
            dice = row.get("mean_foreground_dice")
            shown = f"mean Dice {dice:.3f}" if dice is not None else "failed"
            log(f"(d3) {label} seed {seed}: {shown}")
    return {"settings": settings, "rows": rows}


def merge(earlier: dict | None, new: dict) -> dict:
    """Rows of the same network and settings (and seed) replace earlier ones; others append."""
    rows = {row_key(r): r for r in (earlier or {}).get("rows", [])}
    rows.update({row_key(r): r for r in new["rows"]})
    order = [(name, k, start) for _, name, k, start in PEERS_FULL]

    def position(row: dict) -> tuple:
        key = (row["name"], row.get("kernel_size"), row.get("start"))
        return (row["minutes"], order.index(key) if key in order else 99, row["seed"])

    seeds = sorted({row["seed"] for row in rows.values()})
    return {
        "settings": {**new["settings"], "seeds": seeds},
        "rows": sorted(rows.values(), key=position),
    }


def peer_groups(peers: dict) -> list[tuple[dict, list[dict]]]:
    """Successful rows grouped by network and settings, in the table's order."""
    groups: dict[tuple, list[dict]] = {}
    for row in peers["rows"]:
        if not row.get("error"):
            groups.setdefault(row_key(row)[:4], []).append(row)
    return [(rows[0], rows) for rows in groups.values()]


def peers_table(peers: dict) -> list[str]:
    groups = peer_groups(peers)
    if not groups:
        return ["(every run failed; see Failed cases)"]
    small = min(groups[0][0]["class_voxels"], key=groups[0][0]["class_voxels"].get)
    lines = [
        "| network | minutes | seeds | parameters | iterations | mean Dice | "
        f"{small} Dice | total minutes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for first, rows in groups:
        totals = [r.get("total_training_seconds", r["training_seconds"]) / 60 for r in rows]
        iterations = mean_sd([r["iterations"] for r in rows], 0)
        lines.append(
            f"| {first['label']} | {first['minutes']:g} | {len(rows)} | "
            f"{first['parameters'] / 1e6:.2f}M | {iterations} | "
            f"**{mean_sd([r['mean_foreground_dice'] for r in rows])}** | "
            f"{mean_sd([r['dice'][small] for r in rows])} | {statistics.mean(totals):.1f} |"
        )
    return lines


REFERENCE_NETWORK = "unet"
EARLY_STEP = 250  # where the per-step learning speeds are compared


def _seconds_per_step(row: dict) -> float:
    return row["training_seconds"] / row["iterations"]


def _early_validation(row: dict) -> str:
    """The run's own validation Dice at its first validation from EARLY_STEP on, else its last."""
    curve = row.get("curve") or []
    if not curve:
        return "-"
    point = next((p for p in curve if p["iteration"] >= EARLY_STEP), curve[-1])
    return f"{point['val_mean_dice']:.3f} ({point['iteration']})"


def steps_table(peers: dict) -> list[str]:
    """Per seed: the cost of a step, against the reference network's step of the same seed, and
    how far the run had learned near EARLY_STEP."""
    groups = peer_groups(peers)
    reference = {
        r["seed"]: _seconds_per_step(r)
        for r in peers["rows"]
        if r["name"] == REFERENCE_NETWORK and not r.get("error")
    }
    lines = [
        "| network | s / step per seed | s / step over MONAI UNet's, per seed | iterations per "
        f"seed | validation Dice at step {EARLY_STEP} or the last (step), per seed |",
        "|---|---|---|---|---|",
    ]
    for first, rows in groups:
        rows = sorted(rows, key=lambda r: r["seed"])
        ratios = [
            f"{_seconds_per_step(r) / reference[r['seed']]:.1f}x" if r["seed"] in reference else "-"
            for r in rows
        ]
        lines.append(
            f"| {first['label']} | {', '.join(f'{_seconds_per_step(r):.2f}' for r in rows)} | "
            f"{', '.join(ratios)} | {', '.join(str(r['iterations']) for r in rows)} | "
            f"{', '.join(_early_validation(r) for r in rows)} |"
        )
    return lines


def peers_section(peers: dict) -> list[str]:
    settings = peers["settings"]
    return [
        "## (d3) Dice at equal CPU time (not at a plateau), with seeds",
        "",
        "`visprior demo --model NAME --minutes M --seed S` per network and seed, each in a fresh "
        "process, at the demo's widths (`visprior.seg.demo.DEMO_MODEL_SIZES`; MedNeXt-S at 16 "
        "filters, SegResNet at 8). The MedNeXt-S k5 row starts from the same seed's k3 run "
        "(`--init RUN/checkpoints/best.pt --upkern`) and trains the same minutes again; its "
        "total minutes include the k3 run. Mean ± sample standard deviation over seeds "
        f"{', '.join(map(str, settings['seeds']))}; iterations are those made in the budget on "
        "this machine.",
        "",
        *peers_table(peers),
        "",
        "Steps per seed: s / step is training time over iterations; the validation Dice is the "
        "run's own validation on the training hemisphere, from its curve. The MedNeXt-S k5 "
        "row's iterations are those of its second run only.",
        "",
        *steps_table(peers),
    ]
