"""MT-UNet: one UNet that predicts where a radiologist looks and classifies the radiograph.

Encoder: five levels of two 3x3 conv + BN + ReLU, widths ``feature_size`` x (1, 2, 4, 8, 16)
(64..1024 by default), 2x2 max-pooling between them. Decoder: x2 upsampling, a 3x3 conv
halving the width, the skip connection concatenated, two 3x3 convs. Two heads:

- classification: concat(global average of the bottleneck, global average of the last
  decoder map) -> Linear 64 -> Dropout 0.25 -> ReLU -> Linear classes;
- saliency: 3x3 conv + BN + ReLU -> 1x1 conv -> log-softmax over all pixels, a log
  probability map of gaze over the image.

The multi-task loss weights ``lg_s_c`` and ``lg_s_s`` live in the network (``loss_weights``),
as GG-CAM's do, so they train, save and resume with it; the loss is
``visprior.cxr.loss.multitask_loss``.

Example:
    >>> net = get_model("mtunet", num_classes=3)
    >>> logits, log_saliency = net(torch.rand(2, 1, 256, 256))  # (2, 3), (2, 1, 256, 256)
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from visprior.nets.registry import register_model

__all__ = ["MTUNet", "MTUNetOutput", "MultiTaskWeights", "mtunet"]


class MTUNetOutput(NamedTuple):
    logits: torch.Tensor  # (N, classes)
    log_saliency: torch.Tensor  # (N, 1, H, W), log-probabilities summing (in exp) to 1


class MultiTaskWeights(nn.Module):
    """The log-sigmas of the two tasks; ``trainable=False`` keeps them at their values."""

    def __init__(self, lg_s_c: float = 0.0, lg_s_s: float = 0.0, trainable: bool = True):
        super().__init__()
        self.lg_s_c = nn.Parameter(torch.tensor(float(lg_s_c)), requires_grad=trainable)
        self.lg_s_s = nn.Parameter(torch.tensor(float(lg_s_s)), requires_grad=trainable)


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    layers = []
    for channels in (in_channels, out_channels):
        layers += [
            nn.Conv2d(channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class _Up(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.reduce = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )
        self.fuse = _double_conv(2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        if x.shape[-2:] != skip.shape[-2:]:  # odd sizes: pad the upsampled map to the skip
            dy, dx = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
            x = F.pad(x, (dx // 2, dx - dx // 2, dy // 2, dy - dy // 2))
        return self.fuse(torch.cat([skip, x], dim=1))


class MTUNet(nn.Module):
    """Args:
    num_classes: classes of the classification head.
    in_channels: image channels (1 for radiographs).
    feature_size: width of the first level; level i has ``feature_size * 2**i``.
    dropout: of the classification head.
    loss_init: initial (lg_s_c, lg_s_s).
    learn_loss_weights: train the two log-sigmas (else they stay at ``loss_init``).
    """

    def __init__(
        self,
        num_classes: int = 3,
        in_channels: int = 1,
        feature_size: int = 64,
        dropout: float = 0.25,
        loss_init: tuple[float, float] = (0.0, 0.0),
        learn_loss_weights: bool = True,
    ):
        super().__init__()
        widths = [feature_size * 2**i for i in range(5)]
        self.encoder = nn.ModuleList(
            [_double_conv(in_channels, widths[0])]
            + [_double_conv(widths[i], widths[i + 1]) for i in range(4)]
        )
        self.decoder = nn.ModuleList([_Up(widths[i + 1], widths[i]) for i in reversed(range(4))])
        self.classifier = nn.Sequential(
            nn.Linear(widths[-1] + widths[0], 64),
            nn.Dropout(dropout),
            nn.ReLU(inplace=True),
            nn.Linear(64, num_classes),
        )
        self.saliency = nn.Sequential(
            nn.Conv2d(widths[0], widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
            nn.Conv2d(widths[0], 1, 1),
        )
        self.loss_weights = MultiTaskWeights(*loss_init, trainable=learn_loss_weights)
        self.num_classes = num_classes

    def forward(self, image: torch.Tensor) -> MTUNetOutput:
        skips = []
        x = image
        for level, block in enumerate(self.encoder):
            if level:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        bottleneck = x
        for up, skip in zip(self.decoder, reversed(skips[:-1]), strict=True):
            x = up(x, skip)
        pooled = torch.cat([bottleneck.mean(dim=(2, 3)), x.mean(dim=(2, 3))], dim=1)
        logits = self.classifier(pooled)
        saliency = self.saliency(x)
        n, _, h, w = saliency.shape
        log_saliency = F.log_softmax(saliency.reshape(n, -1), dim=1).reshape(n, 1, h, w)
        return MTUNetOutput(logits, log_saliency)


@register_model("mtunet")
def mtunet(num_classes: int = 3, in_channels: int = 1, feature_size: int = 64, **kwargs) -> MTUNet:
    """MT-UNet (widths 64..1024 by default, about 34.6M parameters)."""
    return MTUNet(num_classes, in_channels, feature_size, **kwargs)
