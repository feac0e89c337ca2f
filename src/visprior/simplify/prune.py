"""Make a network smaller by what the redundancy measure found, and rebuild such a network.

Two cuts, both from a :class:`~visprior.simplify.redundancy.RedundancyReport`:

* **blocks**: a residual block whose output is indistinguishable from its input becomes an
  ``nn.Identity`` (only blocks with an identity shortcut: the others change the shape);
* **kernels**: the redundant output channels of each convolution go, with everything that
  reads them. Channels that several convolutions write together (a ResNet stage's residual
  stream: every block's last convolution and the shortcut) go when most of those convolutions
  find them redundant. torch-pruning's dependency graph finds the coupled layers and cuts the
  tensors; the CAM head's channel weights are cut with them and rescaled so that the network's
  output is unchanged by the cut itself.

A pruned network is saved as the original architecture's name and keyword arguments plus a
``pruned`` mark; :func:`~visprior.nets.widths.fit_to_state_dict` rebuilds it from the saved
tensors' shapes.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from visprior.nets.ggcam import CAMClassifier, CAMHead
from visprior.nets.widths import fit_to_state_dict, set_module
from visprior.simplify.redundancy import LayerRedundancy, RedundancyReport, check_supported

__all__ = [
    "GroupVotes",
    "ModelCost",
    "cut_allowance",
    "fit_to_state_dict",
    "group_votes",
    "measured_layers",
    "model_cost",
    "paired_milliseconds",
    "parameter_count",
    "pruning_view",
    "prune_redundant",
    "reinitialise",
    "restore_cam_head",
]


@dataclass
class ModelCost:
    parameters: int
    flops: int  # multiply-adds count as two, for one image
    milliseconds: float  # median CPU time of one image's forward pass


def prune_redundant(
    model: nn.Module,
    report: RedundancyReport,
    example: torch.Tensor,
    min_channels: int = 4,
    remove_blocks: bool = True,
    max_cut: float = 1.0,
    stream_rule: bool = True,
) -> dict[str, int]:
    """Cut ``model`` in place by ``report``; return how many blocks and channels went, and how
    many flagged channels stayed: ``stream_vetoed`` (flagged by a minority of a residual
    stream's writers) and ``capped`` (flagged by a majority, over ``max_cut`` or
    ``min_channels``).

    Args:
        example: one input batch, for tracing the network.
        min_channels: every coupled group of channels keeps at least this many (its least
            redundant ones), so no layer disappears by channel cuts.
        max_cut: the largest share of a group's channels to cut at once (its most redundant
            ones): gentler steps for rounds of cutting and fine-tuning.
        stream_rule: a channel several convolutions write goes when most of them find it
            redundant; False: when any one does (for diagnosis).
    """
    if not 0 < max_cut <= 1:
        raise ValueError(f"max_cut must be in (0, 1], got {max_cut}")
    check_supported(model)
    removed_blocks = 0
    if remove_blocks:
        for block in report.blocks:
            if block.redundant and block.removable:
                set_module(model, block.name, nn.Identity())
                removed_blocks += 1

    measured = measured_layers(model, report)
    view, head = pruning_view(model)
    graph = tp.DependencyGraph().build_dependency(view, example_inputs=example)
    ignored = [head] if head is not None else []
    cut = 0
    stream_vetoed = capped = 0
    for group in list(graph.get_all_groups(ignored_layers=ignored, root_module_types=[nn.Conv2d])):
        votes = group_votes(graph, group, measured)
        chosen = _channels_to_cut(votes, len(group[0].idxs), min_channels, max_cut, stream_rule)
        stream_vetoed += int((votes.any & ~votes.majority).sum())
        capped += int(votes.majority.sum()) - len(chosen)
        if chosen:
            root = group[0].dep
            pruning = graph.get_pruning_group(root.target.module, root.handler, chosen)
            if graph.check_pruning_group(pruning):
                pruning.prune()
                cut += len(chosen)
    if head is not None:
        restore_cam_head(model, head)
    return {
        "blocks_removed": removed_blocks,
        "channels_removed": cut,
        "stream_vetoed": stream_vetoed,
        "capped": capped,
    }


def measured_layers(model: nn.Module, report: RedundancyReport) -> dict[int, LayerRedundancy]:
    """The report's layer of each measured convolution of ``model``, by module identity (so
    that any view sharing the modules finds them)."""
    names = {layer.name for layer in report.layers}
    return {
        id(module): report.layer(name)
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d) and name in names
    }


@dataclass
class GroupVotes:
    """The measure's verdict on the channels of one coupled group, from the measured
    convolutions that write them (its voters)."""

    voters: int
    any: torch.Tensor  # bool: some voter finds the channel redundant
    majority: torch.Tensor  # bool: most voters do (the residual-stream rule)
    scores: torch.Tensor  # mean score over the voters
    ranking: torch.Tensor  # mean cut order over the voters


def group_votes(graph, group, measured: dict[int, LayerRedundancy]) -> GroupVotes:
    size = len(group[0].idxs)
    votes = torch.zeros(size)
    scores = torch.zeros(size)
    ranking = torch.zeros(size)
    voters = 0
    for item in group:
        layer = measured.get(id(item.dep.target.module))
        if layer is None or not graph.is_out_channel_pruning_fn(item.dep.handler):
            continue
        if len(item.idxs) != size:
            continue
        index = torch.as_tensor(item.idxs, dtype=torch.long)
        votes += torch.as_tensor(layer.redundant, dtype=torch.float32)[index]
        scores += torch.as_tensor(layer.scores, dtype=torch.float32)[index]
        ranking += torch.as_tensor(layer.cut_order, dtype=torch.float32)[index]
        voters += 1
    scale = max(voters, 1)
    return GroupVotes(voters, votes > 0, votes > voters / 2, scores / scale, ranking / scale)


def _channels_to_cut(
    votes: GroupVotes, size: int, min_channels: int, max_cut: float, stream_rule: bool = True
) -> list[int]:
    """Root channel positions that most of the group's measured convolutions (or, without the
    stream rule, any of them) find redundant, the most redundant first, within ``max_cut`` of
    the group and leaving ``min_channels``."""
    if votes.voters == 0:
        return []
    flagged = torch.nonzero(votes.majority if stream_rule else votes.any).flatten().tolist()
    flagged.sort(key=lambda k: -float(votes.scores[k]))
    return sorted(flagged[: cut_allowance(size, min_channels, max_cut)])


def cut_allowance(size: int, min_channels: int, max_cut: float) -> int:
    """Most channels one cut may take from a group of ``size``: within ``max_cut`` of it, and
    leaving ``min_channels``."""
    return max(min(int(max_cut * size), size - min(min_channels, size)), 0)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def pruning_view(model: nn.Module) -> tuple[nn.Module, nn.Conv2d | None]:
    """What torch-pruning traces: the model itself, or for a CAM classifier its backbone with
    the CAM head as a 1x1 convolution (the head's einsum is not a layer torch-pruning knows)."""
    if not isinstance(model, CAMClassifier):
        return model, None
    weight = model.head.weight.detach()
    proxy = nn.Conv2d(weight.shape[1], weight.shape[0], 1, bias=False)
    proxy.weight.data.copy_(weight[:, :, None, None])
    return nn.Sequential(model.backbone, proxy), proxy


def restore_cam_head(model: nn.Module, proxy: nn.Conv2d) -> None:
    """The cut proxy's weights back into the CAM head. The head divides by its channel count;
    scaling the weights by new/old count keeps every CAM exactly what it was."""
    head = model.head
    channels = proxy.weight.shape[1]
    weight = proxy.weight.detach()[:, :, 0, 0] * (channels / head.in_channels)
    head.weight = nn.Parameter(weight.clone())
    head.in_channels = channels


def reinitialise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Fresh weights for every layer of ``model`` (in place), at its current widths: each
    layer's own default initialisation, torchvision's for the ResNet blocks."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for module in model.modules():
            if isinstance(module, CAMHead):
                nn.init.normal_(module.weight, std=module.in_channels**-0.5)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif hasattr(module, "reset_parameters"):
                module.reset_parameters()
    finally:
        torch.random.set_rng_state(generator_state)
    return model


@torch.no_grad()
def model_cost(model: nn.Module, example: torch.Tensor, repeats: int = 10) -> ModelCost:
    """Parameters, FLOPs of one image (torch's FLOP counter) and the median CPU time of one
    image's forward pass over ``repeats`` runs after a warm-up."""

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        model(example[:1])
    model.train(was_training)
    parameters = parameter_count(model)
    milliseconds = paired_milliseconds([model], example, repeats)[0]
    return ModelCost(parameters, int(counter.get_total_flops()), milliseconds)


@torch.no_grad()
def paired_milliseconds(
    models: list[nn.Module], example: torch.Tensor, repeats: int = 10
) -> list[float]:
    """Median milliseconds of one image's forward pass for each model, the models taking turns
    (so that a machine that slows down or speeds up meanwhile affects them alike)."""
    modes = [model.training for model in models]
    for model in models:
        model.eval()(example[:1])  # warm-up
    times: list[list[float]] = [[] for _ in models]
    for _ in range(repeats):
        for model, record in zip(models, times, strict=True):
            start = time.perf_counter()
            model(example[:1])
            record.append(time.perf_counter() - start)
    for model, mode in zip(models, modes, strict=True):
        model.train(mode)
    return [1000 * statistics.median(record) for record in times]
