"""How redundant each convolution of a trained 2-D CNN is, judged by perceived image differences.

The definition (visprior's; the paper publishes only its abstract):

Run the network on a set of probe images and look at the picture each kernel paints, its
response map, scaled to [0, 1] per image. A kernel is **redundant** when that picture can be
repainted from the pictures of the layer's other kernels so well that a person could not tell
the two apart: the structural similarity (SSIM, window 7 or the map's side, Gaussian sigma 1.5)
between the kernel's map and its repainting is at least ``threshold`` (0.95 by default). The
repainting is the best linear mix of the other kernels' maps (least squares, with a small ridge,
fitted on half of the probe images and judged on the other half, so that a mix that only
memorises the probes does not count). A duplicated kernel is repainted by its twin, a scaled
one by its original, a zeroed or constant kernel by nothing at all: all three are redundant.

Each kernel's **score** is that SSIM against all the layer's other kernels (1 for a kernel whose
response never changes). Two copies of one kernel repaint each other, so the layer's
**redundant set** is found one kernel at a time: the most redundant goes first, the others are
judged again without it, and so on until no remaining kernel reaches the threshold. The
**layer's redundancy** is the share of its kernels in that set: the part of the layer that
could go without a visible change in what it hands on.

A **residual block** (torchvision's BasicBlock / Bottleneck with an identity shortcut) is
redundant when its output map is perceptually indistinguishable from its input (mean SSIM
over channels and probes at least ``threshold``): the block barely changes the picture.

Everything is deterministic: the probes are used in their given order (even positions fit the
repainting, odd ones judge it), and no random draw is made.

Example:
    >>> report = measure_redundancy(model, probes)   # probes: (N, 1, H, W) in [0, 1]
    >>> print(report.table())
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from monai.metrics.regression import compute_ssim_and_cs
from torch import nn
from torchvision.ops import StochasticDepth

from visprior.nets.ggcam import CAMHead, GazeLossWeights
from visprior.nets.widths import residual_blocks

__all__ = [
    "BlockRedundancy",
    "LayerRedundancy",
    "RedundancyReport",
    "UnsupportedNetworkError",
    "check_supported",
    "map_ssim",
    "measure_redundancy",
    "residual_blocks",
]

DEFAULT_THRESHOLD = 0.95
RIDGE = 1e-2  # relative to unit-variance responses: keeps the repainting from memorising
SSIM_WINDOW, SSIM_SIGMA = 7, 1.5


class UnsupportedNetworkError(ValueError):
    """A network with layers the redundancy measure or the simplifier cannot handle."""


_SUPPORTED_LEAF_TYPES = (
    nn.Conv2d,
    nn.BatchNorm2d,
    nn.Linear,
    nn.ReLU,
    nn.ReLU6,
    nn.SiLU,
    nn.GELU,
    nn.Sigmoid,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Dropout,
    nn.Identity,
    nn.Flatten,
    StochasticDepth,
    CAMHead,
    GazeLossWeights,
)


def check_supported(model: nn.Module, source: str = "network") -> None:
    """Raise :class:`UnsupportedNetworkError` naming every layer type outside 2-D CNNs.

    Supported: 2-D convolutions, batch norm, linear layers, the usual activations, pooling,
    dropout, and visprior's CAM head; containers of them (torchvision's ResNets and
    EfficientNets, GG-CAM's classifiers).
    """
    allowed = _SUPPORTED_LEAF_TYPES
    unknown = sorted(
        {
            type(module).__name__
            for module in model.modules()
            if not any(True for _ in module.children())
            and not isinstance(module, allowed)
            and (type(module) is not nn.Sequential)
        }
    )
    if unknown:
        raise UnsupportedNetworkError(
            f"{source}: the redundancy measure handles 2-D CNNs (Conv2d, BatchNorm2d, Linear, "
            f"activations, pooling); it cannot handle these layer types: {', '.join(unknown)}"
        )
    if not any(isinstance(module, nn.Conv2d) for module in model.modules()):
        raise UnsupportedNetworkError(f"{source}: no Conv2d layer to measure")


@dataclass
class LayerRedundancy:
    """One convolution's kernels: ``scores[k]`` is kernel k's SSIM against its repainting from
    the others (1 when its response is constant); ``redundant[k]`` marks the redundant set."""

    name: str
    scores: np.ndarray
    redundant: np.ndarray
    constant: np.ndarray
    parameters: int
    map_size: tuple[int, int]
    # the order in which the measure would cut, for cuts past the threshold: a redundant
    # kernel's score when it went, a kept kernel's score against the other kept ones
    ranking: np.ndarray | None = None
    # one judging probe's map of the most and least redundant kernels, and their repaintings
    examples: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def kernels(self) -> int:
        return len(self.scores)

    @property
    def share(self) -> float:
        return float(self.redundant.mean()) if len(self.redundant) else 0.0

    @property
    def cut_order(self) -> np.ndarray:
        """Per kernel, how redundant it is for a cut (higher goes first): ``ranking``, or the
        plain scores where no ranking was measured."""
        return self.scores if self.ranking is None else self.ranking


@dataclass
class BlockRedundancy:
    """A residual block: ``similarity`` is the mean SSIM of its output to its input (only for
    blocks with an identity shortcut, the ones that can go)."""

    name: str
    similarity: float
    removable: bool
    redundant: bool
    parameters: int


@dataclass
class RedundancyReport:
    layers: list[LayerRedundancy]
    blocks: list[BlockRedundancy]
    threshold: float
    probes: int

    def layer(self, name: str) -> LayerRedundancy:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no measured layer named {name!r}")

    @property
    def redundant_parameters(self) -> float:
        """Share of the convolutions' parameters that sit in redundant kernels."""
        total = sum(layer.parameters for layer in self.layers)
        redundant = sum(layer.parameters * layer.share for layer in self.layers)
        return redundant / total if total else 0.0

    def table(self) -> str:
        """The per-layer (and per-block) table ``visprior simplify measure`` prints."""
        width = max([len(layer.name) for layer in self.layers] + [5])
        lines = [
            f"{'layer':<{width}}  kernels  redundant  share  median score  parameters  map",
        ]
        for layer in self.layers:
            lines.append(
                f"{layer.name:<{width}}  {layer.kernels:7d}  {int(layer.redundant.sum()):9d}  "
                f"{layer.share:5.2f}  {float(np.median(layer.scores)):12.3f}  "
                f"{layer.parameters:10d}  {layer.map_size[0]}x{layer.map_size[1]}"
            )
        if self.blocks:
            lines += ["", f"{'residual block':<{width}}  similarity  redundant"]
            for block in self.blocks:
                similarity = f"{block.similarity:10.3f}" if block.removable else "  (shortcut)"
                verdict = "yes" if block.redundant else "no"
                lines.append(f"{block.name:<{width}}  {similarity}  {verdict}")
        lines += [
            "",
            f"{self.probes} probes, threshold SSIM {self.threshold}: "
            f"{self.redundant_parameters:.1%} of the convolution parameters are in redundant "
            f"kernels; {sum(b.redundant for b in self.blocks)} of {len(self.blocks)} blocks "
            "are redundant",
        ]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "probes": self.probes,
            "redundant_parameter_share": self.redundant_parameters,
            "layers": [
                {
                    "name": layer.name,
                    "kernels": layer.kernels,
                    "redundant": int(layer.redundant.sum()),
                    "share": layer.share,
                    "parameters": layer.parameters,
                    "scores": [round(float(s), 5) for s in layer.scores],
                    "ranking": [round(float(s), 5) for s in layer.cut_order],
                    "redundant_kernels": np.flatnonzero(layer.redundant).tolist(),
                }
                for layer in self.layers
            ],
            "blocks": [vars(block) for block in self.blocks],
        }


