"""The segmentation loss: DiceCE per crop (the recipe) or with nnU-Net's batch Dice."""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F

from visprior.seg.config import SegTrainConfig
from visprior.seg.train import SegmentationTask


def _loss(batch_dice: bool, logits: torch.Tensor, label: torch.Tensor) -> float:
    dataset = SimpleNamespace(labels={"background": 0, "a": 1, "b": 2}, num_classes=3)
    task = SegmentationTask(
        SegTrainConfig(dataset="unused", batch_dice=batch_dice), dataset, None, None, "cpu"
    )
    return float(task.training_loss(lambda image: logits, {"image": logits, "label": label}))


def test_batch_dice_scores_a_class_missing_from_one_crop_on_the_whole_batch():
    label = torch.zeros(2, 1, 4, 4, 4, dtype=torch.long)
    label[:, :, :2] = 1
    label[0, :, 2:, :2, :2] = 2  # class b: 8 voxels, in the first crop only
    predicted = label.clone()
    predicted[1, 0, 3, 3, 3] = 2  # one stray voxel of b in the crop that has none
    logits = 20.0 * F.one_hot(predicted[:, 0], 3).permute(0, 4, 1, 2, 3).float()
    per_crop, batch = _loss(False, logits, label), _loss(True, logits, label)
    # the cross entropy is the same in both. Dice per crop: b scores ~0 in the second crop,
    # so 1 of the 6 (crop, class) terms is ~1. Over the batch, b's Dice is 2 * 8 / (8 + 9): a
    # loss of 1/17 for 1 of 3 classes. The difference: 1/6 - 1/51 = 0.147
    assert abs((per_crop - batch) - (1 / 6 - 1 / 51)) < 0.01
