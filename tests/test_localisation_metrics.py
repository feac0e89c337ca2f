"""The finding-mask scores (pointing game, thresholded map, IoU) and the worst-class AUC on
hand-made arrays whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from visprior.metrics.classification import (
    classification_metrics,
    mask_iou,
    pointing_hit,
    threshold_map,
)


def _peak_at(row: int, col: int, shape=(12, 12)) -> np.ndarray:
    saliency = np.zeros(shape)
    saliency[row, col] = 1.0
    return saliency


def _mask_at(*cells, shape=(12, 12)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    for row, col in cells:
        mask[row, col] = True
    return mask


def test_pointing_hit_inside_the_mask_needs_no_tolerance():
    assert pointing_hit(_peak_at(5, 5), _mask_at((5, 5), (9, 9)))
    assert not pointing_hit(_peak_at(5, 5), _mask_at((5, 6)))


def test_pointing_tolerance_is_a_euclidean_radius():
    mask = _mask_at((5, 8))  # three pixels right of the peak
    assert not pointing_hit(_peak_at(5, 5), mask, tolerance=2.9)
    assert pointing_hit(_peak_at(5, 5), mask, tolerance=3.0)
    diagonal = _mask_at((8, 9))  # 3 down, 4 right: distance 5, more than a 4-pixel square
    assert not pointing_hit(_peak_at(5, 5), diagonal, tolerance=4.9)
    assert pointing_hit(_peak_at(5, 5), diagonal, tolerance=5.0)


def test_a_constant_map_points_nowhere():
    everywhere = np.ones((12, 12), bool)
    assert not pointing_hit(np.full((12, 12), 0.3), everywhere, tolerance=100)


def test_pointing_refuses_what_cannot_be_scored():
    with pytest.raises(ValueError, match="mask is empty"):
        pointing_hit(_peak_at(1, 1), np.zeros((12, 12), bool))
    with pytest.raises(ValueError, match="one 2D shape"):
        pointing_hit(_peak_at(1, 1), np.ones((12, 11), bool))
    with pytest.raises(ValueError, match="tolerance must be"):
        pointing_hit(_peak_at(1, 1), _mask_at((1, 1)), tolerance=-1)
    with pytest.raises(ValueError, match="NaN"):
        pointing_hit(np.full((12, 12), np.nan), _mask_at((1, 1)))


def test_threshold_map_is_at_half_the_range():
    ramp = np.array([[0.0, 1.0, 2.0, 3.0, 4.0]])  # normalised: 0, 1/4, 1/2, 3/4, 1
    assert threshold_map(ramp).tolist() == [[False, False, True, True, True]]
    # an offset and a scale do not change it: the map is min-max normalised first
    assert threshold_map(10 + 3 * ramp).tolist() == threshold_map(ramp).tolist()
    assert threshold_map(ramp, threshold=0.8).tolist() == [[False, False, False, False, True]]
    assert not threshold_map(np.full((3, 3), 7.0)).any()  # constant: nothing marked


def test_mask_iou_of_known_overlaps():
    first = np.zeros((8, 8), bool)
    first[:4, :4] = True
    second = np.zeros((8, 8), bool)
    second[2:6, 2:6] = True
    # 2 x 2 in common, 16 + 16 - 4 in either
    assert mask_iou(first, second) == pytest.approx(4 / 28)
    assert mask_iou(first, first) == 1.0
    assert mask_iou(~first, first) == 0.0
    assert mask_iou(np.zeros((8, 8), bool), first) == 0.0  # an empty prediction finds nothing
    with pytest.raises(ValueError, match="target mask is empty"):
        mask_iou(first, np.zeros((8, 8), bool))
    with pytest.raises(ValueError, match="differ in shape"):
        mask_iou(first, first[:4])


def test_worst_class_auc_is_the_lowest_scored_class():
    probabilities = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4], [0.5, 0.4, 0.1]])
    labels = np.array([0, 1, 2, 1])
    scores = classification_metrics(probabilities, labels, ["a", "b", "c"])
    assert scores["worst_class_auc"] == 1.0
    # class b reversed: its positives {0.3, 0.6} vs negatives {0.9, 0.7}: AUC 0
    flipped = probabilities.copy()
    flipped[:, 1] = 1 - flipped[:, 1]
    scores = classification_metrics(flipped, labels, ["a", "b", "c"])
    assert scores["auc_per_class"]["b"] == 0.0 and scores["worst_class_auc"] == 0.0
    # a class without positives has no AUC and is not the worst
    missing = classification_metrics(probabilities[:2], labels[:2], ["a", "b", "c"])
    assert missing["auc_skipped"] == ["c"] and missing["worst_class_auc"] == 1.0
    alone = classification_metrics(probabilities[:1], labels[:1], ["a", "b", "c"])
    assert math.isnan(alone["worst_class_auc"])
