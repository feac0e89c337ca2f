"""The ``visprior`` command: model listing and the real-data demo, end to end."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from visprior.cli import main


def test_models_command(capsys):
    assert main(["models"]) == 0
    assert "repuxnet\nrepuxnet_plain\nrepuxnet_sr\n" in capsys.readouterr().out


def test_demo_rejects_an_unknown_model(tmp_path, capsys):
    assert main(["demo", "--model", "nope", "--output", str(tmp_path)]) == 2
    assert "unknown model name 'nope'" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_runs_every_step_on_the_brain_atlas(tmp_path, capsys):
    args = ["demo", "--output", str(tmp_path), "--minutes", "0.15", "--val-every", "1000"]
    assert main(args) == 0
    out = capsys.readouterr().out
    for step in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]", "mean foreground"):
        assert step in out
    (run,) = (tmp_path / "runs").iterdir()
    prediction = nib.load(run / "predictions" / "right.nii.gz")
    source = nib.load(
        tmp_path / "data" / "Dataset001_HarvardOxfordSubcortical" / "imagesTs" / "right_0000.nii.gz"
    )
    assert prediction.shape == source.shape  # back on the 1 mm grid of the input
    np.testing.assert_allclose(prediction.affine, source.affine, atol=1e-6)
    assert (run / "overlay.png").stat().st_size > 10_000
    assert (run / "evaluation" / "per_case.csv").is_file()
    assert "lateral_ventricle" in out and "brain_stem" in out
