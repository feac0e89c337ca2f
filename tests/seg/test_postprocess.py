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


def test_a_class_with_a_large_second_part_in_a_training_mask_is_named_with_its_case():
    """Class 2's second cube holds half its voxels: several real parts. Class 1's stray voxel
    holds 1 of 217, under the 10% rule; class 3 has exactly one component."""
    from visprior.seg.postprocess import multi_component_classes

    _, truth = _case()
    truth[19, 19, 19] = 1  # a one-voxel island of class 1
    one_part = np.zeros(SHAPE, np.uint8)
    one_part[5:9, 5:9, 5:9] = 3
    found = multi_component_classes([("first", one_part), ("second", truth)], [1, 2, 3])
    assert found == {2: "case second: its second-largest component holds 50% of its voxels"}


def test_a_second_part_just_under_a_tenth_is_no_second_part():
    from visprior.seg.postprocess import multi_component_classes

    label = np.zeros((30, 30, 30), np.uint8)
    label[0:10, 0:10, 0:10] = 1  # 1000 voxels
    label[20:22, 20:22, 20:22] = 1  # 8 voxels
    label[20:30, 0:10, 0:10] = 2  # 1000 voxels
    label[0:4, 20:30, 20:30] = 2  # 400 voxels: 400 / 1400 = 29%
    label[25:28, 25:30, 25:27] = 2  # 30 voxels
    assert multi_component_classes([("c", label)], [1, 2]) == {
        2: "case c: its second-largest component holds 28% of its voxels"
    }
    # touching diagonally is one component (26-connectivity, as the step itself)
    diagonal = np.zeros((4, 4, 4), np.uint8)
    diagonal[0, 0, 0] = diagonal[1, 1, 1] = 1
    assert multi_component_classes([("d", diagonal)], [1]) == {}


def test_a_class_not_tried_keeps_its_voxels_even_where_the_step_would_help():
    pairs = [_case(), _case()]
    decision = choose_largest_component(pairs, [1, 2], _keep, not_tried={1: "several parts"})
    assert decision["largest_component"] == []
    assert decision["dice_after"]["1"] == decision["dice_before"]["1"]
    assert decision["not_tried"] == {"1": "several parts"} and decision["held_out"] is True


def test_a_run_without_a_held_out_case_chooses_nothing_and_predicts_nothing(tmp_path):
    """Validation cases the run trained on are no held-out cases: no network is even loaded
    (the run folder here has none), and the decision file says why."""
    from visprior.seg.postprocess import decide_for_run, describe_decision

    run = tmp_path / "run"
    run.mkdir()
    decision = decide_for_run(run, dataset=None, case_names=["a", "b"], training_names=["b", "a"])
    assert decision["largest_component"] == [] and decision["held_out"] is False
    assert load_decision(run) == []
    saved = json.loads((run / "postprocessing.json").read_text())
    assert saved["note"].startswith("no held-out case: the run validates on the cases it")
    assert not (run / "validation").exists()
    assert describe_decision(saved, "p.json").startswith("post-processing: none chosen: no held")
