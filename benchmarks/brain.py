"""(d) Segmentation quality at an equal training-time budget, on the demo's real anatomy.

Every network runs ``visprior demo`` (Harvard-Oxford subcortical structures on the MNI152
template; trained on the left hemisphere, evaluated on the right) in a fresh process with the
same minutes of training time; the table reports the held-out Dice per structure.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

MODELS_FULL = [
    ("RepUX-Net BFR 21^3", "repuxnet"),
    ("RepUX-Net plain 21^3", "repuxnet_plain"),
    ("3D UX-Net 7^3", "uxnet"),
    ("SwinUNETR", "swinunetr"),
    ("MONAI UNet", "unet"),
]
MODELS_QUICK = [("MONAI UNet", "unet")]


def run_network(name: str, minutes: float, workdir: Path, options: list[str] = ()) -> dict:
    """Train, predict and evaluate one network (with more demo ``options``); return its
    figures (or the error)."""
    output = workdir / name
    command = [sys.executable, "-m", "visprior.cli", "demo", "--model", name]
    command += ["--minutes", str(minutes), "--output", str(output), *options]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        return {"name": name, "error": (done.stderr or done.stdout)[-2000:]}
    (run_dir,) = (output / "runs").iterdir()
    summary = json.loads((run_dir / "evaluation" / "summary.json").read_text())
    return {
        "name": name,
        "wall_seconds": wall,
        "mean_foreground_dice": summary["mean_foreground_dice"],
        "dice": {c: v["dice"]["mean"] for c, v in summary["classes"].items()},
        **_training_figures(run_dir),
    }


def _training_figures(run_dir: Path) -> dict:
    from visprior.checkpoint_io import load_checkpoint
    from visprior.nets.build import build_model_from_checkpoint

    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    model = build_model_from_checkpoint(state)
    return {
        "iterations": state["iteration"],
        "training_seconds": state["training_seconds"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "roi": state["roi_size"][0],
        "model_kwargs": {
            k: v for k, v in state["model"]["kwargs"].items() if k not in ("in_channels",)
        },
    }


def run(minutes: float, quick: bool, workdir: Path, log, names=None) -> dict:
    """Every network (``names``: a subset of MODELS_FULL's registered names)."""
    models = MODELS_QUICK if quick else MODELS_FULL
    if names:
        unknown = sorted(set(names) - {name for _, name in MODELS_FULL})
        if unknown:
            raise ValueError(f"--models: not in the comparison: {', '.join(unknown)}")
        models = [(label, name) for label, name in MODELS_FULL if name in names]
    rows = []
    for label, name in models:
        row = {"label": label, **run_network(name, minutes, workdir)}
        rows.append(row)
        dice = row.get("mean_foreground_dice")
        log(f"(d) {label}: " + (f"mean Dice {dice:.3f}" if dice is not None else "failed"))
    return {"minutes": minutes, "rows": rows}


def merge(earlier: dict | None, new: dict) -> dict:
    """``new``'s rows replace the same networks' rows of an earlier run with equal minutes."""
    if not earlier or earlier.get("minutes") != new["minutes"]:
        return new
    rows = {row["name"]: row for row in earlier["rows"]}
    rows.update({row["name"]: row for row in new["rows"]})
    order = [name for _, name in MODELS_FULL]
    ordered = sorted(
        rows.values(), key=lambda r: order.index(r["name"]) if r["name"] in order else 99
    )
    return {"minutes": new["minutes"], "rows": ordered}
