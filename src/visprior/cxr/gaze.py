"""Gaze heatmaps: where a radiologist looked, as a map in [0, 1] on any grid.

Fixations (pixel coordinates on the original image, x = column, y = row) are accumulated on
the image grid, weighted by their durations when known, blurred with a Gaussian of ``sigma``
pixels, resampled to the requested grid by area averaging and scaled so the peak is 1. The
authors of GG-CAM blurred with a 501-pixel kernel at full resolution: a Gaussian whose kernel
spans about +-3 sigma, so ``sigma`` near 80 px reproduces it.

Example:
    >>> heatmap = gaze_heatmap([[900, 1000]], image_size=(2000, 1800), sigma=80, grid=(7, 7))
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from visprior.errors import error_text
from visprior.fileio import atomic_path

__all__ = ["DEFAULT_SIGMA_PX", "GazeCache", "GazeError", "gaze_heatmap"]

DEFAULT_SIGMA_PX = 80.0
# The blur runs on a grid at most this many pixels on its longer side: a wide Gaussian loses
# nothing at that resolution, and a 3000 x 2500 radiograph would cost seconds per heatmap.
_WORK_SIDE = 512


OUTSIDE_THE_IMAGE = "; left out"  # ends the warning about fixations off the image


class GazeError(ValueError):
    """Fixations that cannot make a heatmap; the message names the source and the row."""


def gaze_heatmap(
    points: Sequence[Sequence[float]] | np.ndarray,
    image_size: tuple[int, int],
    sigma: float = DEFAULT_SIGMA_PX,
    grid: tuple[int, int] | None = None,
    durations: Sequence[float] | np.ndarray | None = None,
    source: str = "fixations",
    lines: Sequence[int] | np.ndarray | None = None,
) -> np.ndarray:
    """The heatmap of ``points`` on an image of ``image_size`` (rows, columns), on ``grid``.

    Args:
        points: (N, 2) fixation coordinates in pixels of the original image, as (x, y).
        image_size: the original image's (rows, columns).
        sigma: the Gaussian's standard deviation in original pixels.
        grid: the output (rows, columns), e.g. the CAM grid; default: ``image_size``.
        durations: per-fixation weights (seconds); default: every fixation counts once.
        source: what the points came from, for error messages (file name).
        lines: each point's line in ``source``, for error messages (default: its index).

    Returns:
        float32 array of shape ``grid`` with maximum 1 (all zeros if there are no points).

    Fixations outside the image (eye trackers record the whole screen) are left out with a
    warning that names ``source``, their count and the first one's row.

    Raises:
        GazeError: non-finite coordinates or durations (their row is named), negative
            durations, mismatched lengths, or every fixation outside the image (the
            coordinates are then not in this image's pixels).
    """
    rows, cols = (int(v) for v in image_size)
    if rows < 1 or cols < 1:
        raise GazeError(f"{source}: image size must be positive, got {image_size}")
    grid = (rows, cols) if grid is None else (int(grid[0]), int(grid[1]))
    if grid[0] < 1 or grid[1] < 1:
        raise GazeError(f"{source}: grid must be positive, got {grid}")
    if not sigma > 0:
        raise GazeError(f"{source}: sigma must be positive, got {sigma}")
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    lines = np.arange(len(points)) if lines is None else np.asarray(lines).reshape(-1)
    if len(lines) != len(points):
        raise GazeError(f"{source}: {len(points)} fixations but {len(lines)} line numbers")
    weights = _weights(points, durations, source, lines)
    inside = _inside(points, rows, cols, source, lines)
    points, weights = points[inside], weights[inside]

    scale = min(1.0, _WORK_SIDE / max(rows, cols))
    work = (max(1, round(rows * scale)), max(1, round(cols * scale)))
    counts = np.zeros(work, dtype=np.float64)
    if len(points):
        r = np.minimum((points[:, 1] * work[0] / rows).astype(int), work[0] - 1)
        c = np.minimum((points[:, 0] * work[1] / cols).astype(int), work[1] - 1)
        np.add.at(counts, (r, c), weights)
    blurred = gaussian_filter(counts, sigma=sigma * scale, mode="constant")
    resampled = (
        F.adaptive_avg_pool2d(torch.from_numpy(blurred)[None, None], grid)[0, 0].numpy()
        if grid != work
        else blurred
    )
    peak = resampled.max()
    return (resampled / peak if peak > 0 else resampled).astype(np.float32)


def _weights(points: np.ndarray, durations, source: str, lines: np.ndarray) -> np.ndarray:
    if durations is None:
        return np.ones(len(points))
    weights = np.asarray(durations, dtype=np.float64).reshape(-1)
    if len(weights) != len(points):
        raise GazeError(f"{source}: {len(points)} fixations but {len(weights)} durations")
    bad = np.flatnonzero(~np.isfinite(weights) | (weights < 0))
    if len(bad):
        raise GazeError(
            f"{source}: row {lines[bad[0]]}: duration {weights[bad[0]]} is not a "
            "non-negative number"
        )
    return weights


def _inside(points: np.ndarray, rows: int, cols: int, source: str, lines) -> np.ndarray:
    """Which points lie on the image; warns about the others, refuses non-finite ones."""
    finite = np.isfinite(points).all(1)
    if not finite.all():
        bad = np.flatnonzero(~finite)[0]
        x, y = points[bad]
        raise GazeError(f"{source}: row {lines[bad]}: fixation (x={x:g}, y={y:g}) is not finite")
    x, y = points[:, 0], points[:, 1]
    inside = (x >= 0) & (x < cols) & (y >= 0) & (y < rows)
    outside = np.flatnonzero(~inside)
    if len(outside):
        x, y = points[outside[0]]
        where = (
            f"{source}: {len(outside)} of {len(points)} fixations lie outside the "
            f"{cols} x {rows} image (first: row {lines[outside[0]]}, x={x:g}, y={y:g})"
        )
        if len(outside) == len(points):
            raise GazeError(f"{where}; are the coordinates in this image's pixels?")
        warnings.warn(f"{where}{OUTSIDE_THE_IMAGE}", stacklevel=3)
    return inside


class GazeCache:
    """Heatmaps kept as ``.npy`` files, keyed by the fixations and every parameter.

    A changed fixation file, sigma or grid gives a new key, so a stale map is never read.
    Files are written atomically: a crash leaves no half-written map. A cached file that is
    not a finite float32 map of the grid's shape in [0, 1] (damaged, truncated, or written by
    something else) is rebuilt with a warning; files are read without unpickling, so a
    planted file cannot run code. A folder that cannot be written only costs the caching.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def heatmap(
        self,
        points: np.ndarray,
        image_size: tuple[int, int],
        sigma: float,
        grid: tuple[int, int],
        durations: np.ndarray | None = None,
        source: str = "fixations",
        lines: np.ndarray | None = None,
    ) -> np.ndarray:
        grid = (int(grid[0]), int(grid[1]))
        key = _cache_key(points, image_size, sigma, grid, durations)
        path = self.folder / f"{key}.npy"
        if path.is_file():
            cached, problem = _load_cached(path, grid)
            if cached is not None:
                return cached
            warnings.warn(f"{path}: {problem}; rebuilding this gaze map", stacklevel=2)
        heatmap = gaze_heatmap(points, image_size, sigma, grid, durations, source, lines)
        try:
            with atomic_path(path) as temporary, open(temporary, "wb") as stream:
                np.save(stream, heatmap, allow_pickle=False)
        except OSError as error:
            warnings.warn(f"{path}: gaze map not cached ({error})", stacklevel=2)
        return heatmap


