"""Tests for visprior.seg.evaluate on hand-made masks whose answers are known exactly."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from visprior.seg.evaluate import (
    EvaluationResult,
    evaluate_case,
    evaluate_folder,
    format_table,
)

SHAPE = (10, 10, 10)


def _volume(*boxes: tuple[slice, slice, slice, int]) -> np.ndarray:
    """A label map of SHAPE with each ``(sx, sy, sz, value)`` box painted in."""
    out = np.zeros(SHAPE, dtype=np.int64)
    for sx, sy, sz, value in boxes:
        out[sx, sy, sz] = value
    return out


def _row(rows: list[dict], name: str) -> dict:
    (row,) = [r for r in rows if r["class"] == name]
    return row


def _metrics(row: dict) -> tuple:
    return row["status"], row["dice"], row["hd95"], row["nsd"]


def _save(path: Path, array: np.ndarray, zooms=(1.0, 1.0, 1.0)) -> None:
    nib.save(nib.Nifti1Image(array.astype(np.uint8), np.diag([*zooms, 1.0])), path)


# --------------------------------------------------------------------------------------------
# evaluate_case
# --------------------------------------------------------------------------------------------


def test_known_overlap_gives_exact_dice():
    # A 2x2x2 cube (8 voxels) inside a 2x2x4 box (16 voxels): Dice = 2*8 / (8 + 16) = 2/3.
    pred = _volume((slice(2, 4), slice(2, 4), slice(2, 4), 1))
    label = _volume((slice(2, 4), slice(2, 4), slice(2, 6), 1))
    (row,) = evaluate_case(pred, label, (1, 1, 1), {"organ": 1})
    assert row["status"] == "present"
    assert row["dice"] == pytest.approx(2 * 8 / (8 + 16))


def test_identical_masks_are_perfect():
    label = _volume((slice(2, 7), slice(3, 6), slice(1, 8), 1))
    (row,) = evaluate_case(label.copy(), label, (0.8, 0.8, 2.5), {"organ": 1})
    expected = {"dice": 1.0, "hd95": 0.0, "nsd": 1.0, "status": "present"}
    assert row == {"class": "organ", "value": 1, **expected}


def test_shift_along_anisotropic_axis_gives_exact_hd95():
    # One-voxel-thick slabs two slices apart along z with 3 mm slices: every surface point's
    # nearest neighbour is exactly 2 * 3 = 6 mm away, so every percentile is 6 mm.
    label = _volume((slice(2, 6), slice(2, 6), slice(3, 4), 1))
    pred = _volume((slice(2, 6), slice(2, 6), slice(5, 6), 1))
    (row,) = evaluate_case(pred, label, (1.0, 1.0, 3.0), {"organ": 1}, nsd_tolerance_mm=1.0)
    assert row["hd95"] == pytest.approx(6.0)
    assert row["dice"] == 0.0
    assert row["nsd"] == 0.0  # no surface point within 1 mm
    (wide,) = evaluate_case(pred, label, (1.0, 1.0, 3.0), {"organ": 1}, nsd_tolerance_mm=6.0)
    assert wide["nsd"] == pytest.approx(1.0)  # every point within 6 mm


def test_statuses_and_no_nan():
    label = _volume(
        (slice(1, 3), slice(1, 3), slice(1, 3), 1), (slice(5, 8), slice(5, 8), slice(5, 8), 3)
    )
    pred = _volume(
        (slice(1, 3), slice(1, 3), slice(1, 3), 1), (slice(5, 8), slice(5, 8), slice(5, 8), 2)
    )
    classes = {"kept": 1, "spurious": 2, "lost": 3, "never": 4}
    rows = evaluate_case(pred, label, (1, 1, 1), classes)
    assert [r["class"] for r in rows] == list(classes)
    assert _row(rows, "kept")["status"] == "present"
    assert _metrics(_row(rows, "spurious")) == ("false-positive", 0.0, None, 0.0)
    assert _metrics(_row(rows, "lost")) == ("missed", 0.0, None, 0.0)
    assert _metrics(_row(rows, "never")) == ("absent", None, None, None)
    for row in rows:
        for key in ("dice", "hd95", "nsd"):
            assert row[key] is None or math.isfinite(row[key])


def test_background_entry_is_skipped():
    label = _volume((slice(1, 3), slice(1, 3), slice(1, 3), 1))
    rows = evaluate_case(label, label, (1, 1, 1), {"background": 0, "organ": 1})
    assert [r["class"] for r in rows] == ["organ"]


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(10, 10, 10\).*\(10, 10, 9\)"):
        evaluate_case(np.zeros(SHAPE), np.zeros((10, 10, 9)), (1, 1, 1), {"a": 1})


def test_bad_spacing_is_rejected():
    with pytest.raises(ValueError, match="spacing"):
        evaluate_case(np.zeros(SHAPE), np.zeros(SHAPE), (1, 1), {"a": 1})


# --------------------------------------------------------------------------------------------
# evaluate_folder
# --------------------------------------------------------------------------------------------


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """Two cases; class 1 in both, class 2 only in case b (perfect), class 3 never."""
    pred_dir, label_dir = tmp_path / "pred", tmp_path / "labels"
    pred_dir.mkdir()
    label_dir.mkdir()
    cube = (slice(2, 4), slice(2, 4), slice(2, 4), 1)
    box = (slice(2, 4), slice(2, 4), slice(2, 6), 1)
    other = (slice(6, 8), slice(6, 8), slice(6, 8), 2)
    # case a: Dice 2/3 for class 1.  case b: Dice 1 for classes 1 and 2.
    _save(pred_dir / "a.nii.gz", _volume(cube))
    _save(label_dir / "a.nii.gz", _volume(box))
    _save(pred_dir / "b.nii", _volume(box, other))
    _save(label_dir / "b.nii.gz", _volume(box, other))
    return pred_dir, label_dir


def test_evaluate_folder_writes_csv_and_summary(folders, tmp_path):
    pred_dir, label_dir = folders
    out = tmp_path / "eval" / "nested"
    result = evaluate_folder(pred_dir, label_dir, out_dir=out)
    assert isinstance(result, EvaluationResult)
    assert sorted(p.name for p in out.iterdir()) == ["per_case.csv", "summary.json"]
    assert sorted(p.name for p in pred_dir.iterdir()) == ["a.nii.gz", "b.nii"]

    with open(out / "per_case.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["case", "class", "value", "dice", "hd95", "nsd", "status"]
    assert [(r["case"], r["class"], r["status"]) for r in rows] == [
        ("a", "class_1", "present"),
        ("a", "class_2", "absent"),
        ("b", "class_1", "present"),
        ("b", "class_2", "present"),
    ]
    assert float(rows[0]["dice"]) == pytest.approx(2 / 3)
    assert rows[1]["dice"] == rows[1]["hd95"] == ""

    summary = json.loads((out / "summary.json").read_text())
    c1, c2 = summary["classes"]["class_1"], summary["classes"]["class_2"]
    assert c1["dice"]["mean"] == pytest.approx((2 / 3 + 1) / 2)
    assert c1["dice"]["std"] == pytest.approx((1 - 2 / 3) / 2)
    assert c2["dice"] == {"mean": 1.0, "std": 0.0, "n": 1}  # the absent case is not a zero
    assert c2["counts"] == {"present": 1, "missed": 0, "false-positive": 0, "absent": 1}
    expected = ((2 / 3 + 1) / 2 + 1.0) / 2
    assert summary["mean_foreground_dice"] == pytest.approx(expected)
    assert result.mean_foreground_dice == pytest.approx(expected)
    assert summary["settings"]["nsd_tolerance_mm"] == 1.0


def test_absent_class_is_excluded_from_mean_and_shown_in_table(folders):
    pred_dir, label_dir = folders
    classes = {"background": 0, "liver": 1, "spleen": 2, "tumour": 3}
    result = evaluate_folder(pred_dir, label_dir, classes=classes)
    assert {r["class"] for r in result.rows} == {"liver", "spleen", "tumour"}
    tumour = result.summary["classes"]["tumour"]
    assert tumour["dice"]["mean"] is None
    assert tumour["counts"]["absent"] == 2
    # Mean over liver and spleen only: tumour (absent everywhere) does not pull it to zero.
    assert result.mean_foreground_dice == pytest.approx(((2 / 3 + 1) / 2 + 1.0) / 2)
    table = format_table(result)
    (tumour_line,) = [line for line in table.splitlines() if line.startswith("tumour")]
    assert "absent" in tumour_line
    assert "liver" in table and "mean foreground" in table


def test_spacing_comes_from_label_header(tmp_path):
    pred_dir, label_dir = tmp_path / "p", tmp_path / "l"
    pred_dir.mkdir()
    label_dir.mkdir()
    label = _volume((slice(2, 6), slice(2, 6), slice(3, 4), 1))
    pred = _volume((slice(2, 6), slice(2, 6), slice(5, 6), 1))
    _save(pred_dir / "x.nii.gz", pred, zooms=(1.0, 1.0, 3.0))
    _save(label_dir / "x.nii.gz", label, zooms=(1.0, 1.0, 3.0))
    result = evaluate_folder(pred_dir, label_dir)
    assert result.rows[0]["hd95"] == pytest.approx(6.0)


def test_missing_prediction_lists_the_case(folders):
    pred_dir, label_dir = folders
    _save(label_dir / "case_c.nii.gz", _volume())
    with pytest.raises(ValueError, match="case_c"):
        evaluate_folder(pred_dir, label_dir)


def test_prediction_without_label_lists_the_case(folders):
    pred_dir, label_dir = folders
    _save(pred_dir / "stray.nii.gz", _volume())
    with pytest.raises(ValueError, match="stray"):
        evaluate_folder(pred_dir, label_dir)


def test_shape_mismatch_names_case_and_shapes(folders):
    pred_dir, label_dir = folders
    _save(pred_dir / "a.nii.gz", np.zeros((10, 10, 8)))
    with pytest.raises(ValueError, match=r"'a'.*\(10, 10, 8\).*\(10, 10, 10\)"):
        evaluate_folder(pred_dir, label_dir)


def test_affine_mismatch_names_case(folders):
    pred_dir, label_dir = folders
    _save(pred_dir / "a.nii.gz", _volume(), zooms=(1.0, 1.0, 2.0))
    with pytest.raises(ValueError, match="'a'.*affine"):
        evaluate_folder(pred_dir, label_dir)
