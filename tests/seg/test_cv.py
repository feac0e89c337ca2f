"""Ensembles and cross-validation: an ensemble of a run with itself is the run, runs that
disagree on a setting are named, and ``seg cv`` trains every fold, merges their validation,
picks up where it stopped, and predicts with the folds' ensemble."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from tests.seg.test_plan import TINY_TRAINING, write_dataset
from tests.seg.test_tta import _checkpoint
from visprior.cli import main
from visprior.engine.checkpoint import load_checkpoint, save_checkpoint
from visprior.seg.predict import load_ensemble, load_predictor


def _image(tmp_path):
    path = tmp_path / "case_0000.nii.gz"
    volume = np.random.default_rng(0).normal(size=(32, 32, 32)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
    return path


def test_an_ensemble_of_a_run_with_itself_equals_the_run(tmp_path):
    checkpoint = _checkpoint(tmp_path / "run.pt")
    image = _image(tmp_path)
    alone = load_predictor(checkpoint).predict_case([image])
    twice = load_ensemble([checkpoint, checkpoint]).predict_case([image])
    np.testing.assert_array_equal(twice[0], alone[0])
    np.testing.assert_allclose(twice[1], alone[1], rtol=1e-6, atol=1e-7)


def test_runs_that_disagree_are_refused_with_the_setting_named(tmp_path):
    first = _checkpoint(tmp_path / "a.pt")
    state = load_checkpoint(first)
    state["preprocessing"]["spacing"] = [2.0, 2.0, 2.0]
    other = save_checkpoint(tmp_path / "b.pt", state)
    with pytest.raises(ValueError, match=r"differ in preprocessing\.spacing"):
        load_ensemble([first, other])
    state["preprocessing"]["spacing"] = None
    state["labels"] = {"background": 0, "a": 1, "c": 2}
    relabelled = save_checkpoint(tmp_path / "c.pt", state)
    with pytest.raises(ValueError, match="differ in labels"):
        load_ensemble([first, relabelled])


def test_seg_cv_trains_every_fold_merges_and_resumes(tmp_path, capsys):
    folder = write_dataset(tmp_path, [(1.0, 1.0, 1.0)] * 3)
    output = tmp_path / "cv"
    training = [t for t in TINY_TRAINING if t not in ("--fold", "-1")]
    args = ["seg", "cv", str(folder), "-o", str(output), "--roi", "32", "32", "16", *training,
            "--set", "folds=3"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "cross-validation over 3 case(s): mean Dice" in out
    for fold in range(3):
        run = output / f"fold_{fold}"
        (validated,) = json.loads((run / "splits.json").read_text())[fold]["val"]
        assert (run / "validation" / f"{validated}.nii.gz").is_file()  # each case once
    summary = json.loads((output / "cv_summary.json").read_text())
    assert summary["cases"] == 3 and set(summary["dice"]) == {"organ"}
    assert json.loads((output / "postprocessing.json").read_text())["cases"] == 3

    assert main(args) == 0  # again: every fold is finished, nothing is trained twice
    assert capsys.readouterr().out.count("finished before, kept") == 3

    image = folder / "imagesTr" / "case0_0000.nii.gz"
    predicted = tmp_path / "predicted"
    assert main(["seg", "predict", str(output), str(image), "-o", str(predicted)]) == 0
    assert "ensemble of 3 runs" in capsys.readouterr().out
    assert nib.load(predicted / "case0.nii.gz").shape == nib.load(image).shape
