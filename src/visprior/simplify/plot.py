"""The redundancy report as a picture: redundancy by layer, and kernels' maps beside their
repaintings, so a person can see what "indistinguishable" means."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from visprior.fileio import atomic_path
from visprior.simplify.redundancy import RedundancyReport

__all__ = ["save_redundancy_png"]


def _example_layers(report: RedundancyReport, count: int) -> list:
    """The most redundant layer, the least, and some in between (those with examples)."""
    layers = sorted((layer for layer in report.layers if layer.examples), key=lambda x: x.share)
    if len(layers) <= count:
        return layers[::-1]
    picks = np.linspace(len(layers) - 1, 0, count).round().astype(int)
    return [layers[i] for i in dict.fromkeys(picks.tolist())]


def save_redundancy_png(
    report: RedundancyReport, path: str | os.PathLike, example_layers: int = 3
) -> Path:
    """Write the figure (atomically): the share of redundant kernels per layer (bars) with the
    residual blocks' similarities, then, for a few layers, the most and the least redundant
    kernel's map on one probe beside its repainting from the layer's other kernels."""
    examples = _example_layers(report, example_layers)
    rows = 1 + len(examples)
    figure = Figure(figsize=(12, 3.2 + 2.4 * len(examples)), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(rows, 4, height_ratios=[1.4] + [1] * len(examples))

    bars = figure.add_subplot(grid[0, :])
    shares = [layer.share for layer in report.layers]
    bars.bar(range(len(shares)), shares, color="tab:blue", label="redundant kernels (share)")
    bars.set_xticks(range(len(shares)))
    bars.set_xticklabels([layer.name for layer in report.layers], rotation=90, fontsize=6)
    bars.set_ylim(0, 1.05)
    bars.set_ylabel("share of kernels")
    bars.set_title(
        f"Kernel redundancy: share of kernels whose map a repainting from the layer's other "
        f"kernels matches at SSIM >= {report.threshold} ({report.probes} probes)\n"
        f"{report.redundant_parameters:.0%} of the convolution parameters are in redundant kernels",
        fontsize=10,
    )
    if report.blocks:
        positions = {layer.name: i for i, layer in enumerate(report.layers)}
        for block in report.blocks:
            first = [i for name, i in positions.items() if name.startswith(f"{block.name}.")]
            if first and block.removable:
                bars.plot(
                    np.mean(first),
                    block.similarity,
                    "o",
                    color="tab:red" if block.redundant else "tab:orange",
                )
        bars.plot([], [], "o", color="tab:orange", label="residual block: output-input SSIM")
    bars.axhline(report.threshold, color="grey", lw=0.8, ls="--")
    bars.legend(loc="upper left", fontsize=8)

    for row, layer in enumerate(examples, start=1):
        for column, which in enumerate(("most", "least")):
            example = layer.examples[which]
            for offset, key in enumerate(("map", "repainted")):
                axis = figure.add_subplot(grid[row, 2 * column + offset])
                axis.imshow(example[key], cmap="gray", vmin=0, vmax=1)
                axis.set_xticks([])
                axis.set_yticks([])
                if key == "map":
                    title = (
                        f"{layer.name} k{example['kernel']}\n{which} redundant "
                        f"(SSIM {example['score']:.2f})"
                    )
                else:
                    title = "repainted from\nthe layer's other kernels"
                axis.set_title(title, fontsize=8)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110, format="png")
    return Path(path)
