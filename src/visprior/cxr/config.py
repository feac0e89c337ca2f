"""The CXR classification task's configuration: GG-CAM's recipe as defaults.

GG-CAM's recipe: Adam, lr 5e-3 for ResNet50 (6e-3 for EfficientNetV2-S), ReduceLROnPlateau
on the validation loss (factor 0.1, patience 40 epochs) with the best weights reloaded at each
drop, a 70/10/20 split per class. Everything else (image size, batch, epochs, gaze blur) is
ours, chosen as what such work commonly uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from visprior.cxr.gaze import DEFAULT_SIGMA_PX
from visprior.engine.config import RunConfig

__all__ = ["CXRTrainConfig"]


@dataclass
class CXRTrainConfig(RunConfig):
    """Everything ``visprior cxr train`` needs; each field is a ``key=value`` override.

    The fields shared with ``seg train`` are :class:`~visprior.engine.config.RunConfig`'s
    (dataset, output, model, batch size, learning rate, seed, device, ...).
    """

    # RunConfig's fields, with this task's defaults
    output: str = "runs/cxr"
    model: str = "ggcam_resnet50"
    batch_size: int = 16
    lr: float = 5e-3
    # Data
    format: Literal["egd", "reflacx"] = "egd"
    images_root: str = ""  # default: the dataset folder
    gaze_file: str = "fixations.csv"  # EGD-CXR: or eye_gaze.csv
    classes: tuple[str, ...] = ()  # default: EGD-CXR's Normal / CHF / pneumonia
    normal_class: str = "Normal"  # REFLACX: the class of readings with no listed finding
    split: tuple[float, float, float] = (0.7, 0.1, 0.2)
    split_seed: int = 0
    # keep this share of each class's training part (drawn with split_seed), for
    # data-efficiency studies; the validation and test parts stay as they are
    train_fraction: float = 1.0
    image_size: int = 224
    gaze_sigma_px: float = DEFAULT_SIGMA_PX  # in pixels of the original image
    cache_dir: str = ""  # gaze maps; default <output>/cache
    # Model
    weights: str = ""  # a torchvision ImageNet weights file for the backbone
    use_gaze: bool = True  # GG-CAM; False: a plain CAM classifier (no gaze term)
    # The training part's gaze maps (validation and test keep the real gaze): "fixations"
    # each image's own; "shuffled" dealt out among the images so none keeps its own (a
    # control: gaze statistics without the image-gaze pairing; drawn from seed); "mask" the
    # finding's mask (finding.png; the lungs for an image without one) blurred like gaze (the
    # upper bound: gaze exactly on the finding)
    gaze_source: Literal["fixations", "shuffled", "mask"] = "fixations"
    # MT-UNet: train both heads, or one of them alone (the single-task baselines)
    tasks: Literal["both", "classification", "saliency"] = "both"
    # initial log loss weights: GG-CAM (lg_s_c, lg_s_d, lg_k), MT-UNet (lg_s_c, lg_s_s);
    # empty: the network's defaults (all 0: s = k = 1)
    loss_init: tuple[float, ...] = ()
    # Training
    epochs: int = 100
    plateau_patience: int = 40  # epochs
    plateau_factor: float = 0.1
    early_stop_patience: int = 0  # epochs without gain before stopping; 0: never
    metric: Literal["val_loss", "val_auc", "val_kl"] = "val_loss"  # val_kl: MT-UNet only
