"""(d) Segmentation quality at an equal training-time budget, on the demo's real anatomy.

Every network runs ``visprior demo`` (Harvard-Oxford subcortical structures on the MNI152
template; trained on the left hemisphere, evaluated on the right) in a fresh process with the
same minutes of training time; the table reports the held-out Dice per structure.
"""

from __future__ import annotations

import csv
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


def run_network(
    name: str, minutes: float, workdir: Path, options: list[str] = (), tag: str | None = None
) -> dict:
    """Train, predict and evaluate one network (with more demo ``options``, which may replace
    the time budget with ``--iterations``) in ``workdir / (tag or name)``; return its figures
    (or the error), with the validation curve and the run folder."""
    output = workdir / (tag or name)
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
        "curve": validation_curve(run_dir / "metrics.csv"),
        "class_voxels": _reference_voxels(output, list(summary["classes"])),
        "run_dir": str(run_dir),
    }


def _reference_voxels(output: Path, classes: list[str]) -> dict[str, int]:
    """Voxels of each structure in the held-out reference (by the dataset's label values)."""
    import nibabel as nib
    import numpy as np

    (labels,) = output.glob("data/*/labelsTs/*.nii.gz")
    values = json.loads((labels.parent.parent / "dataset.json").read_text())["labels"]
    counts = np.bincount(np.asarray(nib.load(labels).dataobj, dtype=np.int64).ravel())
    return {c: int(counts[values[c]]) if values[c] < len(counts) else 0 for c in classes}


def validation_curve(metrics_csv: Path) -> list[dict]:
    """Every validation of a run: iteration, training seconds, mean and per-class Dice (on the
    training hemisphere)."""
    with open(metrics_csv) as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("val_mean_dice")]
    return [
        {
            "iteration": int(r["iteration"]),
            **{k: float(v) for k, v in r.items() if k.startswith("val_") and v},
        }
        for r in rows
    ]


def _training_figures(run_dir: Path) -> dict:
    from visprior.checkpoint_io import load_checkpoint
    from visprior.nets.build import build_model_from_checkpoint

    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    model = build_model_from_checkpoint(state)
    return {
        "iterations": state["iteration"],
        "training_seconds": state["training_seconds"],
        "best_iteration": state["best_iteration"],
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
