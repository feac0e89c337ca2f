"""Runs of ``visprior demo`` in a fresh process, and the figures read back from their folders:
the held-out Dice, the validation curve, iterations and training time from the checkpoint."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path


def run_network(
    name: str,
    minutes: float,
    workdir: Path,
    options: list[str] = (),
    tag: str | None = None,
    resume: bool = False,
) -> dict:
    """Train, predict and evaluate one network (with more demo ``options``, which may replace
    the time budget with ``--iterations``) in ``workdir / (tag or name)``; return its figures
    (or the error), with the validation curve and the run folder. ``resume`` continues the
    run there from its last checkpoint."""
    output = workdir / (tag or name)
    # the settings these studies were measured with, whatever the demo's default
    command = [sys.executable, "-m", "visprior.cli", "demo", "--model", name]
    command += ["--settings", "hand-tuned", "--minutes", str(minutes), "--output", str(output)]
    command += options
    started = time.perf_counter()
    done = subprocess.run(
        [*command, *(["--resume"] if resume else [])], capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        return {"name": name, "error": (done.stderr or done.stdout)[-2000:]}
    return {**finished_run(name, output), "wall_seconds": wall}


def has_checkpoint(output: Path) -> bool:
    """Whether a demo run in ``output`` saved a checkpoint to resume from."""
    return any(output.glob("runs/*/checkpoints/last.pt"))


def has_finished(output: Path) -> bool:
    """Whether a demo run in ``output`` was evaluated."""
    return any(output.glob("runs/*/evaluation/summary.json"))


def finished_run(name: str, output: Path) -> dict:
    """The figures of the evaluated demo run in ``output``."""
    (run_dir,) = (output / "runs").iterdir()
    summary = json.loads((run_dir / "evaluation" / "summary.json").read_text())
    return {
        "name": name,
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
