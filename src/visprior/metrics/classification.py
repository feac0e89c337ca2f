"""Classification and weakly supervised localisation scores for CXR classifiers.

- ROC-AUC one-vs-rest per class and their macro mean (scikit-learn); a class that has no
  positive or no negative case gets NaN and is left out of the mean, said in ``auc_skipped``.
- accuracy and the confusion matrix (rows: true class, columns: predicted).
- localisation hit (GG-CAM's rule): the argmax of the true class's CAM is a hit when its 3 x 3
  neighbourhood on the CAM grid touches the class's region (heart for CHF, lungs for
  pneumonia).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score

__all__ = ["classification_metrics", "localisation_hit"]


def classification_metrics(
    probabilities: np.ndarray, labels: np.ndarray, classes: Sequence[str]
) -> dict:
    """Scores of ``probabilities`` (N, K) against integer ``labels`` (N,).

    Returns:
        ``auc`` (macro), ``auc_per_class`` (name -> AUC or NaN), ``auc_skipped`` (names),
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
