"""Label-map overlays: three orthogonal slices of a 3D image with labels coloured on top.

Drawing is done by matplotlib through its object API (``Figure`` + ``FigureCanvasAgg``), so
nothing touches pyplot's global state or the session's backend. Array axes are shown as stored
(``(X, Y, Z)``, e.g. RAS after reorientation): sagittal fixes X, coronal fixes Y, axial fixes Z,
and the slice's second axis points up.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from visprior.fileio import atomic_path

__all__ = ["save_overlay_png"]

VIEWS = (("sagittal", 0), ("coronal", 1), ("axial", 2))
ALPHA = 0.45
_AXIS_NAMES = "xyz"


def _label_maps(labels: np.ndarray | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    if isinstance(labels, Mapping):
        maps = {str(name): np.asarray(array) for name, array in labels.items()}
    else:
        maps = {"label": np.asarray(labels)}
    if not maps:
        raise ValueError("labels is an empty mapping: give at least one label map")
    return maps


def _check_inputs(
    image: np.ndarray, maps: Mapping[str, np.ndarray], spacing: Sequence[float]
) -> None:
    if image.ndim != 3:
        raise ValueError(f"expected a 3D image, got shape {image.shape}")
    for name, array in maps.items():
        if array.shape != image.shape:
            raise ValueError(
                f"label map {name!r} has shape {array.shape}, image has shape {image.shape}"
            )
    if len(spacing) != 3 or any(float(s) <= 0 for s in spacing):
        raise ValueError(f"spacing {tuple(spacing)} must hold 3 positive voxel sizes")


def _centre(maps: Mapping[str, np.ndarray], shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Centre of mass of the foreground of all maps together, else the volume centre."""
    foreground = np.zeros(shape, dtype=bool)
    for array in maps.values():
        foreground |= array > 0
    if not foreground.any():
        return tuple(n // 2 for n in shape)
    coords = np.nonzero(foreground)
    return tuple(int(round(float(c.mean()))) for c in coords)


def _check_slice_index(index: Sequence[int], shape: tuple[int, ...]) -> tuple[int, int, int]:
    index = tuple(int(i) for i in index)
    if len(index) != 3 or any(not 0 <= i < n for i, n in zip(index, shape, strict=False)):
        raise ValueError(f"slice_index {index} is outside the volume of shape {shape}")
    return index


def _window(image: np.ndarray) -> tuple[float, float]:
    """Robust grey window: the 1st and 99th percentiles of the finite voxels."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(finite, [1, 99]))
    return (low, high) if high > low else (low, low + 1.0)


def _class_colours(
    maps: Mapping[str, np.ndarray], class_names: Mapping[int, str] | None
) -> dict[int, tuple[float, float, float]]:
    """One qualitative colour per class value, stable for a given ``class_names``."""
    values = {int(v) for v in (class_names or {}) if int(v) > 0}
    for array in maps.values():
        values.update(int(v) for v in np.unique(array) if v > 0)
    cmap = colormaps["tab10" if len(values) <= 10 else "tab20"]
    return {v: tuple(cmap(i % cmap.N)[:3]) for i, v in enumerate(sorted(values))}


def _plane(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The slice through ``index`` along ``axis``, transposed so its second axis runs up."""
    return np.take(volume, index, axis=axis).T


def _aspect(axis: int, spacing: Sequence[float]) -> float:
    across, up = (a for a in range(3) if a != axis)
    return float(spacing[up]) / float(spacing[across])


def _rgba(plane: np.ndarray, colours: Mapping[int, tuple[float, float, float]]) -> np.ndarray:
    rgba = np.zeros((*plane.shape, 4))
    for value, colour in colours.items():
        rgba[plane == value] = (*colour, ALPHA)
    return rgba


def _draw_row(axes, image, labels, row_name, centre, window, colours, spacing) -> None:
    for ax, (view, axis) in zip(axes, VIEWS, strict=True):
        aspect = _aspect(axis, spacing)
        ax.imshow(
            _plane(image, axis, centre[axis]),
            cmap="gray",
            vmin=window[0],
            vmax=window[1],
            origin="lower",
            aspect=aspect,
            interpolation="nearest",
        )
        overlay = _rgba(_plane(labels, axis, centre[axis]), colours)
        ax.imshow(overlay, origin="lower", aspect=aspect, interpolation="nearest")
        ax.set_title(f"{view} ({_AXIS_NAMES[axis]}={centre[axis]})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].set_ylabel(row_name)


def _legend_handles(colours, class_names: Mapping[int, str] | None) -> list[Patch]:
    names = {int(k): str(v) for k, v in (class_names or {}).items()}
    return [
        Patch(facecolor=(*colour, ALPHA), edgecolor=colour, label=names.get(v, f"class {v}"))
        for v, colour in colours.items()
    ]


def save_overlay_png(
    image: np.ndarray,
    labels: np.ndarray | Mapping[str, np.ndarray],
    path: str | os.PathLike,
    class_names: Mapping[int, str] | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    slice_index: Sequence[int] | None = None,
    dpi: int = 100,
) -> Path:
    """Save sagittal, coronal and axial slices of ``image`` with label maps overlaid.

    Args:
        image: 3D intensity volume ``(X, Y, Z)``; shown in grey with a 1-99 percentile window.
        labels: one integer label map of the image's shape, or several as a name -> map
            mapping (e.g. ``{"label": ..., "prediction": ...}``), one figure row each.
        path: where the PNG goes (written atomically; parent folders are created).
        class_names: label value -> name for the legend; also fixes the colour of each class.
        spacing: voxel size along each axis, used for the panels' aspect ratios.
        slice_index: the ``(x, y, z)`` voxel the three slices pass through. Default: the
            centre of mass of the foreground of all maps, or the volume centre if there is none.
        dpi: resolution of the PNG.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: if the image is not 3D, a label map's shape differs from the image's, or
            ``spacing`` / ``slice_index`` do not fit the volume.
    """
    image = np.asarray(image, dtype=np.float64)
    maps = _label_maps(labels)
    _check_inputs(image, maps, spacing)
    if slice_index is None:
        centre = _centre(maps, image.shape)
    else:
        centre = _check_slice_index(slice_index, image.shape)
    colours = _class_colours(maps, class_names)
    window = _window(image)

    fig = Figure(figsize=(12, 4 * len(maps) + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(maps), 3, squeeze=False)
    for row, (name, labels_3d) in zip(axes, maps.items(), strict=True):
        _draw_row(row, image, labels_3d, name, centre, window, colours, spacing)
    handles = _legend_handles(colours, class_names)
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 8))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return Path(path)
