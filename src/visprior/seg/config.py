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

from visprior.engine.config import RunConfig

__all__ = ["Preprocessing", "SegTrainConfig"]

METHOD_NETWORK = "repuxnet"  # what seg train trains and a plan is for unless told otherwise
CPU_BUDGET_NETWORK = "unet"  # what a budget plan is for on a machine without a GPU


@dataclass
class Preprocessing:
    """What turns a raw volume into network input; saved in every checkpoint.

    Args:
        intensity: ``"ct"`` clips to ``ct_window`` (HU) and scales to [0, 1]; ``"mri"``
            normalises each channel to zero mean, unit variance over its non-zero voxels;
            ``"none"`` keeps the values; ``"auto"`` picks from the dataset's channel names;
            ``"planned"`` normalises each channel as ``channel_normalization`` says.
        ct_window: HU range mapped to [0, 1] by the CT preset.
        channel_normalization: with ``"planned"``, one entry per channel, as ``seg plan``
            writes them: ``{"scheme": "ct", "clip": [low, high], "mean": m, "std": s}`` (clip,
            then z-score with the dataset's foreground statistics) or ``{"scheme":
            "zscore"}`` (zero mean, unit variance over the image's non-zero voxels).
        spacing: target voxel size in mm, or ``None`` to keep each volume's own.
        orientation: axis codes every volume is reoriented to.
        crop_foreground: crop to the bounding box of non-zero image voxels.
    """

    intensity: Literal["auto", "ct", "mri", "none", "planned"] = "auto"
    ct_window: tuple[float, float] = (-125.0, 275.0)
    channel_normalization: tuple[dict[str, Any], ...] = ()
    spacing: tuple[float, float, float] | None = None
    orientation: str = "RAS"
    crop_foreground: bool = True


@dataclass
class SegTrainConfig(RunConfig):
    """Everything ``visprior seg train`` needs; each field is a ``key=value`` override.

    The fields shared with ``cxr train`` are :class:`~visprior.engine.config.RunConfig`'s
    (dataset, output, model, batch size, learning rate, seed, device, ...). Sizes are in voxels
    after resampling; times in minutes.
    """

    # RunConfig's fields, with this task's defaults
    output: str = "runs/seg"
    model: str = METHOD_NETWORK
    lr: float = 1e-4
    weight_decay: float = 1e-5
    num_workers: int = 2
    # Data
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    fold: int = 0  # -1: train on every case (and validate on them: no held-out set)
    folds: int = 5
    cache_rate: float = 1.0
    init_checkpoint: str | None = None
    # resample depth-wise kernels of another size from init_checkpoint (MedNeXt's UpKern)
    upkern: bool = False
    # ``seg plan``'s file these options came from, and which of them it set (dotted keys)
    plan_file: str = ""
    # which of the plan's configurations: "3d_fullres"; "3d_lowres" (nnU-Net's coarser
    # spacing, trained on its own: no cascade); "budget" (``seg plan --budget``'s timed plan);
    # "auto": the budget plan where the plan has one, else 3d_fullres
    configuration: Literal["auto", "3d_fullres", "3d_lowres", "budget"] = "auto"
    # a budget in wall time (minutes) for the whole run: the plan's timing, the training with
    # its validations, and the held-out prediction after it (``seg train --budget``)
    budget_minutes: float | None = None
    from_plan: tuple[str, ...] = ()
    # Training
    iterations: int = 40000
    crops_per_volume: int = 2
    roi_size: tuple[int, int, int] = (96, 96, 96)
    # "pos_neg": crops centred on foreground / background voxels by positive_weight and
    # negative_weight (the recipe); "classes": centred on each label class (background
    # included) alike, so that small structures are seen as often as large ones.
    crop_sampling: Literal["pos_neg", "classes"] = "pos_neg"
    positive_weight: float = 1.0
    negative_weight: float = 1.0
    # the Dice term's sums taken over the whole batch (nnU-Net's batch Dice): a class missing
    # from one crop is scored on the batch, not as a Dice of ~0 in that crop for a stray voxel
    batch_dice: bool = False
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
    # after training: predict the validation cases and choose the post-processing on them
    postprocess_on_validation: bool = True
    val_overlap: float = 0.25
    sw_batch_size: int = 2
