"""The 3D segmentation readers under one name: ``data/dataset.py`` (dataset and case classes,
nnU-Net and MSD layouts), ``data/volumes.py`` (header checks, reading), ``data/checks.py``
(``check_dataset``) and ``data/splits.py`` (cross-validation). Kept so that earlier imports
keep working.

Example:
    >>> dataset = load_dataset("nnUNet_raw/Dataset004_Hippocampus")
    >>> print(format_problems(check_dataset(dataset.root)))
    >>> split = kfold_split([case.name for case in dataset.training], folds=5)
    >>> train_files = dataset.data_dicts(split[0]["train"])
"""

from visprior.data import (
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
    num_classes_for,
    save_split,
)
from visprior.data.dataset import MAX_LABEL_VALUE
from visprior.data.volumes import (
    MAX_VOXELS,
    check_volume_header,
    read_volume,
    read_volume_header,
    verify_headers,
)

__all__ = [
    "MAX_LABEL_VALUE",
    "MAX_VOXELS",
    "DatasetError",
    "DatasetProblem",
    "ProblemList",
    "SegmentationCase",
    "SegmentationDataset",
    "check_dataset",
    "check_volume_header",
    "format_problems",
    "kfold_split",
    "load_dataset",
    "load_split",
    "num_classes_for",
    "read_volume",
    "read_volume_header",
    "save_split",
    "verify_headers",
]
