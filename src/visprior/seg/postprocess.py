"""Post-processing chosen on held-out cases: keep each class's largest connected component
only where cases the network did not train on show it helps.

After training, the run predicts its validation cases (``<run>/validation/``, in their
original geometry), then tries the step class by class. As in nnU-Net's
``find_best_configuration`` (Isensee et al., 2021), a class keeps the step only if the mean
foreground Dice rises and no class's Dice drops. Two rules keep the choice honest:

* **held-out cases only.** A run's own validation fold, or ``seg cv``'s merged out-of-fold
  predictions. A run with no held-out case (``fold -1``: it validates on its training cases,
  which the network has fitted) chooses nothing, and says so in ``postprocessing.json``.
* **never for a class made of several large parts.** A class whose training masks hold, in
  some case, a second-largest connected component of at least :data:`MULTI_COMPONENT_SHARE`
  of the class's voxels there (left and right structures sharing one label, say) is not
  tried: the step would delete a true part wherever the prediction gets it right.

The decision is written to ``<run>/postprocessing.json``, which ``seg predict --postprocess
auto`` (the default) applies.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from visprior.data.dataset import SegmentationDataset
from visprior.data.volumes import read_volume
from visprior.fileio import write_json
from visprior.seg.predict import keep_largest_components, load_predictor, save_nifti

__all__ = [
    "DECISION_FILE",
    "choose_largest_component",
    "decide_for_cases",
    "decide_for_run",
    "describe_decision",
    "dice_per_class",
    "load_decision",
    "multi_component_classes",
    "no_held_out_decision",
    "save_decision",
]

DECISION_FILE = "postprocessing.json"
# a class whose second-largest true component holds this share of its voxels in some training
# case has several real parts: keeping the largest component would delete one of them
MULTI_COMPONENT_SHARE = 0.10
# 26-connectivity, as MONAI's KeepLargestConnectedComponent (the step itself) uses by default
_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


def multi_component_classes(
    labels: Iterable[tuple[str, np.ndarray]], classes: Sequence[int]
) -> dict[int, str]:
    """The classes of ``classes`` made of several large parts, each with the first case that
    shows it: ``labels`` are (case name, label array) pairs, read one at a time."""
    found: dict[int, str] = {}
    for name, label in labels:
        for value in classes:
            if value in found:
                continue
            components, count = ndimage.label(label == value, structure=_CONNECTIVITY)
            if count < 2:
                continue
            sizes = np.sort(np.bincount(components.ravel())[1:])
            if sizes[-2] >= MULTI_COMPONENT_SHARE * sizes.sum():
                share = sizes[-2] / sizes.sum()
                found[int(value)] = (
                    f"case {name}: its second-largest component holds {share:.0%} of its voxels"
                )
    return found


def dice_per_class(prediction: np.ndarray, label: np.ndarray, classes: Iterable[int]) -> dict:
    """Dice of each class value; NaN where the class is in neither (left out of means)."""
    scores = {}
    for value in classes:
        predicted, true = prediction == value, label == value
        total = int(predicted.sum()) + int(true.sum())
        overlap = int(np.logical_and(predicted, true).sum())
        scores[int(value)] = 2 * overlap / total if total else math.nan
    return scores


def _mean_per_class(rows: Sequence[dict[int, float]], classes: Sequence[int]) -> dict[int, float]:
    means = {}
    for value in classes:
        values = [row[value] for row in rows if not math.isnan(row[value])]
        means[value] = float(np.mean(values)) if values else math.nan
    return means


def _overall(means: dict[int, float]) -> float:
    values = [v for v in means.values() if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def choose_largest_component(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    classes: Sequence[int],
    keep_largest: Any,
    not_tried: dict[int, str] | None = None,
) -> dict[str, Any]:
    """Which classes should keep only their largest component, judged on ``pairs`` of
    (predicted labels, true labels) of held-out cases, read one pair at a time.

    Each class's step is judged alone, on every case: it is kept when the mean foreground
    Dice rises and no class's mean Dice drops. The step of one class changes only that class's
    voxels, so the chosen steps together give each class the Dice it had alone.

    Args:
        pairs: the validation cases' predictions and labels, on one grid per case.
        classes: the foreground class values.
        keep_largest: ``keep_largest(labels, [value])``, the step for one class.
        not_tried: classes never given the step, each with the reason (see
            :func:`multi_component_classes`); they are still scored.

    Returns:
        ``{"largest_component": [values], "dice_before": {...}, "dice_after": {...},
        "cases": n, "held_out": True, "not_tried": {...}}``: the chosen classes, and the mean
        Dice per class before and after.
    """
    classes = [int(c) for c in classes]
    not_tried = {int(k): v for k, v in (not_tried or {}).items()}
    candidates = [value for value in classes if value not in not_tried]
    before: list[dict[int, float]] = []
    after: dict[int, list[dict[int, float]]] = {value: [] for value in classes}
    for predicted, true in pairs:
        before.append(dice_per_class(predicted, true, classes))
        for value in candidates:
            after[value].append(dice_per_class(keep_largest(predicted, [value]), true, classes))
    old = _mean_per_class(before, classes)
    chosen, final = [], dict(old)
    for value in candidates:
        new = _mean_per_class(after[value], classes)
        drops = any(new[c] < old[c] for c in classes if not math.isnan(old[c]))
        if _overall(new) > _overall(old) and not drops:
            chosen.append(value)
            final[value] = new[value]
    return {
        "largest_component": chosen,
        "dice_before": {str(c): v for c, v in old.items()},
        "dice_after": {str(c): v for c, v in final.items()},
        "cases": len(before),
        "held_out": True,
        "not_tried": {str(c): reason for c, reason in not_tried.items()},
    }


def describe_decision(decision: dict[str, Any], path: str | os.PathLike) -> str:
    """One line on what was chosen, on how many held-out cases, and what was not tried."""
    if not decision.get("held_out", True):
        return f"post-processing: none chosen: {decision['note']} ({path})"
    kept = ", ".join(map(str, decision["largest_component"])) or "no class"
    line = (
        f"post-processing chosen on {decision['cases']} held-out case(s): largest component "
        f"for {kept} ({path})"
    )
    skipped = decision.get("not_tried") or {}
    if skipped:
        line += "; not tried for " + "; ".join(
            f"class {value} ({reason})" for value, reason in skipped.items()
        )
    return line


def no_held_out_decision(reason: str) -> dict[str, Any]:
    """The decision of a run with no held-out case: nothing is chosen, and why is kept."""
    return {"largest_component": [], "cases": 0, "held_out": False, "note": reason}


def decide_from_files(
    predictions: Sequence[str | os.PathLike],
    labels: Sequence[str | os.PathLike],
    classes: Sequence[int],
    keep_largest: Any,
    not_tried: dict[int, str] | None = None,
) -> dict[str, Any]:
    """:func:`choose_largest_component` on label files (each prediction beside its label),
    holding one case in memory at a time."""
    pairs = (
        (np.asarray(read_volume(predicted)[1]), np.asarray(read_volume(true)[1]))
        for predicted, true in zip(predictions, labels, strict=True)
    )
    return choose_largest_component(pairs, classes, keep_largest, not_tried)


def save_decision(run_dir: str | os.PathLike, decision: dict[str, Any]) -> Path:
    """Write ``postprocessing.json`` into the run folder (NaN as null), atomically."""
    return write_json(Path(run_dir) / DECISION_FILE, decision)


def load_decision(run_or_checkpoint: str | os.PathLike) -> list[int] | None:
    """The classes a run keeps the largest component of; ``None`` when it decided nothing.

    A checkpoint file counts as its run's (``<run>/checkpoints/best.pt``).

    Raises:
        ValueError: a decision file that cannot be read (named).
    """
    path = Path(run_or_checkpoint)
    if path.is_file():
        path = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    decision = path / DECISION_FILE
    if not decision.is_file():
        return None
    try:
        values = json.loads(decision.read_text())["largest_component"]
        return [int(v) for v in values]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{decision}: not a readable post-processing decision ({error})") from None


def decide_for_run(
    run_dir: str | os.PathLike,
    dataset: SegmentationDataset,
    case_names: Sequence[str],
    training_names: Sequence[str],
) -> dict[str, Any]:
    """Predict the run's held-out validation cases with its best network into
    ``<run>/validation/``, choose the post-processing on them and save it (see the module's
    docstring). Validation cases that the run also trained on are no held-out cases: with
    none left, nothing is predicted and nothing chosen."""
    run_dir = Path(run_dir)
    trained = set(training_names)
    held_out = [name for name in case_names if name not in trained]
    if not held_out:
        decision = no_held_out_decision(
            "no held-out case: the run validates on the cases it trained on (fold -1), so "
            "no post-processing is chosen; `seg cv` chooses it on out-of-fold predictions"
        )
        save_decision(run_dir, decision)
        return decision
    predictor = load_predictor(run_dir)
    by_name = {case.name: case for case in dataset.training}
    folder = run_dir / "validation"
    predictions, labels = [], []
    for name in held_out:
        case = by_name[name]
        predicted, _, _, header = predictor.predict_case(
            case.images, case=name, probabilities=False
        )
        predictions.append(save_nifti(predicted, header, folder / f"{name}.nii.gz"))
        labels.append(case.label)

    decision = decide_for_cases(predictions, labels, dataset, [by_name[n] for n in trained])
    save_decision(run_dir, decision)
    return decision


def decide_for_cases(
    predictions: Sequence[str | os.PathLike],
    labels: Sequence[str | os.PathLike],
    dataset: SegmentationDataset,
    training_cases: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """:func:`decide_from_files` over ``dataset``'s foreground classes, the step being
    :func:`~visprior.seg.predict.keep_largest_components`; classes made of several large
    parts in ``training_cases`` (default: every training case) are not tried."""

    def keep_largest(values: np.ndarray, classes: Sequence[int]) -> np.ndarray:
        return keep_largest_components(values, dataset.num_classes, classes)

    foreground = sorted(v for v in dataset.labels.values() if v)
    cases = dataset.training if training_cases is None else training_cases
    masks = ((case.name, np.asarray(read_volume(case.label, case.name)[1])) for case in cases)
    not_tried = multi_component_classes(masks, foreground)
    return decide_from_files(predictions, labels, foreground, keep_largest, not_tried)
