"""Saliency-map scores, as the MIT saliency benchmark defines them (Bylinskii et al., 2019).

``prediction`` is a non-negative map of where a model expects gaze; ``target`` the observed
gaze map (continuous) and ``fixations`` the fixated pixels (a boolean map or (N, 2) array of
(row, column)). All maps are 2D arrays of one shape.

Degenerate inputs never give NaN:
- a target map or fixation set that is empty (sums to 0) is an error: there is nothing to
  score against;
- a prediction that sums to 0 counts as uniform (it says nothing about where people look);
- a constant map has no spread: CC and NSS are 0 and AUC-Judd 0.5 (chance), not NaN.

Example:
    >>> kl_divergence(predicted, gaze), correlation_coefficient(predicted, gaze)
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "EPS",
    "auc_judd",
    "correlation_coefficient",
    "kl_divergence",
    "normalized_scanpath_saliency",
    "similarity",
]

# The regulariser inside KL's logarithm: machine epsilon, as the MIT benchmark's code uses. It
# biases KL of a map with itself by about -EPS * pixels; the 1e-7 used before gave -0.03 at
# 512 x 640, where the answer is 0.
EPS = float(np.finfo(np.float64).eps)


def _as_distribution(values: np.ndarray, name: str, allow_zero: bool) -> np.ndarray:
    values = _check_map(values, name)
    total = values.sum()
    if total <= 0:
        if not allow_zero:
            raise ValueError(f"{name} sums to 0: there is nothing to score against")
        return np.full_like(values, 1.0 / values.size)
    return values / total


def _check_map(values, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"{name} must be a 2D map, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError(f"{name} has NaN or infinite values")
    if (values < 0).any():
        raise ValueError(f"{name} has negative values; saliency maps are non-negative")
    return values


def _same_shape(prediction: np.ndarray, target: np.ndarray) -> None:
    if np.shape(prediction) != np.shape(target):
        raise ValueError(
            f"prediction {np.shape(prediction)} and target {np.shape(target)} differ in shape"
        )


def kl_divergence(prediction, target) -> float:
    """KL(G || P) = sum_i G_i log(EPS + G_i / (P_i + EPS)), both maps scaled to sum 1,
    with ``EPS`` machine epsilon (about 2.2e-16).

    0 for identical maps (within about EPS * pixels); grows as the prediction misses where
    the target has mass.
    """
    _same_shape(prediction, target)
    p = _as_distribution(prediction, "prediction", allow_zero=True)
    g = _as_distribution(target, "target", allow_zero=False)
    return float(np.sum(g * np.log(EPS + g / (p + EPS))))


def correlation_coefficient(prediction, target) -> float:
    """Pearson's correlation between the two maps (each standardised); in [-1, 1]."""
    _same_shape(prediction, target)
    p = _check_map(prediction, "prediction")
    g = _check_map(target, "target")
    if g.sum() <= 0:
        raise ValueError("target sums to 0: there is nothing to score against")
    if p.std() == 0 or g.std() == 0:
        return 0.0
    return float(np.mean((p - p.mean()) / p.std() * (g - g.mean()) / g.std()))


def similarity(prediction, target) -> float:
    """SIM = sum_i min(P_i, G_i), both maps scaled to sum 1 (histogram intersection); in
    [0, 1], 1 for identical maps and 0 for maps with disjoint support."""
    _same_shape(prediction, target)
    p = _as_distribution(prediction, "prediction", allow_zero=True)
    g = _as_distribution(target, "target", allow_zero=False)
    return float(np.minimum(p, g).sum())


def _fixation_mask(fixations, shape: tuple[int, ...]) -> np.ndarray:
    fixations = np.asarray(fixations)
    if fixations.shape == shape:
        mask = fixations.astype(bool)
    else:
        points = fixations.reshape(-1, 2).astype(int)
        inside = (
            (points[:, 0] >= 0)
            & (points[:, 0] < shape[0])
            & (points[:, 1] >= 0)
            & (points[:, 1] < shape[1])
        )
        if not inside.all():
            row, col = points[~inside][0]
            raise ValueError(f"fixation (row {row}, column {col}) lies outside the {shape} map")
        mask = np.zeros(shape, bool)
        mask[points[:, 0], points[:, 1]] = True
    if not mask.any():
        raise ValueError("no fixation: there is nothing to score against")
    return mask


def normalized_scanpath_saliency(prediction, fixations) -> float:
    """NSS = mean over fixated pixels of the standardised prediction ((P - mean) / std).

    0 is chance; a constant prediction scores 0.
    """
    p = _check_map(prediction, "prediction")
    mask = _fixation_mask(fixations, p.shape)
    if p.std() == 0:
        return 0.0
    return float(((p - p.mean()) / p.std())[mask].mean())


def auc_judd(prediction, fixations) -> float:
    """AUC-Judd: the ROC area of the prediction as a detector of fixated pixels.

    Each fixated pixel's saliency is a threshold; the true positive rate is the share of
    fixated pixels at or above it, the false positive rate the share of the other pixels at
    or above it; the points, from (0, 0) to (1, 1), are joined by straight lines (the
    benchmark's trapezoid, so one fixation at the median scores 0.75, not 0.5). 1 is
    perfect; a constant prediction scores 0.5.
    """
    p = _check_map(prediction, "prediction")
    mask = _fixation_mask(fixations, p.shape)
    if p.max() == p.min():
        return 0.5
    # ties broken by a tiny jitter, as in the benchmark's code, so equal values do not
    # count as all above or all below a threshold
    jitter = np.random.default_rng(0).random(p.shape) * 1e-7 * (p.max() - p.min())
    p = p + jitter
    at_fixations = np.sort(p[mask])[::-1]
    others = p[~mask]
    n_fix, n_other = len(at_fixations), len(others)
    if n_other == 0:
        return 1.0
    sorted_others = np.sort(others)
    tp, fp = [0.0], [0.0]
    for rank, threshold in enumerate(at_fixations, start=1):
        above = n_other - np.searchsorted(sorted_others, threshold, side="left")
        tp.append(rank / n_fix)
        fp.append(above / n_other)
    tp.append(1.0)
    fp.append(1.0)
    tp, fp = np.asarray(tp), np.asarray(fp)
    return float(np.sum(np.diff(fp) * (tp[1:] + tp[:-1]) / 2))
