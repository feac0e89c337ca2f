"""A bundle exported by an earlier visprior (``fixtures/toy_bundle``, written by
``make_bundle_fixture.py``) still runs under ``monai.bundle run`` and gives the labels it gave
when it was exported: the module paths its configs name stay where they were."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "toy_bundle"
# The labels were written on one CPU; another sums float32 in another order, which may flip a
# voxel whose two best classes are within rounding of each other. Of 11,520 voxels, at most
# this many may differ.
MOST_FLIPPED_VOXELS = 5


def _visprior_targets(config) -> set[str]:
    """Every ``_target_`` and ``$from ... import`` of visprior that ``config`` names."""
    found: set[str] = set()
    if isinstance(config, dict):
        for key, value in config.items():
            if key == "_target_" and value.startswith("visprior"):
                found.add(value)
            found |= _visprior_targets(value)
    elif isinstance(config, list):
        for value in config:
            found |= _visprior_targets(value)
    elif isinstance(config, str) and config.startswith("$from visprior"):
        found.add(config)
    return found


def test_the_fixture_names_the_paths_that_must_stay():
    config = json.loads((FIXTURE / "bundle" / "configs" / "inference.json").read_text())
    assert _visprior_targets(config) == {
        "$from visprior.deploy.transforms import case_datalist",
        "visprior.get_model",
        "visprior.seg.transforms.LoadVolumesd",
        "visprior.seg.transforms.CropToForegroundd",
        "visprior.deploy.transforms.ProbabilitiesToLabelsd",
    }


@pytest.mark.slow
def test_monai_runs_the_committed_bundle_to_its_labels(tmp_path):
    bundle = FIXTURE / "bundle"
    command = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", str(bundle / "configs" / "inference.json"),
        "--meta_file", str(bundle / "configs" / "metadata.json"),
        "--bundle_root", str(bundle),
        "--dataset_dir", str(FIXTURE / "images"),
        "--output_dir", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    written = nib.load(tmp_path / "b.nii.gz")
    source = nib.load(FIXTURE / "images" / "b_0000.nii.gz")
    assert written.shape == source.shape
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-4)
    labels = np.asarray(written.dataobj)
    assert labels.dtype == np.uint8
    expected = np.asarray(nib.load(FIXTURE / "expected.nii.gz").dataobj)
    assert np.count_nonzero(labels != expected) <= MOST_FLIPPED_VOXELS
    truth = np.asarray(nib.load(FIXTURE / "truth.nii.gz").dataobj)
    for value in (1, 2):  # the network learnt both structures
        overlap = np.count_nonzero((labels == value) & (truth == value))
        dice = 2 * overlap / (np.count_nonzero(labels == value) + np.count_nonzero(truth == value))
        assert dice > 0.95, (value, dice)
