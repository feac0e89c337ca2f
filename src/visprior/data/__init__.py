"""Readers of 3D segmentation data: nnU-Net v2 and MSD datasets (``dataset.py``), volume files
(``volumes.py``), the dataset checker (``checks.py``) and cross-validation splits (``splits.py``).
"""

from visprior.data.checks import check_dataset, format_problems
from visprior.data.dataset import (
    DatasetError,
    DatasetProblem,
    ProblemList,
    SegmentationCase,
    SegmentationDataset,
    load_dataset,
    num_classes_for,
)
from visprior.data.splits import kfold_split, load_split, save_split

__all__ = [
    "DatasetError",
    "DatasetProblem",
    "ProblemList",
    "SegmentationCase",
    "SegmentationDataset",
    "check_dataset",
    "format_problems",
    "kfold_split",
    "load_dataset",
    "load_split",
    "num_classes_for",
    "save_split",
]
