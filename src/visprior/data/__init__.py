"""Datasets: read, check and split 3D segmentation data in the nnU-Net v2 and MSD layouts."""

from visprior.data.segmentation import (
    DatasetError,
    DatasetProblem,
    ProblemList,
    SegmentationCase,
    SegmentationDataset,
    check_dataset,
    format_problems,
    kfold_split,
    load_dataset,
    load_split,
    save_split,
)

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
    "save_split",
]