def _load_cached(path: Path, grid: tuple[int, int]) -> tuple[np.ndarray | None, str]:
    """The cached map, or ``None`` and what is wrong with the file.

    The header is checked before the data is read, so a file claiming a huge shape costs
    nothing; the data is read with ``allow_pickle=False``.
    """
    try:
        # a damaged header makes numpy's parser warn (invalid escapes...) before it fails
        with open(path, "rb") as stream, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
            else:
                return None, f"unsupported .npy version {version}"
            if shape != grid or dtype != np.float32:
                return None, f"holds {dtype} of shape {shape}; expected float32 of shape {grid}"
            stream.seek(0)
            heatmap = np.load(stream, allow_pickle=False)
    # numpy's header parser raises ValueError, SyntaxError, tokenize.TokenError... on damaged
    # files; each means the file must be rebuilt.
    except Exception as error:
        return None, f"not a readable .npy file ({error_text(error)[:200]})"
    if not (np.isfinite(heatmap).all() and heatmap.min() >= 0 and heatmap.max() <= 1):
        return None, "values are not finite numbers in [0, 1]"
    return np.ascontiguousarray(heatmap), ""


def _cache_key(points, image_size, sigma, grid, durations) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(points, dtype=np.float64).tobytes())
    digest.update(repr((tuple(image_size), float(sigma), tuple(grid))).encode())
    if durations is not None:
        digest.update(np.ascontiguousarray(durations, dtype=np.float64).tobytes())
    return digest.hexdigest()[:32]
