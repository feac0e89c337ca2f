"""Saliency metrics on hand-made maps whose scores are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from visprior.metrics.saliency import (
    EPS,
    auc_judd,
    correlation_coefficient,
    kl_divergence,
    normalized_scanpath_saliency,
    similarity,
)

rng = np.random.default_rng(0)
MAP = rng.random((6, 8))
LEFT = np.zeros((4, 4))
LEFT[:, :2] = 1.0
RIGHT = np.zeros((4, 4))
RIGHT[:, 2:] = 1.0
UNIFORM = np.ones((4, 4))


def _blob(shape: tuple[int, int], centre: tuple[float, float], sigma: float) -> np.ndarray:
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    return np.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / (2 * sigma**2))


def test_identical_maps():
    assert kl_divergence(MAP, MAP) == pytest.approx(0.0, abs=1e-9)
    assert correlation_coefficient(MAP, MAP) == pytest.approx(1.0)
    assert similarity(MAP, MAP) == pytest.approx(1.0)
    # scale does not matter: maps are compared as distributions
    assert kl_divergence(3 * MAP, MAP) == pytest.approx(0.0, abs=1e-9)
    assert similarity(3 * MAP, MAP) == pytest.approx(1.0)


@pytest.mark.parametrize("shape", [(64, 64), (224, 224), (512, 640)])
def test_kl_of_a_map_with_itself_is_zero_at_any_size(shape):
    # EPS biases it by about EPS * pixels; a coarse regulariser made that visible on big maps
    noise = np.random.default_rng(1).random(shape) + 0.01
    blob = _blob(shape, (shape[0] * 0.4, shape[1] * 0.6), sigma=shape[0] / 10)
    assert kl_divergence(noise, noise) == pytest.approx(0.0, abs=1e-9)
    assert kl_divergence(blob, blob) == pytest.approx(0.0, abs=1e-9)


def test_kl_grows_as_the_prediction_misses_the_target():
    target = _blob((64, 64), (32, 32), sigma=4)
    scores = [
        kl_divergence(_blob((64, 64), (32, 32 + shift), sigma=4), target) for shift in (0, 4, 12)
    ]
    assert scores[0] == pytest.approx(0.0, abs=1e-9)
    assert 0 < scores[1] < scores[2]
    # two Gaussians of one sigma: KL = d^2 / (2 sigma^2) while the grid holds both
    assert scores[1] == pytest.approx(16 / 32, rel=1e-3)


def test_disjoint_maps():
    assert similarity(LEFT, RIGHT) == 0.0
    assert correlation_coefficient(LEFT, RIGHT) == pytest.approx(-1.0)
    # KL: all of G's mass (1/8 per pixel) where P is 0 -> sum g log(EPS + g/EPS)
    expected = 8 * (1 / 8) * math.log(EPS + (1 / 8) / EPS)
    assert kl_divergence(LEFT, RIGHT) == pytest.approx(expected, rel=1e-6)


def test_uniform_prediction_against_half_the_map():
    # P = 1/16 everywhere, G = 1/8 on half: KL = log 2, SIM = 1/2, CC = 0 (P has no spread)
    assert kl_divergence(UNIFORM, LEFT) == pytest.approx(math.log(2), rel=1e-5)
    assert similarity(UNIFORM, LEFT) == pytest.approx(0.5)
    assert correlation_coefficient(UNIFORM, LEFT) == 0.0


def test_nss_and_auc_judd_on_a_known_ranking():
    prediction = np.arange(16, dtype=float).reshape(4, 4)  # larger to the bottom right
    fixations = np.zeros((4, 4), bool)
    fixations[3, 3] = fixations[3, 2] = True  # the two largest values
    assert auc_judd(prediction, fixations) == pytest.approx(1.0)
    # reversed, both fixations rank last: ROC points (0,0), (1,1/2), (1,1) -> 1/4, the
    # benchmark's trapezoid floor for two fixations
    assert auc_judd(prediction.max() - prediction, fixations) == pytest.approx(0.25)
    standardised = (prediction - prediction.mean()) / prediction.std()
    assert normalized_scanpath_saliency(prediction, fixations) == pytest.approx(
        (standardised[3, 3] + standardised[3, 2]) / 2
    )
    # fixations as (row, column) points mean the same
    points = np.array([[3, 3], [3, 2]])
    assert normalized_scanpath_saliency(prediction, points) == pytest.approx(
        normalized_scanpath_saliency(prediction, fixations)
    )


def test_auc_judd_is_the_benchmark_trapezoid():
    prediction = np.arange(9, dtype=float).reshape(3, 3)
    fixations = np.zeros((3, 3), bool)
    fixations[1, 1] = True  # value 4: four of the eight other pixels at or above it
    # ROC points (0,0), (1/2, 1), (1,1): area 1/4 + 1/2
    assert auc_judd(prediction, fixations) == pytest.approx(0.75, abs=1e-6)


def test_constant_and_zero_predictions_score_chance_not_nan():
    fixations = LEFT.astype(bool)
    zeros = np.zeros((4, 4))
    assert auc_judd(UNIFORM, fixations) == 0.5
    assert normalized_scanpath_saliency(UNIFORM, fixations) == 0.0
    assert correlation_coefficient(zeros, LEFT) == 0.0
    # a prediction summing to 0 counts as uniform
    assert kl_divergence(zeros, LEFT) == pytest.approx(kl_divergence(UNIFORM, LEFT))
    assert similarity(zeros, LEFT) == pytest.approx(0.5)


def test_empty_targets_are_errors():
    zeros = np.zeros((4, 4))
    for metric in (kl_divergence, similarity, correlation_coefficient):
        with pytest.raises(ValueError, match="target sums to 0"):
            metric(MAP[:4, :4], zeros)
    for metric in (auc_judd, normalized_scanpath_saliency):
        with pytest.raises(ValueError, match="no fixation"):
            metric(MAP, np.zeros_like(MAP, bool))


def test_bad_maps_are_named():
    with pytest.raises(ValueError, match="differ in shape"):
        kl_divergence(MAP, LEFT)
    with pytest.raises(ValueError, match="prediction has negative values"):
        similarity(-LEFT, LEFT)
    with pytest.raises(ValueError, match="target has NaN"):
        kl_divergence(LEFT, np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match=r"fixation \(row 9, column 0\) lies outside"):
        auc_judd(MAP, np.array([[9, 0]]))
