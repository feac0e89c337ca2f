"""Training curves: every numeric column of a metrics log plotted against the iteration.

The log is a CSV file (or its rows as dicts) in which a metric may only appear every few
iterations, e.g. the training loss every step and the validation Dice every 500. Plotting is
done by matplotlib's object API (``Figure`` + ``FigureCanvasAgg``): no pyplot global state.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from visprior.fileio import atomic_path

__all__ = ["load_curves", "save_curves_png"]

Curves = dict[str, tuple[np.ndarray, np.ndarray]]


class _NotNumeric(Exception):
    pass


def _number(value: Any) -> float | None:
    """``None`` for an empty cell, the value as a float, or ``_NotNumeric``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise _NotNumeric
    try:
        return float(value)
    except (TypeError, ValueError):
        raise _NotNumeric from None


def _read_rows(source: str | os.PathLike | Sequence[Mapping[str, Any]]) -> list[Mapping]:
    if isinstance(source, (str, os.PathLike)):
        with open(source, newline="") as handle:
            return list(csv.DictReader(handle))
    return list(source)


def _columns(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Column names in order of first appearance."""
    return list(dict.fromkeys(key for row in rows for key in row))


def _column(rows: Sequence[Mapping], name: str) -> list[float | None] | None:
    """The column as floats (``None`` where empty), or ``None`` if any cell is not a number."""
    try:
        return [_number(row.get(name)) for row in rows]
    except _NotNumeric:
        return None


def load_curves(
    source: str | os.PathLike | Sequence[Mapping[str, Any]], x: str = "iteration"
) -> Curves:
    """Read a metrics log into ``{metric: (x values, metric values)}``.

    Rows without an ``x`` value are dropped; each metric keeps only the rows where it has a
    finite value, so sparse columns (logged every N iterations) come out short, not padded.
    Columns holding any non-numeric cell (e.g. a phase name) are left out.

    Args:
        source: path of a CSV file with a header, or the rows as dicts.
        x: name of the column to plot against.

    Raises:
        ValueError: if no row has an ``x`` column or it holds non-numbers.
    """
    rows = _read_rows(source)
    columns = _columns(rows)
    if x not in columns:
        raise ValueError(f"no {x!r} column in the log; columns are {columns}")
    xs = _column(rows, x)
    if xs is None:
        raise ValueError(f"column {x!r} holds values that are not numbers")
    curves: Curves = {}
    for name in columns:
        values = _column(rows, name) if name != x else None
        if values is None:
            continue
        points = [
            (xv, yv)
            for xv, yv in zip(xs, values, strict=True)
            if xv is not None and yv is not None and math.isfinite(yv)
        ]
        if points:
            points.sort(key=lambda point: point[0])
            curves[name] = (np.array([p[0] for p in points]), np.array([p[1] for p in points]))
    return curves


def _is_rate(name: str) -> bool:
    return name == "lr" or name.endswith(("_lr", "learning_rate")) or name.startswith("lr_")


def _plot(ax, name: str, xs: np.ndarray, ys: np.ndarray, x: str) -> None:
    ax.plot(xs, ys, marker="o" if len(xs) <= 50 else None, markersize=3, linewidth=1.2)
    if _is_rate(name) and np.all(ys > 0):
        ax.set_yscale("log")
    ax.set_title(name, fontsize=10)
    ax.set_xlabel(x)
    ax.grid(alpha=0.3)


def save_curves_png(
    source: str | os.PathLike | Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    x: str = "iteration",
    dpi: int = 100,
) -> Path:
    """Plot every numeric column of a metrics log against ``x``, one subplot per metric.

    Args:
        source: path of a CSV file with a header, or the rows as dicts.
        path: where the PNG goes (written atomically; parent folders are created).
        x: name of the column to plot against.
        dpi: resolution of the PNG.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: if there is no usable ``x`` column or no numeric metric to plot.
    """
    curves = load_curves(source, x)
    if not curves:
        raise ValueError(f"no numeric column with values to plot against {x!r}")
    ncols = min(3, len(curves))
    nrows = math.ceil(len(curves) / ncols)
    fig = Figure(figsize=(4.5 * ncols, 3.2 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (name, (xs, ys)) in zip(axes, curves.items(), strict=False):
        _plot(ax, name, xs, ys, x)
    for ax in axes[len(curves) :]:
        ax.set_visible(False)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return Path(path)
