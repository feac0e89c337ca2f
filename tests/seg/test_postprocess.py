"""Post-processing chosen on validation: a class predicted with a stray blob keeps only its
largest component, a bilateral class (two true components) does not; the decision is found
from a run folder or its checkpoints, and ``seg predict --postprocess`` applies it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from visprior.seg.postprocess import (
    choose_largest_component,
    dice_per_class,
    load_decision,
    save_decision,
)
from visprior.seg.predict import keep_largest_components

SHAPE = (20, 20, 20)


def _case() -> tuple[np.ndarray, np.ndarray]:
    """Class 1: one cube, predicted right plus a stray blob far away. Class 2: two cubes (left
    and right structures sharing one label), predicted right."""
    truth = np.zeros(SHAPE, np.uint8)
    truth[2:8, 2:8, 2:8] = 1
    truth[12:16, 2:6, 12:16] = 2
    truth[12:16, 14:18, 12:16] = 2
    predicted = truth.copy()
    predicted[15:18, 15:18, 2:5] = 1  # the stray blob
    predicted[12:16, 2:6, 12:14] = 0  # a little of class 2 missed
    return predicted, truth


def _keep(labels, classes):
    return keep_largest_components(labels, 3, classes)


def test_dice_per_class_on_a_known_case():
    predicted, truth = _case()
    scores = dice_per_class(predicted, truth, [1, 2, 3])
    assert scores[1] == pytest.approx(2 * 216 / (216 + 27 + 216))
    assert np.isnan(scores[3])  # in neither: left out


def test_the_stray_blob_class_keeps_its_largest_component_the_bilateral_class_does_not():
    pairs = [_case(), _case()]
    decision = choose_largest_component(pairs, [1, 2], _keep)
    assert decision["largest_component"] == [1]
    assert decision["dice_after"]["1"] == pytest.approx(1.0)
    assert decision["dice_before"]["1"] < 1.0
    assert decision["dice_after"]["2"] == decision["dice_before"]["2"]  # left as it was
    assert decision["cases"] == 2


def test_a_step_that_lowers_another_class_is_refused():
    """The mean may rise while one class drops: nnU-Net's rule refuses the step."""
    calls = []

    def damaging(labels, classes):
        calls.append(classes)
        out = keep_largest_components(labels, 3, classes)
        out[out == 2] = 0  # also erases class 2
        return out

    decision = choose_largest_component([_case()], [1, 2], damaging)
    assert decision["largest_component"] == []
    assert calls == [[1], [2]]


def test_the_decision_is_found_from_the_run_or_its_checkpoint(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.pt").write_bytes(b"")
    assert load_decision(run) is None
    save_decision(run, {"largest_component": [1, 3], "dice_before": {"2": float("nan")}})
    assert load_decision(run) == [1, 3]
    assert load_decision(run / "checkpoints" / "best.pt") == [1, 3]
    assert json.loads((run / "postprocessing.json").read_text())["dice_before"] == {"2": None}
    (run / "postprocessing.json").write_text("{broken")
    with pytest.raises(ValueError, match="postprocessing.json: not a readable"):
        load_decision(run)


def test_a_bilateral_label_on_disk_keeps_both_sides(tmp_path):
    """Label files as a run's validation leaves them: class 2 is a left and a right structure
    (two components in the truth), class 1 one organ predicted with a stray blob."""
    import nibabel as nib

    from visprior.seg.postprocess import decide_from_files

    predictions, labels = [], []
    for index in range(3):
        predicted, truth = _case()
        for kind, array, found in (("pred", predicted, predictions), ("true", truth, labels)):
            path = tmp_path / f"{kind}{index}.nii.gz"
            nib.save(nib.Nifti1Image(array, np.eye(4)), path)
            found.append(path)
    decision = decide_from_files(predictions, labels, [1, 2], _keep)
    assert decision["largest_component"] == [1] and decision["cases"] == 3
