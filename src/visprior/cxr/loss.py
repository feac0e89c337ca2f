"""The CXR networks' losses: GG-CAM's (below) and MT-UNet's (``multitask_loss``).

GG-CAM's loss: classification plus agreement of the true class's CAM with the gaze map.

    L = CE / s_c^2 + log(s_c + 1) + D / (2 s_d^2) + log(s_d + 1)
    D = mean over the CAM grid of (sigmoid(k * CAM_y) - G)^2

with s_c = exp(lg_s_c), s_d = exp(lg_s_d), k = exp(lg_k) trained with the network (they live
in its ``loss_weights``), CAM_y the map of each image's true class y and G its gaze map on the
CAM grid, in [0, 1]. The log(s + 1) terms keep the weights from growing without bound.

This is our reading of the method. The authors' released code passes the *label* through the
sigmoid and casts it to an integer, so it always compares class 0's map and ``lg_k`` never
gets a gradient; the form above is what the paper's description implies, and the tests check
that all three scalars learn and that the true class's map is the one compared.

Without gaze maps (``gaze=None``) the loss is the plain cross-entropy: the network is then an
ordinary CAM classifier.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from visprior.nets.ggcam import CAMOutput, GazeLossWeights
from visprior.nets.mtunet import MTUNetOutput, MultiTaskWeights

__all__ = ["GazeLossParts", "gaze_guided_loss", "multitask_loss"]


class GazeLossParts(NamedTuple):
    total: torch.Tensor
    classification: torch.Tensor  # cross-entropy, unweighted
    gaze: torch.Tensor  # D, unweighted (NaN when there was no gaze map)


def gaze_guided_loss(
    output: CAMOutput,
    target: torch.Tensor,
    weights: GazeLossWeights,
    gaze: torch.Tensor | None = None,
) -> GazeLossParts:
    """The GG-CAM loss of one batch.

    Args:
        output: the network's logits (N, K) and CAMs (N, K, h, w), e.g. a ``CAMOutput``.
        target: true classes (N,), integers.
        weights: the network's ``loss_weights``.
        gaze: gaze maps (N, h, w) or (N, 1, h, w) in [0, 1] on the CAM grid, or ``None``.

    Raises:
        ValueError: a gaze map whose grid differs from the CAMs'.
    """
    logits, cams = output
    classification = F.cross_entropy(logits.float(), target)
    if gaze is None:
        return GazeLossParts(classification, classification.detach(), torch.tensor(float("nan")))
    cams = cams.float()
    if gaze.ndim == 4:
        gaze = gaze[:, 0]
    if gaze.shape != (cams.shape[0], *cams.shape[2:]):
        raise ValueError(
            f"gaze maps of shape {tuple(gaze.shape)} do not match the CAM grid "
            f"{tuple(cams.shape[2:])} for a batch of {cams.shape[0]}"
        )
    true_class_cam = cams[torch.arange(len(target), device=cams.device), target]
    attention = torch.sigmoid(weights.lg_k.exp() * true_class_cam)
    disagreement = F.mse_loss(attention, gaze.to(attention.dtype))
    s_c, s_d = weights.lg_s_c.exp(), weights.lg_s_d.exp()
    total = (
        classification / s_c**2 + torch.log1p(s_c) + disagreement / (2 * s_d**2) + torch.log1p(s_d)
    )
    return GazeLossParts(total, classification.detach(), disagreement.detach())


def multitask_loss(
    output: MTUNetOutput,
    target: torch.Tensor,
    gaze: torch.Tensor,
    weights: MultiTaskWeights,
    tasks: str = "both",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """L = CE / s_c^2 + log(s_c + 1) + KL(G || P) / (2 s_s^2) + log(s_s + 1).

    ``tasks="classification"`` gives CE alone, ``"saliency"`` KL alone: the single-task
    baselines MT-UNet is compared with.

    Args:
        output: the network's logits and log saliency map (N, 1, H, W).
        target: classes (N,).
        gaze: gaze maps (N, H, W) or (N, 1, H, W), non-negative; each is scaled to sum 1 (G).
        weights: the network's ``loss_weights`` (s = exp(lg_s)).

    Returns:
        (total, cross-entropy, KL), the last two detached (KL is NaN for classification).

    Raises:
        ValueError: a gaze map of another size, or one that sums to 0 (no gaze to learn).
    """
    logits, log_saliency = output
    ce = F.cross_entropy(logits.float(), target)
    if tasks == "classification":  # no gaze needed
        return ce, ce.detach(), torch.tensor(float("nan"))
    if tasks not in ("both", "saliency"):
        raise ValueError(f"tasks must be 'both', 'classification' or 'saliency', got {tasks!r}")
    if gaze.numel() != log_saliency.numel():
        raise ValueError(
            f"gaze maps of shape {tuple(gaze.shape)} do not match the saliency map of shape "
            f"{tuple(log_saliency.shape)}"
        )
    gaze = gaze.reshape(log_saliency.shape).to(log_saliency.dtype)
    totals = gaze.sum(dim=(1, 2, 3), keepdim=True)
    if (totals <= 0).any():
        raise ValueError("a gaze map sums to 0: MT-UNet needs gaze for every training image")
    target_distribution = gaze / totals
    # KL(G || P) = sum G (log G - log P), with 0 log 0 = 0
    kl = torch.sum(torch.special.xlogy(target_distribution, target_distribution), dim=(1, 2, 3))
    kl = (kl - torch.sum(target_distribution * log_saliency, dim=(1, 2, 3))).mean()
    if tasks == "saliency":
        return kl, ce.detach(), kl.detach()
    s_c, s_s = weights.lg_s_c.exp(), weights.lg_s_s.exp()
    total = ce / s_c**2 + torch.log1p(s_c) + kl / (2 * s_s**2) + torch.log1p(s_s)
    return total, ce.detach(), kl.detach()
