"""Write ``tests/deploy/fixtures/toy_bundle``: a MONAI bundle exported by ``visprior export
bundle`` from a small UNet trained on the toy dataset, one of its images, and the labels
``seg predict`` gave that image when the bundle was exported.

The fixture stands for the bundles users already hold: the test beside it runs it with today's
code, so a move of a module that exported bundles name (``visprior.get_model``,
``visprior.deploy.transforms``, ``visprior.seg.transforms``) fails there. Write it anew only
when the bundle format itself changes on purpose:

    .venv/bin/python -m tests.deploy.make_bundle_fixture
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from tests.seg.test_pipeline import train_toy_run
from visprior.cli import main

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "toy_bundle"
CASE = "b"
# Trained to clear margins between classes, so that the labels do not hang on float rounding.
TRAIN = [
    "--model", "unet", "--roi", "32", "32", "32", "--iterations", "80",
    "--set", "model_kwargs={feature_size: 4, num_res_units: 1}",
    "--set", "val_every=80", "--set", "num_workers=0", "--set", "folds=3", "--set", "lr=1e-2",
]  # fmt: skip


def write_fixture() -> Path:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        dataset, run = train_toy_run(root, TRAIN)
        bundle = root / "bundle"
        assert main(["export", "bundle", str(run), "-o", str(bundle)]) == 0
        image = dataset / "imagesTr" / f"{CASE}_0000.nii.gz"
        predicted = root / "predicted"
        assert main(["seg", "predict", str(run), str(image), "-o", str(predicted)]) == 0
        if FIXTURE.exists():
            shutil.rmtree(FIXTURE)
        shutil.copytree(bundle, FIXTURE / "bundle")
        (FIXTURE / "images").mkdir()
        shutil.copy(image, FIXTURE / "images" / image.name)
        shutil.copy(dataset / "labelsTr" / f"{CASE}.nii.gz", FIXTURE / "truth.nii.gz")
        shutil.copy(predicted / f"{CASE}.nii.gz", FIXTURE / "expected.nii.gz")
    return FIXTURE


if __name__ == "__main__":
    print(f"wrote {write_fixture()}")