def map_ssim(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of each pair of (M, H, W) maps in [0, 1] -> (M,).

    The window is 7 pixels, or the map's smaller side (made odd) on small maps; Gaussian
    weights with sigma 1.5 (MONAI's implementation, data range 1).
    """
    side = min(first.shape[-2:])
    window = min(SSIM_WINDOW, side if side % 2 else side - 1)
    ssim, _ = compute_ssim_and_cs(
        first[:, None].float(),
        second[:, None].float(),
        spatial_dims=2,
        kernel_size=(window, window),
        kernel_sigma=(SSIM_SIGMA, SSIM_SIGMA),
        data_range=1.0,
    )
    return ssim.mean(dim=(1, 2, 3))


def _unit_range(maps: torch.Tensor) -> torch.Tensor:
    """Each (..., H, W) map scaled to [0, 1]; a flat map becomes 0."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - low
    return torch.where(span > 1e-12, (maps - low) / span.clamp_min(1e-12), torch.zeros_like(maps))


@torch.no_grad()
def measure_redundancy(
    model: nn.Module,
    probes: torch.Tensor,
    threshold: float = DEFAULT_THRESHOLD,
    layers: Iterable[str] | None = None,
    batch_size: int = 16,
    memory_budget_mb: float = 1024.0,
) -> RedundancyReport:
    """Measure every ``nn.Conv2d`` (or the named ``layers``) and residual block of ``model``.

    Args:
        model: a trained 2-D CNN (run in eval mode; its mode is restored).
        probes: (N, C, H, W) images as the network takes them, N >= 4.
        threshold: SSIM at or above which two maps are indistinguishable.
        layers: names of the convolutions to measure; default all.
        batch_size: probes per forward pass.
        memory_budget_mb: responses kept at once; larger networks take more passes.

    Raises:
        UnsupportedNetworkError: layers outside 2-D CNNs (named).
        ValueError: fewer than 4 probes, or a name in ``layers`` that is not a Conv2d.
    """
    check_supported(model)
    if probes.ndim != 4 or len(probes) < 4:
        raise ValueError(f"probes must be (N, C, H, W) with N >= 4, got {tuple(probes.shape)}")
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    convolutions = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    names = list(convolutions) if layers is None else list(layers)
    unknown = [n for n in names if n not in convolutions]
    if unknown:
        raise ValueError(f"not Conv2d layers of this network: {', '.join(unknown)}")

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        blocks = _measure_blocks(model, probes, threshold, batch_size, device)
        measured = []
        for chunk in _chunks_within_budget(model, convolutions, names, probes, memory_budget_mb):
            responses = _responses(model, {n: convolutions[n] for n in chunk}, probes, batch_size)
            for name in chunk:
                measured.append(
                    _measure_layer(name, convolutions[name], responses.pop(name), threshold)
                )
    finally:
        model.train(was_training)
    return RedundancyReport(measured, blocks, threshold, len(probes))


def _forward(model: nn.Module, probes: torch.Tensor, batch_size: int, device) -> None:
    for start in range(0, len(probes), batch_size):
        model(probes[start : start + batch_size].to(device))


def _responses(
    model: nn.Module, modules: dict[str, nn.Module], probes: torch.Tensor, batch_size: int
) -> dict[str, torch.Tensor]:
    """Each module's output over all probes, (N, C, H, W) float32 on the CPU."""
    collected: dict[str, list[torch.Tensor]] = {name: [] for name in modules}
    handles = [
        module.register_forward_hook(
            lambda _m, _i, output, name=name: collected[name].append(output.float().cpu())
        )
        for name, module in modules.items()
    ]
    try:
        _forward(model, probes, batch_size, next(model.parameters()).device)
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.cat(parts) for name, parts in collected.items()}


def _chunks_within_budget(model, convolutions, names, probes, budget_mb) -> list[list[str]]:
    """Groups of layers whose responses to all probes fit the memory budget together."""
    sizes = {
        n: t[0].numel() * 4 * len(probes)
        for n, t in _responses(model, {n: convolutions[n] for n in names}, probes[:1], 1).items()
    }
    chunks, current, used = [], [], 0.0
    for name in names:
        if current and used + sizes[name] > budget_mb * 2**20:
            chunks.append(current)
            current, used = [], 0.0
        current.append(name)
        used += sizes[name]
    return chunks + ([current] if current else [])


def _measure_layer(
    name: str, conv: nn.Conv2d, responses: torch.Tensor, threshold: float
) -> LayerRedundancy:
    count, channels, height, width = responses.shape
    flat = responses.permute(1, 0, 2, 3).reshape(channels, -1).double()
    span = flat.amax(dim=1) - flat.amin(dim=1)
    constant = (span <= 1e-6 * float(span.max().clamp_min(1e-12))).numpy()
    scores = np.ones(channels)
    redundant = constant.copy()
    live = np.flatnonzero(~constant)
    examples: dict[str, Any] = {}
    if len(live) == 1:
        scores[live] = 0.0  # nothing else to repaint it from
    elif len(live) >= 2:
        judged = _Repainter(responses[:, live], threshold)
        scores[live] = judged.initial_scores
        examples = judged.examples(live)
        gone, at_removal = judged.redundant_set()
        redundant[live[gone]] = True
    ranking = scores.copy()
    if len(live) >= 2:
        ranking[live[gone]] = at_removal
        kept = np.setdiff1d(np.arange(len(live)), gone)
        if len(kept) >= 2:
            ranking[live[kept]] = judged.scores(kept)
        elif len(kept) == 1:
            ranking[live[kept]] = 0.0
    parameters = sum(p.numel() for p in conv.parameters())
    return LayerRedundancy(
        name, scores, redundant, constant, parameters, (height, width), ranking, examples
    )


class _Repainter:
    """Least-squares repainting of each kernel's map from the others, judged by SSIM.

    Responses are standardised per kernel on the fitting probes (even positions); the ridge
    regression of kernel i on the kept others has coefficients -P[i, j] / P[i, i], with P the
    inverse of the regularised correlation matrix of the kept kernels. Removing kernels from
    the kept set is a low-rank update of P (its Schur complement), so the greedy pass costs one
    matrix inverse plus an update per batch of removals.
    """

    def __init__(self, responses: torch.Tensor, threshold: float):
        count, channels, height, width = responses.shape
        self.threshold, self.shape = threshold, (height, width)
        fitting, judging = responses[0::2], responses[1::2]
        fit = fitting.permute(0, 2, 3, 1).reshape(-1, channels).double()
        self.mean, self.std = fit.mean(0), fit.std(0).clamp_min(1e-12)
        standard = (fit - self.mean) / self.std
        correlation = standard.T @ standard / len(standard)
        correlation += RIDGE * torch.eye(channels, dtype=torch.float64)
        self.precision = torch.linalg.inv(correlation)
        self.judging_count = len(judging)
        judge = judging.permute(0, 2, 3, 1).reshape(-1, channels).double()
        self.judging_all = ((judge - self.mean) / self.std).float()
        self.judging_maps = _unit_range(judging.permute(1, 0, 2, 3))  # (C, n, H, W)
        # the precision matrix covers `members`; removed members keep zero rows until the
        # matrix is compacted, which keeps each update's cost to the kept kernels
        self.members = torch.arange(channels)
        self.position = torch.arange(channels)
        self.judging_standard = self.judging_all
        self.initial_scores = self.scores(np.arange(channels))

    def repaint(self, kernels: np.ndarray, columns: torch.Tensor | None = None) -> torch.Tensor:
        """Repaintings of ``kernels`` from the kept others on the judging probes, (k, n, H, W)
        in [0, 1]. ``columns``: the kernels' precision columns, if not the current ones."""
        index = torch.as_tensor(kernels, dtype=torch.long)
        at = self.position[index]
        if columns is None:
            columns = self.precision[:, at]
        own = torch.arange(len(index))
        coefficients = -columns / columns[at, own]
        coefficients[at, own] = 0.0
        standard = self.judging_standard @ coefficients.float()  # (pixels, k)
        raw = standard * self.std[index].float() + self.mean[index].float()
        maps = raw.T.reshape(len(index), self.judging_count, *self.shape)
        return _unit_range(maps)

    def scores(
        self, kernels: np.ndarray, columns: torch.Tensor | None = None, chunk: int = 128
    ) -> np.ndarray:
        result = []
        for start in range(0, len(kernels), chunk):
            part = kernels[start : start + chunk]
            part_columns = None if columns is None else columns[:, start : start + chunk]
            painted = self.repaint(part, part_columns)
            original = self.judging_maps[torch.as_tensor(part, dtype=torch.long)]
            ssim = map_ssim(painted.flatten(0, 1), original.flatten(0, 1))
            result.append(ssim.reshape(len(part), -1).mean(1).double().numpy())
        return np.concatenate(result) if result else np.zeros(0)

    def redundant_set(self, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """The redundant kernels (sorted) and the score each had when it went.

        Greedy removal, most redundant first: each candidate (initial score at or above the
        threshold, best first) is judged again against the kernels still kept, and goes if it
        still reaches the threshold. Candidates are taken a batch at a time: within a batch
        only the batch's rows of P are updated after each removal, and the whole matrix once
        at the end (one matrix product instead of a rank-one pass per kernel)."""
        order = np.argsort(-self.initial_scores, kind="stable")
        candidates = [int(k) for k in order if self.initial_scores[k] >= self.threshold]
        removed: list[int] = []
        at_removal: list[float] = []
        for start in range(0, len(candidates), batch):
            group = candidates[start : start + batch]
            at = self.position[torch.as_tensor(group)]
            rows = self.precision[at].clone()  # P is symmetric: these are also its columns
            accepted = []
            for i, kernel in enumerate(group):
                score = self.scores(np.array([kernel]), rows[i][:, None])[0]
                if score >= self.threshold:
                    accepted.append(i)
                    at_removal.append(float(score))
                    pivot = rows[:, at[i]].clone()
                    rows -= torch.outer(pivot, rows[i]) / rows[i, at[i]]
            if accepted:
                self.remove(at[accepted])
                removed += [group[i] for i in accepted]
        order = np.argsort(removed)
        return np.array(removed, dtype=np.int64)[order], np.array(at_removal)[order]

    def remove(self, at: torch.Tensor) -> None:
        """Drop the kernels at precision positions ``at``: P <- its Schur complement."""
        block = self.precision[at][:, at]
        across = self.precision[:, at]
        self.precision -= across @ torch.linalg.solve(block, across.T)
        self.precision[at, :] = 0.0
        self.precision[:, at] = 0.0
        self.position[self.members[at]] = -1
        kept = self.position[self.members] >= 0
        if kept.sum() < 0.75 * len(self.members):
            self.precision = self.precision[kept][:, kept].contiguous()
            self.members = self.members[kept]
            self.position[self.members] = torch.arange(len(self.members))
            self.judging_standard = self.judging_all[:, self.members].contiguous()

    def examples(self, live: np.ndarray) -> dict[str, Any]:
        """The first judging probe's map and full repainting of the most and least redundant
        kernels (numbered in the whole layer), repainted from all the others."""
        order = np.argsort(self.initial_scores)
        chosen = {"most": int(order[-1]), "least": int(order[0])}
        painted = self.repaint(np.array(list(chosen.values())))
        return {
            which: {
                "kernel": int(live[k]),
                "score": float(self.initial_scores[k]),
                "map": self.judging_maps[k, 0].numpy(),
                "repainted": painted[i, 0].numpy(),
            }
            for i, (which, k) in enumerate(chosen.items())
        }


def _measure_blocks(model, probes, threshold, batch_size, device) -> list[BlockRedundancy]:
    blocks = residual_blocks(model)
    sums = {name: [0.0, 0] for name, _ in blocks}
    removable = {}

    def hook(name):
        def record(module, inputs, output):
            source = inputs[0]
            removable[name] = getattr(module, "downsample", None) is None and (
                source.shape == output.shape
            )
            if removable[name]:
                pairs = (_unit_range(source.float().cpu()), _unit_range(output.float().cpu()))
                ssim = map_ssim(pairs[0].flatten(0, 1), pairs[1].flatten(0, 1))
                sums[name][0] += float(ssim.sum())
                sums[name][1] += len(ssim)

        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in blocks]
    try:
        _forward(model, probes, batch_size, device)
    finally:
        for handle in handles:
            handle.remove()
    result = []
    for name, module in blocks:
        total, count = sums[name]
        similarity = total / count if count else float("nan")
        can_go = removable.get(name, False)
        result.append(
            BlockRedundancy(
                name,
                similarity,
                can_go,
                bool(can_go and similarity >= threshold),
                sum(p.numel() for p in module.parameters()),
            )
        )
    return result
