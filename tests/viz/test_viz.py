"""Tests for visprior.viz: overlay and curve PNGs are valid and show what they should."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from matplotlib import colormaps
from matplotlib.image import imread

from visprior.viz import load_curves, save_curves_png, save_overlay_png
from visprior.viz.overlay import ALPHA, _aspect

SHAPE = (20, 20, 20)


def _cube(value: int = 1) -> np.ndarray:
    labels = np.zeros(SHAPE, dtype=np.int64)
    labels[4:10, 4:10, 4:10] = value
    return labels


def _overlay_pixels(png: np.ndarray, value_index: int = 0) -> int:
    """Pixels showing tab10 colour ``value_index`` at ALPHA over a black image."""
    expected = ALPHA * np.array(colormaps["tab10"](value_index)[:3])
    return int(np.sum(np.all(np.abs(png[..., :3] - expected) < 0.02, axis=-1)))


# --------------------------------------------------------------------------------------------
# save_overlay_png
# --------------------------------------------------------------------------------------------


def test_overlay_is_a_wide_png_with_coloured_labels(tmp_path: Path):
    path = save_overlay_png(np.zeros(SHAPE), _cube(), tmp_path / "figs" / "overlay.png")
    png = imread(path)
    assert png.ndim == 3 and png.shape[2] in (3, 4)
    assert png.shape[1] > png.shape[0]  # three panels side by side
    # The black image with the cube blended in: many pixels of exactly that colour.
    assert _overlay_pixels(png) > 500
    assert [p.name for p in path.parent.iterdir()] == ["overlay.png"]  # no temporary left


def test_empty_labels_draw_no_overlay(tmp_path: Path):
    image = np.random.default_rng(0).normal(size=SHAPE)
    path = save_overlay_png(image, np.zeros(SHAPE, int), tmp_path / "empty.png")
    png = imread(path)
    grey = np.abs(png[..., 0] - png[..., 1]) + np.abs(png[..., 1] - png[..., 2])
    assert np.all(grey < 1e-6)  # no legend, no colour: only grey pixels


def test_slice_index_away_from_the_labels_shows_none(tmp_path: Path):
    path = save_overlay_png(np.zeros(SHAPE), _cube(), tmp_path / "o.png", slice_index=(15, 15, 15))
    assert _overlay_pixels(imread(path)) == 0


def test_several_label_maps_and_class_names(tmp_path: Path):
    maps = {"label": _cube(1), "prediction": _cube(2)}
    one_row = imread(save_overlay_png(np.zeros(SHAPE), _cube(), tmp_path / "one.png"))
    names = {1: "liver", 2: "spleen"}
    path = save_overlay_png(
        np.zeros(SHAPE), maps, tmp_path / "two.png", class_names=names, spacing=(0.8, 0.8, 3.0)
    )
    png = imread(path)
    assert png.shape[0] > one_row.shape[0]  # a second row
    assert _overlay_pixels(png, 0) > 500 and _overlay_pixels(png, 1) > 500


def test_aspect_follows_spacing():
    spacing = (0.5, 1.0, 3.0)
    assert _aspect(0, spacing) == pytest.approx(3.0)  # sagittal: z up, y across
    assert _aspect(1, spacing) == pytest.approx(6.0)  # coronal: z up, x across
    assert _aspect(2, spacing) == pytest.approx(2.0)  # axial: y up, x across


def test_two_dimensional_image_is_rejected(tmp_path: Path):
    with pytest.raises(ValueError, match=r"\(20, 20\)"):
        save_overlay_png(np.zeros((20, 20)), np.zeros((20, 20), int), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_label_shape_mismatch_names_both_shapes(tmp_path: Path):
    maps = {"label": _cube(), "prediction": np.zeros((20, 20, 19), int)}
    with pytest.raises(ValueError, match=r"prediction.*\(20, 20, 19\).*\(20, 20, 20\)"):
        save_overlay_png(np.zeros(SHAPE), maps, tmp_path / "x.png")


# --------------------------------------------------------------------------------------------
# save_curves_png / load_curves
# --------------------------------------------------------------------------------------------


def _log_rows() -> list[dict]:
    """Loss every 10 iterations, validation Dice every 50, lr every row, a text column."""
    rows = []
    for it in range(0, 201, 10):
        rows.append(
            {
                "iteration": it,
                "train_loss": 1.0 / (1 + it),
                "val_mean_dice": it / 200 if it % 50 == 0 else None,
                "lr": 1e-4 * (1 - it / 400),
                "phase": "train",
            }
        )
    return rows


def test_sparse_columns_keep_only_their_points():
    curves = load_curves(_log_rows())
    assert list(curves) == ["train_loss", "val_mean_dice", "lr"]  # "phase" is not numeric
    xs, ys = curves["val_mean_dice"]
    np.testing.assert_array_equal(xs, [0, 50, 100, 150, 200])
    np.testing.assert_allclose(ys, [0, 0.25, 0.5, 0.75, 1.0])
    assert len(curves["train_loss"][0]) == 21


def test_curves_from_csv_with_empty_cells(tmp_path: Path):
    rows = _log_rows()
    csv_path = tmp_path / "metrics.csv"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)  # None becomes an empty cell
    assert list(load_curves(csv_path)) == ["train_loss", "val_mean_dice", "lr"]
    path = save_curves_png(csv_path, tmp_path / "out" / "curves.png")
    png = imread(path)
    assert png.ndim == 3 and png.shape[1] > png.shape[0]  # three subplots in a row


def test_curves_from_rows_with_missing_keys(tmp_path: Path):
    rows = [{"iteration": 1, "loss": 0.9}, {"iteration": 2, "loss": 0.8, "val_dice": 0.5}, {}]
    path = save_curves_png(rows, tmp_path / "c.png")
    assert imread(path).shape[0] > 0
    assert load_curves(rows)["val_dice"][0].tolist() == [2.0]


def test_curves_need_the_x_column(tmp_path: Path):
    with pytest.raises(ValueError, match="'step'.*iteration"):
        save_curves_png(_log_rows(), tmp_path / "c.png", x="step")
    with pytest.raises(ValueError, match="no numeric column"):
        save_curves_png([{"iteration": 1, "phase": "train"}], tmp_path / "c.png")
