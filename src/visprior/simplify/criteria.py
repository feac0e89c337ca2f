"""Cut a CNN to a given parameter count by one of five rules for which channels go.

The rules (``--criterion`` of ``visprior simplify shrink``):

* ``redundancy``: the kernel redundancy measure. Its redundant set goes first (the kernels that
  are repainted from the others at SSIM >= threshold), then the kept kernels in the order of
  their SSIM against the other kept ones, the most redundant first: the measure's own ranking,
  continued past its threshold. Channels across layers are compared by that SSIM, which means
  the same in every layer. Residual blocks the measure finds redundant become ``nn.Identity``
  while the network stays at or above the target.
* ``magnitude``: the L1 norm of each channel's weights, summed over the coupled layers
  (``tp.importance.MagnitudeImportance(p=1)``), each group's scores divided by their mean and
  ranked globally: torch-pruning's global pruning.
* ``taylor``: the first-order Taylor estimate ``|w * dL/dw|`` (``tp.importance.TaylorImportance``)
  on a few labelled batches of the training part, normalised and ranked like ``magnitude``.
* ``uniform``: one width ratio for every layer; within a layer, the smallest L1 norms go.
* ``random``: ``redundancy``'s per-layer counts, with channels drawn at random (seeded): the
  control for *which* channels the measure picks.

All five share the rest: torch-pruning's coupled groups (a ResNet stage's residual stream is
one group, cut together), each group keeping at least ``min_channels`` and losing at most
``max_cut`` of its channels in one cut, and the CAM head's rescaling. The cut size is found by
bisection on how many channels go, pruning a copy each time, so the parameter count reached is
the largest one at or under the target that the rule allows.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from visprior.nets.widths import set_module
from visprior.simplify.prune import (
    cut_allowance,
    group_votes,
    measured_layers,
    parameter_count,
    pruning_view,
    restore_cam_head,
)
from visprior.simplify.redundancy import RedundancyReport, check_supported

__all__ = ["CRITERIA", "CutToSize", "cut_to_size", "parameter_count", "taylor_gradients"]

CRITERIA = ("redundancy", "magnitude", "taylor", "uniform", "random")
_NEEDS_REPORT = ("redundancy", "random")


@dataclass
class _Group:
    root: str  # the root convolution's name in the pruning view
    size: int
    order: torch.Tensor  # channel positions, the first to go first
    allowed: int  # most channels this cut may take from the group
    importance: torch.Tensor  # per channel, lower goes first (global criteria)


@dataclass
class CutToSize:
    """What :func:`cut_to_size` did: the parameters before and after, what went."""

    parameters_before: int
    parameters_after: int
    blocks_removed: int
    channels_removed: int


def taylor_gradients(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 16
) -> None:
    """Accumulate the classification loss's gradients over ``images`` into ``model``'s
    ``.grad`` (eval mode: batch-norm statistics stay as they are)."""
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    for start in range(0, len(images), batch_size):
        output = model(images[start : start + batch_size])
        loss = F.cross_entropy(output.logits.float(), labels[start : start + batch_size])
        loss.backward()
    model.train(was_training)


def cut_to_size(
    model: nn.Module,
    criterion: str,
    target_parameters: int,
    example: torch.Tensor,
    *,
    report: RedundancyReport | None = None,
    min_channels: int = 4,
    max_cut: float = 0.5,
    seed: int = 0,
) -> CutToSize:
    """Cut ``model`` in place to at most ``target_parameters`` (or as far as ``max_cut`` and
    ``min_channels`` allow) by ``criterion``.

    Args:
        example: one input batch, for tracing the network.
        report: the redundancy measure of ``model`` (``redundancy`` and ``random``).
        seed: the ``random`` criterion's draw.

    ``taylor`` reads the gradients already in ``model`` (:func:`taylor_gradients`) and clears
    them.

    Raises:
        ValueError: an unknown criterion, a target under 1, a missing report or gradients.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    if target_parameters < 1:
        raise ValueError(f"target_parameters must be positive, got {target_parameters}")
    if not 0 < max_cut <= 1:
        raise ValueError(f"max_cut must be in (0, 1], got {max_cut}")
    if criterion in _NEEDS_REPORT and report is None:
        raise ValueError(f"criterion {criterion!r} needs the redundancy report of the network")
    check_supported(model)
    before = parameter_count(model)
    blocks = 0
    if criterion == "redundancy":
        blocks = _remove_redundant_blocks(model, report, target_parameters)
    if criterion == "taylor":
        _check_gradients(model)
    groups = _rank_groups(model, criterion, example, report, min_channels, max_cut, seed)
    if criterion == "taylor":
        model.zero_grad(set_to_none=True)
    global_order = _global_order(groups)
    pool = len(global_order) if criterion != "uniform" else sum(g.allowed for g in groups)

    def plan(level: int) -> dict[str, list[int]]:
        if criterion == "uniform":
            ratio = max_cut * level / pool if pool else 0.0
            counts = [min(g.allowed, int(ratio * g.size)) for g in groups]
        else:
            counts = torch.bincount(global_order[:level], minlength=len(groups)).tolist()
        return {
            g.root: sorted(g.order[:count].tolist())
            for g, count in zip(groups, counts, strict=True)
            if count
        }

    low, high = 0, pool  # find the fewest channels whose cut reaches the target
    if parameter_count(model) <= target_parameters:
        high = 0
    elif _size_after(model, plan(pool), example) > target_parameters:
        low = pool  # the target is out of this cut's reach: cut all that is allowed
    while low < high:
        middle = (low + high) // 2
        if _size_after(model, plan(middle), example) <= target_parameters:
            high = middle
        else:
            low = middle + 1
    chosen = plan(high)
    removed = _apply_plan(model, chosen, example)
    return CutToSize(before, parameter_count(model), blocks, removed)


