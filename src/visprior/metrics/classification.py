"""Classification and weakly supervised localisation scores for CXR classifiers.

- ROC-AUC one-vs-rest per class, their macro mean and their minimum (scikit-learn); a class
  that has no positive or no negative case gets NaN and is left out of both, said in
  ``auc_skipped``.
- accuracy and the confusion matrix (rows: true class, columns: predicted).
- localisation hit (GG-CAM's rule): the argmax of the true class's CAM is a hit when its 3 x 3
  neighbourhood on the CAM grid touches the class's region (heart for CHF, lungs for
  pneumonia).
- against a mask of the finding itself (where a data generator drew one): the pointing game
  (the saliency peak lies in the mask, within a tolerance) and the IoU of the map thresholded
  at half its range with the mask.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score

__all__ = [
    "classification_metrics",
    "localisation_hit",
    "mask_iou",
    "pointing_hit",
    "threshold_map",
]


def classification_metrics(
    probabilities: np.ndarray, labels: np.ndarray, classes: Sequence[str]
) -> dict:
    """Scores of ``probabilities`` (N, K) against integer ``labels`` (N,).

    Returns:
        ``auc`` (macro), ``auc_per_class`` (name -> AUC or NaN), ``auc_skipped`` (names),
        ``worst_class_auc`` (the lowest AUC of a class, NaN when none has one),
        ``accuracy``, ``confusion_matrix`` (K x K list), ``n``.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels).astype(int)
    if probabilities.ndim != 2 or probabilities.shape != (len(labels), len(classes)):
        raise ValueError(
            f"probabilities of shape {probabilities.shape} do not fit {len(labels)} labels "
            f"and {len(classes)} classes"
        )
    per_class, skipped = {}, []
    for k, name in enumerate(classes):
        positives = labels == k
        if positives.all() or not positives.any():
            per_class[name] = math.nan
            skipped.append(name)
        else:
            per_class[name] = float(roc_auc_score(positives, probabilities[:, k]))
    scored = [v for v in per_class.values() if not math.isnan(v)]
    predicted = probabilities.argmax(1)
    return {
        "auc": float(np.mean(scored)) if scored else math.nan,
        "auc_per_class": per_class,
        "auc_skipped": skipped,
        "worst_class_auc": float(min(scored)) if scored else math.nan,
        "accuracy": float((predicted == labels).mean()) if len(labels) else math.nan,
        "confusion_matrix": confusion_matrix(labels, predicted, labels=range(len(classes)))
        .astype(int)
        .tolist(),
        "n": len(labels),
    }


def localisation_hit(cam: np.ndarray, region: np.ndarray) -> bool:
    """Whether the 3 x 3 neighbourhood of ``cam``'s argmax touches ``region`` (same grid)."""
    cam, region = np.asarray(cam), np.asarray(region, dtype=bool)
    if cam.shape != region.shape or cam.ndim != 2:
        raise ValueError(f"CAM {cam.shape} and region {region.shape} must be one 2D grid")
    row, col = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return bool(region[max(row - 1, 0) : row + 2, max(col - 1, 0) : col + 2].any())


def pointing_hit(saliency: np.ndarray, mask: np.ndarray, tolerance: float = 0.0) -> bool:
    """The pointing game: whether ``saliency``'s peak lies within ``tolerance`` pixels
    (Euclidean) of a pixel of ``mask`` (same 2D shape), i.e. inside the mask dilated by a
    disc of that radius. A constant map has no peak: a miss.

    Raises:
        ValueError: shapes that differ or are not 2D, a negative or non-finite tolerance,
            non-finite values, or an empty mask (nothing to point at).
    """
    saliency, mask = _map_and_mask(saliency, mask)
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be a non-negative number of pixels, got {tolerance}")
    if saliency.max() == saliency.min():
        return False
    row, col = np.unravel_index(int(np.argmax(saliency)), saliency.shape)
    rows, cols = np.nonzero(mask)
    return bool(((rows - row) ** 2 + (cols - col) ** 2).min() <= tolerance**2)


def threshold_map(saliency: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Where ``saliency``, min-max normalised to [0, 1], is at least ``threshold`` (bool).

    A constant map marks nothing (it has no range to normalise).
    """
    saliency = np.asarray(saliency, dtype=np.float64)
    if not np.isfinite(saliency).all():
        raise ValueError("saliency has NaN or infinite values")
    if saliency.size == 0 or saliency.max() == saliency.min():
        return np.zeros(saliency.shape, bool)
    low, high = saliency.min(), saliency.max()
    return (saliency - low) / (high - low) >= threshold


def mask_iou(predicted: np.ndarray, target: np.ndarray) -> float:
    """Intersection over union of two boolean masks of one shape; in [0, 1].

    Raises:
        ValueError: shapes that differ, or an empty ``target`` (nothing to score against).
    """
    predicted, target = np.asarray(predicted, dtype=bool), np.asarray(target, dtype=bool)
    if predicted.shape != target.shape:
        raise ValueError(f"masks {predicted.shape} and {target.shape} differ in shape")
    if not target.any():
        raise ValueError("target mask is empty: there is nothing to score against")
    return float((predicted & target).sum() / (predicted | target).sum())


def _map_and_mask(saliency, mask) -> tuple[np.ndarray, np.ndarray]:
    saliency, mask = np.asarray(saliency, dtype=np.float64), np.asarray(mask, dtype=bool)
    if saliency.shape != mask.shape or saliency.ndim != 2:
        raise ValueError(f"map {saliency.shape} and mask {mask.shape} must be one 2D shape")
    if not np.isfinite(saliency).all():
        raise ValueError("saliency has NaN or infinite values")
    if not mask.any():
        raise ValueError("mask is empty: there is nothing to point at")
    return saliency, mask
