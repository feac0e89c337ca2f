"""CAM classifiers for chest radiographs: GG-CAM's network (torchvision backbones + a CAM head).

The CAM head replaces global pooling and the fully connected layer: class k's activation map is
``CAM_k(h, w) = mean_c W[k, c] F_c(h, w)`` over the backbone's last feature map F, and its logit
is the map's spatial mean plus a bias. Classification runs through the maps themselves, so the
map the gaze loss shapes is the one the decision comes from.

The network also owns GG-CAM's three trainable loss scalars (``loss_weights``): they are
trained, saved and resumed with it, and ignored at inference.

Backbones are torchvision's ResNet18 / ResNet50 (2048-channel last map) and EfficientNetV2-S
(1280 channels in torchvision's version). A one-channel input is handled by a one-channel
first convolution: ImageNet weights loaded from a file have their RGB filters summed, which
is exactly the three-channel network fed the grey image three times, without the copies.

Example:
    >>> net = get_model("ggcam_resnet50", num_classes=3)
    >>> logits, cams = net(torch.rand(2, 1, 224, 224))  # (2, 3), (2, 3, 7, 7)
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
from torch import nn

from visprior.checkpoint_io import read_weights_only
from visprior.nets.registry import register_model

__all__ = ["CAMClassifier", "CAMHead", "CAMOutput", "GazeLossWeights", "load_backbone_weights"]

# ImageNet's RGB statistics averaged into one grey channel; images arrive in [0, 1].
GREY_MEAN, GREY_STD = 0.449, 0.226


class CAMOutput(NamedTuple):
    logits: torch.Tensor  # (N, classes)
    cams: torch.Tensor  # (N, classes, h, w), on the backbone's output grid


class CAMHead(nn.Module):
    """Class activation maps as a channel-mean projection; logits = spatial mean + bias."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_channels))
        self.bias = nn.Parameter(torch.zeros(num_classes))
        # the mean over channels divides by C: start the maps at unit scale
        nn.init.normal_(self.weight, std=in_channels**-0.5)
        self.in_channels = in_channels

    def forward(self, features: torch.Tensor) -> CAMOutput:
        cams = torch.einsum("kc,nchw->nkhw", self.weight, features) / self.in_channels
        logits = cams.mean(dim=(2, 3)) + self.bias
        return CAMOutput(logits, cams)


class GazeLossWeights(nn.Module):
    """GG-CAM's three trainable scalars, stored as logarithms.

    ``lg_s_c`` and ``lg_s_d`` weigh the classification and gaze terms (s = exp(lg_s));
    ``lg_k`` sharpens the CAM before its sigmoid (k = exp(lg_k)).
    """

    def __init__(self, lg_s_c: float = 0.0, lg_s_d: float = 0.0, lg_k: float = 0.0):
        super().__init__()
        self.lg_s_c = nn.Parameter(torch.tensor(float(lg_s_c)))
        self.lg_s_d = nn.Parameter(torch.tensor(float(lg_s_d)))
        self.lg_k = nn.Parameter(torch.tensor(float(lg_k)))