def _check_gradients(model: nn.Module) -> None:
    if not any(m.weight.grad is not None for m in model.modules() if isinstance(m, nn.Conv2d)):
        raise ValueError(
            "criterion 'taylor' needs gradients in the network: call taylor_gradients first"
        )


def _remove_redundant_blocks(
    model: nn.Module, report: RedundancyReport, target_parameters: int
) -> int:
    """The measure's redundant residual blocks become identities, most similar first, while
    the network stays at or above the target."""
    modules = dict(model.named_modules())
    removed = 0
    blocks = sorted(
        (b for b in report.blocks if b.redundant and b.removable), key=lambda b: -b.similarity
    )
    for block in blocks:
        size = parameter_count(modules[block.name])
        if parameter_count(model) - size >= target_parameters:
            set_module(model, block.name, nn.Identity())
            removed += 1
    return removed


def _rank_groups(model, criterion, example, report, min_channels, max_cut, seed) -> list[_Group]:
    view, head = pruning_view(model)
    if criterion == "taylor" and head is not None:
        head.weight.grad = model.head.weight.grad.detach()[:, :, None, None].clone()
    names = {id(m): n for n, m in view.named_modules()}
    graph = tp.DependencyGraph().build_dependency(view, example_inputs=example)
    ignored = [head] if head is not None else []
    groups = list(graph.get_all_groups(ignored_layers=ignored, root_module_types=[nn.Conv2d]))
    measured = measured_layers(model, report) if report is not None else {}
    magnitude = tp.importance.MagnitudeImportance(p=1)
    taylor = tp.importance.TaylorImportance() if criterion == "taylor" else None
    generator = torch.Generator().manual_seed(seed)
    ranked = []
    for group in groups:
        root = group[0].dep.target.module
        size = len(group[0].idxs)
        allowed = cut_allowance(size, min_channels, max_cut)
        if criterion in _NEEDS_REPORT:
            votes = group_votes(graph, group, measured)
            # the redundant set first (SSIM is at most 1), then the measure's ranking
            importance = -votes.ranking - 2 * votes.majority.float()
            if votes.voters == 0:
                importance = torch.full((size,), math.inf)
        elif criterion == "taylor":
            importance = taylor(group)
        else:
            importance = magnitude(group)
        importance = torch.nan_to_num(importance.float(), nan=math.inf)
        if criterion == "random":
            order = torch.randperm(size, generator=generator)
        else:
            order = torch.argsort(importance, stable=True)
        ranked.append(_Group(names[id(root)], size, order, allowed, importance))
    return ranked


def _global_order(groups: Sequence[_Group]) -> torch.Tensor:
    """The group of each allowed channel, all groups' channels ranked together by importance
    (the least important first; at most ``allowed`` per group, never an infinite one)."""
    values, owners = [], []
    for index, group in enumerate(groups):
        ranked = torch.sort(group.importance, stable=True).values[: group.allowed]
        ranked = ranked[torch.isfinite(ranked)]
        values.append(ranked)
        owners.append(torch.full((len(ranked),), index, dtype=torch.long))
    if not values:
        return torch.zeros(0, dtype=torch.long)
    order = torch.argsort(torch.cat(values), stable=True)
    return torch.cat(owners)[order]


def _size_after(model: nn.Module, plan: dict[str, list[int]], example: torch.Tensor) -> int:
    trial = copy.deepcopy(model)
    _apply_plan(trial, plan, example)
    return parameter_count(trial)


def _apply_plan(model: nn.Module, plan: dict[str, list[int]], example: torch.Tensor) -> int:
    """Cut each planned root convolution's channels (and everything coupled to them)."""
    if not plan:
        return 0
    view, head = pruning_view(model)
    modules = dict(view.named_modules())
    graph = tp.DependencyGraph().build_dependency(view, example_inputs=example)
    removed = 0
    for root, channels in plan.items():
        pruning = graph.get_pruning_group(modules[root], tp.prune_conv_out_channels, channels)
        if graph.check_pruning_group(pruning):
            pruning.prune()
            removed += len(channels)
    if head is not None:
        restore_cam_head(model, head)
    return removed
