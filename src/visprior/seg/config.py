"""The 3D segmentation task's configuration: the paper's recipe as defaults.

RepUX-Net's recipe: AdamW lr 1e-4, 96^3 crops (pos 1 / neg 1, 2 crops per volume), DiceCE,
CT window -125..275 HU, RAS, foreground crop, intensity shift 0.1 (p 0.5), affine (rotate
pi/30, scale 0.1), validation every 500 iterations by sliding window (overlap 0.25),
test-time overlap 0.5, the best checkpoint kept by mean Dice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Preprocessing", "SegTrainConfig"]


@dataclass
class Preprocessing:
    """What turns a raw volume into network input; saved in every checkpoint.

    Args:
        intensity: ``"ct"`` clips to ``ct_window`` (HU) and scales to [0, 1]; ``"mri"``
            normalises each channel to zero mean, unit variance over its non-zero voxels;
            ``"none"`` keeps the values; ``"auto"`` picks from the dataset's channel names.
        ct_window: HU range mapped to [0, 1] by the CT preset.
        spacing: target voxel size in mm, or ``None`` to keep each volume's own.
        orientation: axis codes every volume is reoriented to.
        crop_foreground: crop to the bounding box of non-zero image voxels.
    """

    intensity: Literal["auto", "ct", "mri", "none"] = "auto"
    ct_window: tuple[float, float] = (-125.0, 275.0)
    spacing: tuple[float, float, float] | None = None
    orientation: str = "RAS"
    crop_foreground: bool = True


@dataclass
class SegTrainConfig:
    """Everything ``visprior seg train`` needs; each field is a ``key=value`` override.

    Sizes are in voxels after resampling; times in minutes.
    """

    dataset: str = ""
    output: str = "runs/seg"
    model: str = "repuxnet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    fold: int = 0  # -1: train on every case (and validate on them: no held-out set)
    folds: int = 5
    # Training
    iterations: int = 40000
    time_limit_minutes: float = math.inf
    batch_size: int = 1
    crops_per_volume: int = 2
    roi_size: tuple[int, int, int] = (96, 96, 96)
    # "pos_neg": crops centred on foreground / background voxels by positive_weight and
    # negative_weight (the recipe); "classes": centred on each label class (background
    # included) alike, so that small structures are seen as often as large ones.
    crop_sampling: Literal["pos_neg", "classes"] = "pos_neg"
    positive_weight: float = 1.0
    negative_weight: float = 1.0
    lr: float = 1e-4
    weight_decay: float = 1e-5
    lr_schedule: Literal["constant", "poly", "cosine"] = "constant"
    warmup_iterations: int = 0
    # Augmentation
    flip_axes: tuple[int, ...] = ()
    flip_prob: float = 0.5
    shift_intensity: float = 0.1
    shift_intensity_prob: float = 0.5
    rotate_range: float = math.pi / 30
    scale_range: float = 0.1
    affine_prob: float = 0.5
    # Validation
    val_every: int = 500
    val_overlap: float = 0.25
    sw_batch_size: int = 2
    # Runtime
    seed: int = 0
    deterministic: bool = False
    amp: bool = True
    sync_batchnorm: bool = False  # under torchrun on GPUs: BatchNorm over the global batch
    num_workers: int = 2
    cache_rate: float = 1.0
    device: str = "auto"
    init_checkpoint: str | None = None
