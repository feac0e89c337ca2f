"""``visprior seg cv``: the k folds of a cross-validation trained one after another, their
validation predictions merged into one score, and the post-processing chosen for the
ensemble of the folds.

``DIR/fold_<k>/`` is an ordinary run folder (fold ``k`` of the split every fold shares, as
the same seed makes it). A fold whose post-processing decision exists is finished and is
skipped; one with a checkpoint but no decision is resumed; so the same command continues an
interrupted cross-validation. At the end, ``DIR/cv_summary.json`` holds the Dice per class
over every case (each predicted by the fold that did not train on it), and
``DIR/postprocessing.json`` the post-processing chosen on all of them, which ``seg predict DIR``
(the ensemble of the folds) applies.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from visprior.data.dataset import load_dataset
from visprior.data.splits import load_split
from visprior.engine.config import save_config
from visprior.engine.distributed import is_main_process
from visprior.fileio import write_json
from visprior.seg.config import SegTrainConfig
from visprior.seg.postprocess import DECISION_FILE, decide_for_cases, save_decision
from visprior.seg.train import train_segmentation

__all__ = ["SUMMARY_FILE", "fold_runs", "format_summary", "train_folds"]

SUMMARY_FILE = "cv_summary.json"


def fold_runs(folder: str | os.PathLike) -> list[Path]:
    """The fold run folders of a ``seg cv`` folder, in fold order (empty for another folder)."""
    folder = Path(folder)
    runs = [path for path in folder.glob("fold_*") if (path / "checkpoints").is_dir()]
    return sorted(runs, key=lambda path: int(path.name.removeprefix("fold_") or 0))


def train_folds(config: SegTrainConfig, output: str | os.PathLike) -> dict[str, Any]:
    """Train every fold of ``config.folds`` into ``output/fold_<k>``, then merge (see the
    module's docstring); returns the summary."""
    output = Path(output)
    if is_main_process():  # what `seg cv --resume DIR` reads back
        save_config(config, output / "config.yaml")
    for fold in range(config.folds):
        run = output / f"fold_{fold}"
        if (run / DECISION_FILE).is_file():
            if is_main_process():
                print(f"fold {fold}: finished before, kept ({run})")
            continue
        resume = (run / "checkpoints" / "last.pt").is_file()
        if is_main_process():
            print(f"fold {fold} of {config.folds}: {'resuming' if resume else 'training'} {run}")
        fold_config = dataclasses.replace(
            config, output=str(run), fold=fold, postprocess_on_validation=True
        )
        train_segmentation(fold_config, resume=resume)
    if not is_main_process():
        return {}
    return merge_folds(config, output)


def merge_folds(config: SegTrainConfig, output: Path) -> dict[str, Any]:
    """The merged cross-validation score and the ensemble's post-processing, written to
    ``output``."""
    dataset = load_dataset(config.dataset)
    by_name = {case.name: case for case in dataset.training}
    predictions, labels, folds = [], [], []
    for fold in range(config.folds):
        run = output / f"fold_{fold}"
        names = load_split(run / "splits.json")[fold]["val"]
        predictions += [run / "validation" / f"{name}.nii.gz" for name in names]
        labels += [by_name[name].label for name in names]
        folds.append({"fold": fold, "run": str(run), "validation_cases": len(names)})
    decision = decide_for_cases(predictions, labels, dataset)
    save_decision(output, decision)
    names = {str(v): n for n, v in dataset.labels.items()}
    before = decision["dice_before"]
    scored = [v for v in before.values() if v == v]
    summary = {
        "dataset": config.dataset,
        "model": config.model,
        "folds": folds,
        "cases": decision["cases"],
        "dice": {names.get(k, k): v for k, v in before.items()},
        "mean_dice": sum(scored) / len(scored) if scored else float("nan"),
        "largest_component": decision["largest_component"],
        "dice_after_postprocessing": {
            names.get(k, k): v for k, v in decision["dice_after"].items()
        },
    }
    write_json(output / SUMMARY_FILE, summary)
    return summary


def format_summary(summary: dict[str, Any], output: str | os.PathLike) -> str:
    """One line of :func:`train_folds`' summary, naming the summary file in ``output``."""
    scores = ", ".join(f"{name} {dice:.4f}" for name, dice in summary["dice"].items())
    kept = ", ".join(map(str, summary["largest_component"])) or "no class"
    return (
        f"cross-validation over {summary['cases']} case(s): mean Dice {summary['mean_dice']:.4f} "
        f"({scores}); largest component for {kept}; {Path(output) / SUMMARY_FILE}"
    )