class CAMClassifier(nn.Module):
    """A backbone's last feature map, a :class:`CAMHead`, and GG-CAM's loss scalars.

    Args:
        backbone: maps (N, in_channels, H, W) to (N, feature_channels, h, w).
        feature_channels: channels of the backbone's output.
        num_classes: classes to score.
        normalize: subtract / divide the grey ImageNet statistics inside the network, so
            callers pass images in [0, 1].
        loss_init: initial (lg_s_c, lg_s_d, lg_k).
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_channels: int,
        num_classes: int,
        normalize: bool = True,
        loss_init: tuple[float, float, float] = (0.0, 0.0, 0.0),
    ):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.backbone = backbone
        self.head = CAMHead(feature_channels, num_classes)
        self.loss_weights = GazeLossWeights(*loss_init)
        self.normalize = normalize
        self.num_classes = num_classes

    def forward(self, image: torch.Tensor) -> CAMOutput:
        if self.normalize:
            image = (image - GREY_MEAN) / GREY_STD
        return self.head(self.backbone(image))


def _first_conv_for(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    if conv.in_channels == in_channels:
        return conv
    return nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        conv.bias is not None,
    )


def _resnet_backbone(depth: int, in_channels: int, output_stride: int) -> tuple[nn.Module, int]:
    """torchvision's ResNet body. ``output_stride=16`` gives CAMs twice as fine from the same
    weights: the last stage is dilated (ResNet50) or keeps its input's stride (ResNet18, whose
    blocks cannot dilate), at more compute."""
    import torchvision  # here, so that the 3D networks build where torchvision is absent

    if output_stride not in (16, 32):
        raise ValueError(f"output_stride must be 32 or 16, got {output_stride}")
    builder = getattr(torchvision.models, f"resnet{depth}")
    if output_stride == 32:
        net = builder(weights=None)
    elif depth >= 50:
        net = builder(weights=None, replace_stride_with_dilation=[False, False, True])
    else:
        net = builder(weights=None)
        first = net.layer4[0]
        first.conv1.stride = (1, 1)
        first.downsample[0].stride = (1, 1)
    net.conv1 = _first_conv_for(net.conv1, in_channels)
    body = nn.Sequential(
        net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4
    )
    return body, net.fc.in_features


def _efficientnet_backbone(in_channels: int) -> tuple[nn.Module, int]:
    import torchvision

    net = torchvision.models.efficientnet_v2_s(weights=None)
    stem = net.features[0]
    stem[0] = _first_conv_for(stem[0], in_channels)
    return net.features, net.classifier[-1].in_features


def load_backbone_weights(model: CAMClassifier, path: str | os.PathLike) -> list[str]:
    """Load a torchvision ImageNet weights file (``resnet50-*.pth`` etc.) into ``model``.

    Read with ``weights_only=True``. The classifier (``fc.*`` / ``classifier.*``) is left out,
    and a three-channel first convolution is summed over its input channels when the model
    takes one channel. Returns the backbone parameter names that the file did not provide.

    Raises:
        ValueError: the file holds no tensor that fits the backbone (named in the message).
    """
    state = read_weights_only(path)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    target = model.backbone.state_dict()
    renamed = _torchvision_to_backbone_keys(state, target)
    fitting = {}
    for key, tensor in renamed.items():
        wanted = target[key].shape
        if tensor.ndim == 4 and tensor.shape[1] == 3 and wanted[1] == 1:
            tensor = tensor.sum(dim=1, keepdim=True)
        if tensor.shape == wanted:
            fitting[key] = tensor
    if not fitting:
        raise ValueError(f"{path}: no tensor in this file fits the backbone")
    model.backbone.load_state_dict(fitting, strict=False)
    return sorted(set(target) - set(fitting))


def _torchvision_to_backbone_keys(state: dict, target: dict) -> dict:
    """torchvision names (``layer1.0.conv1.weight``, ``features.0.0.weight``) -> ours."""
    resnet_order = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    renamed = {}
    for key, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            continue
        head, _, rest = key.partition(".")
        if head == "features":
            candidate = rest
        elif head in resnet_order:
            candidate = f"{resnet_order.index(head)}.{rest}"
        else:
            continue
        if candidate in target:
            renamed[candidate] = tensor
    return renamed


def _build(backbone: tuple[nn.Module, int], num_classes: int, weights, **kwargs) -> CAMClassifier:
    model = CAMClassifier(backbone[0], backbone[1], num_classes, **kwargs)
    if weights is not None:
        load_backbone_weights(model, weights)
    return model


@register_model("ggcam_resnet18")
def ggcam_resnet18(
    num_classes: int = 3,
    in_channels: int = 1,
    weights: str | None = None,
    output_stride: int = 32,
    **kwargs,
) -> CAMClassifier:
    """ResNet18 + CAM head (512-channel maps): the small backbone for CPU experiments."""
    backbone = _resnet_backbone(18, in_channels, output_stride)
    return _build(backbone, num_classes, weights, **kwargs)


@register_model("ggcam_resnet50")
def ggcam_resnet50(
    num_classes: int = 3,
    in_channels: int = 1,
    weights: str | None = None,
    output_stride: int = 32,
    **kwargs,
) -> CAMClassifier:
    """ResNet50 + CAM head (2048-channel maps), GG-CAM's main network."""
    backbone = _resnet_backbone(50, in_channels, output_stride)
    return _build(backbone, num_classes, weights, **kwargs)


@register_model("ggcam_efficientnet_v2_s")
def ggcam_efficientnet_v2_s(
    num_classes: int = 3, in_channels: int = 1, weights: str | None = None, **kwargs
) -> CAMClassifier:
    """EfficientNetV2-S + CAM head (torchvision's features: 1280-channel maps)."""
    return _build(_efficientnet_backbone(in_channels), num_classes, weights, **kwargs)
