"""The ``visprior`` command: the demo on the real MNI152 template, and model listing."""

from __future__ import annotations

import math

import pytest

from visprior.cli import main
from visprior.demo import load_mni152


def test_mni152_tissue_labels():
    image, labels, affine = load_mni152(resolution_mm=3)
    assert image.shape == labels.shape == (67, 79, 64)
    assert image.min() >= 0.0 and image.max() == pytest.approx(1.0)
    assert set(map(int, set(labels.ravel().tolist()))) == {0, 1, 2}
    assert affine[0, 0] == pytest.approx(3.0)
    # White matter is brighter than grey matter on a T1.
    assert image[labels == 2].mean() > image[labels == 1].mean()


def test_demo_runs_end_to_end(capsys):
    code = main(
        [
            "demo",
            "--feature-size",
            "8",
            "--hidden-size",
            "16",
            "--resolution-mm",
            "3",
            "--train-steps",
            "2",
            "--crop",
            "32",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "padded input (1, 1, 80, 80, 64)" in out
    assert "output (1, 3, 80, 80, 64)" in out
    losses = [
        float(line.split("DiceCE ")[1].split()[0]) for line in out.splitlines() if "DiceCE" in line
    ]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    difference = float(out.split("max |training - fused| = ")[1].split()[0])
    assert difference < 1e-4


def test_demo_with_another_network(capsys):
    code = main(
        [
            "demo",
            "--model",
            "uxnet",
            "--feature-size",
            "8",
            "--resolution-mm",
            "3",
            "--train-steps",
            "1",
        ]
    )
    assert code == 0
    assert "visprior demo: uxnet" in capsys.readouterr().out


def test_models_command(capsys):
    assert main(["models"]) == 0
    assert "repuxnet\nrepuxnet_plain\nrepuxnet_sr\n" in capsys.readouterr().out


def test_bad_model_name(capsys):
    assert main(["demo", "--model", "nope"]) == 2
    assert "unknown model name 'nope'" in capsys.readouterr().err
