"""The CXR training data as tensors: the dataset a config names (read by ``cxr/data.py``'s
readers), radiographs resized to a square, and :class:`GazeImageDataset` with each case's gaze
map and anatomy region on the network's map grid (and the finding's mask where a generator
wrote one). Training, evaluation and ``simplify`` read
their data through this module.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.ndimage import gaussian_filter
from torch import nn
from torch.utils.data import Dataset

from visprior.cxr.config import CXRTrainConfig
from visprior.cxr.data import (
    CLASS_REGION,
    EGD_CLASSES,
    GazeCase,
    GazeDataError,
    GazeDataset,
    read_egd_cxr,
    read_reflacx,
)
from visprior.cxr.gaze import OUTSIDE_THE_IMAGE, GazeCache, gaze_heatmap
from visprior.cxr.io import read_cxr

__all__ = [
    "GAZE_SOURCES",
    "GazeImageDataset",
    "derangement",
    "load_cxr_dataset",
    "load_image",
    "mask_heatmap",
    "output_grid",
    "square_image",
]


def load_cxr_dataset(config: CXRTrainConfig) -> GazeDataset:
    """The dataset ``config`` names, read by its format's reader."""
    images_root = config.images_root or None
    if config.format == "egd":
        classes = tuple(config.classes) or EGD_CLASSES
        return read_egd_cxr(config.dataset, images_root, config.gaze_file, classes)
    if config.format == "reflacx":
        if not config.classes:
            raise ValueError("REFLACX needs classes=[...]: the abnormality columns to classify")
        if images_root is None:
            raise ValueError("REFLACX needs images_root: the MIMIC-CXR folder")
        return read_reflacx(config.dataset, images_root, config.classes, config.normal_class)
    raise ValueError(f"format must be 'egd' or 'reflacx', got {config.format!r}")


def load_image(path: str | Path, size: int) -> torch.Tensor:
    """A radiograph as a (1, size, size) float tensor in [0, 1] (area-averaged resize)."""
    return square_image(read_cxr(path), size)


def square_image(image: np.ndarray, size: int) -> torch.Tensor:
    """A (rows, columns) image as a (1, size, size) tensor, area-averaged."""
    return F.interpolate(torch.from_numpy(image)[None, None], size=(size, size), mode="area")[0]


def output_grid(model: nn.Module, image_size: int, in_channels: int = 1) -> tuple[int, int]:
    """The (rows, columns) of the maps ``model`` gives for a square ``image_size`` input: the
    CAMs of a CAM classifier, the saliency map of MT-UNet (the second output of either)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        probe = torch.zeros(1, in_channels, image_size, image_size)
        probe = probe.to(next(model.parameters()).device)
        grid = tuple(model(probe)[1].shape[-2:])
    model.train(was_training)
    return int(grid[0]), int(grid[1])


GAZE_SOURCES = ("fixations", "shuffled", "mask")


class GazeImageDataset(Dataset):
    """Cases as tensors: image (1, S, S), label, gaze map and anatomy region on the CAM grid,
    and the finding's mask at the input size.

    Images are read once and kept resized in memory; gaze maps go through a disk cache. A case
    without fixations has ``has_gaze`` False and a zero map; a case whose class has no region
    (or whose masks are missing) has ``has_region`` False. ``finding`` is the case's
    ``finding.png`` area-averaged to (S, S), a pixel counting where half of it is covered;
    ``has_finding`` is False (and ``finding`` all False) without the file or where nothing of
    the finding is left at that size.

    ``gaze_source`` says what the gaze maps are (``cxr train``'s option of that name):
    ``"fixations"`` each case's own; ``"shuffled"`` the same maps dealt out again among the
    cases that have gaze so that none keeps its own (a control that keeps the maps' statistics
    but breaks the image-gaze pairing; drawn from ``shuffle_seed``); ``"mask"`` each case's
    finding mask, or its lungs where it has no finding, blurred like gaze
    (:func:`mask_heatmap`; not cached). ``gaze_from[i]`` is the index of the case whose
    fixations item ``i``'s map was made from (``i`` unless shuffled; -1 for mask maps and cases
    without gaze).

    Raises:
        GazeDataError: with ``need_gaze``, a case without fixations (named); with
            ``gaze_source="mask"``, a case with neither a finding nor lung masks (named); a
            mask file that cannot be read.
        ValueError: an unknown ``gaze_source``.
    """

    def __init__(
        self,
        cases: Sequence[GazeCase],
        classes: Sequence[str],
        image_size: int,
        grid: tuple[int, int],
        sigma: float,
        cache_dir: str | Path | None = None,
        need_gaze: bool = False,
        gaze_source: str = "fixations",
        shuffle_seed: int = 0,
    ):
        if gaze_source not in GAZE_SOURCES:
            raise ValueError(
                f"gaze_source must be one of {', '.join(GAZE_SOURCES)}; got {gaze_source!r}"
            )
        self.cases = list(cases)
        cache = GazeCache(cache_dir) if cache_dir else None
        build = cache.heatmap if cache else gaze_heatmap
        self.items = []
        self.gaze_from: list[int] = []
        off_image: list[str] = []
        for case in self.cases:
            original = read_cxr(case.image)
            image = square_image(original, image_size)
            finding_mask = _read_mask_union(case.masks.get("finding", []))
            gaze, has_gaze, gaze_from = np.zeros(grid, np.float32), False, -1
            if gaze_source == "mask":
                gaze, has_gaze = _mask_gaze(case, finding_mask, original.shape, sigma, grid), True
            elif case.fixations is not None and len(case.fixations):
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    gaze = build(
                        case.fixations,
                        original.shape,
                        sigma,
                        grid,
                        case.durations,
                        source=case.source or str(case.image),
                        lines=case.lines,
                    )
                for warning in caught:  # one summary below, not a line per case
                    if str(warning.message).endswith(OUTSIDE_THE_IMAGE):
                        off_image.append(str(warning.message))
                    else:
                        warnings.warn_explicit(
                            warning.message, warning.category, warning.filename, warning.lineno
                        )
                has_gaze, gaze_from = True, len(self.items)
            elif need_gaze:
                raise GazeDataError(
                    f"case {case.case_id} ({case.image}) has no fixations; train with "
                    "use_gaze=false, or leave the case out"
                )
            region = _region_on_grid(case, classes, grid)
            has_region = region is not None
            finding = _mask_at_size(finding_mask, image_size)
            self.gaze_from.append(gaze_from)
            self.items.append(
                {
                    "image": image,
                    "label": case.label,
                    "gaze": torch.from_numpy(np.asarray(gaze, np.float32)),
                    "has_gaze": has_gaze,
                    "region": torch.from_numpy(region if has_region else np.zeros(grid, bool)),
                    "has_region": has_region,
                    "finding": torch.from_numpy(finding),
                    "has_finding": bool(finding.any()),
                    "index": len(self.items),
                    "original_size": torch.tensor(original.shape),
                }
            )

        if off_image:
            warnings.warn(
                f"{len(off_image)} case(s) have fixations outside their image, left out of the "
                f"gaze maps; the first: {off_image[0]}",
                stacklevel=2,
            )
        if gaze_source == "shuffled":
            self._shuffle_gaze(np.random.default_rng(shuffle_seed))

    def _shuffle_gaze(self, rng: np.random.Generator) -> None:
        """Deal the gaze maps out again among the cases with gaze, none keeping its own."""
        with_gaze = [i for i, item in enumerate(self.items) if item["has_gaze"]]
        if len(with_gaze) < 2:
            warnings.warn(
                f"gaze_source=shuffled: {len(with_gaze)} case(s) with gaze, nothing to shuffle",
                stacklevel=3,
            )
            return
        maps = [self.items[i]["gaze"] for i in with_gaze]
        for target, source in zip(with_gaze, derangement(len(with_gaze), rng), strict=True):
            self.items[target]["gaze"] = maps[source]
            self.gaze_from[target] = with_gaze[source]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A permutation of ``range(n)`` without a fixed point, uniform over those (for n >= 2;
    the identity for n < 2, which has no other)."""
    if n < 2:
        return np.arange(n)
    identity = np.arange(n)
    while True:  # about e draws on average: a share 1/e of permutations are derangements
        order = rng.permutation(n)
        if (order != identity).all():
            return order


def mask_heatmap(
    mask: np.ndarray, grid: tuple[int, int], sigma: float, image_size: tuple[int, int]
) -> np.ndarray:
    """A mask made to look like a gaze map on ``grid``: area-averaged onto the grid, blurred
    with a Gaussian of ``sigma`` pixels of an image of ``image_size`` (rows, columns) that the
    mask covers, scaled to peak 1 (float32; all zeros for an empty mask)."""
    mask = np.asarray(mask, dtype=np.float32)
    pooled = F.adaptive_avg_pool2d(torch.from_numpy(mask)[None, None], grid)[0, 0].numpy()
    cells = (sigma * grid[0] / image_size[0], sigma * grid[1] / image_size[1])
    blurred = gaussian_filter(pooled.astype(np.float64), sigma=cells, mode="constant")
    peak = blurred.max()
    return (blurred / peak if peak > 0 else blurred).astype(np.float32)


def _mask_gaze(
    case: GazeCase,
    finding: np.ndarray | None,
    image_shape: tuple[int, int],
    sigma: float,
    grid: tuple[int, int],
) -> np.ndarray:
    """gaze_source=mask: the finding's mask as a gaze map, or the lungs' for a case without one
    (a Normal image: a reader looks over both lungs)."""
    mask = finding
    if mask is None or not mask.any():
        mask = _read_mask_union(case.masks.get("lungs", []))
    if mask is None or not mask.any():
        raise GazeDataError(
            f"case {case.case_id} ({case.image}) has neither a finding.png nor lung masks "
            "(or they are empty); "
            "gaze_source=mask needs finding.png or lung masks for every training case"
        )
    return mask_heatmap(mask, grid, sigma, image_shape)


def _mask_at_size(mask: np.ndarray | None, size: int) -> np.ndarray:
    """A mask area-averaged to (size, size), a pixel counting where it is half covered."""
    if mask is None:
        return np.zeros((size, size), bool)
    pooled = F.interpolate(
        torch.from_numpy(mask.astype(np.float32))[None, None], size=(size, size), mode="area"
    )
    return pooled[0, 0].numpy() >= 0.5


def _read_mask_union(files: Sequence[Path]) -> np.ndarray | None:
    """The union of mask image files (a pixel counts where it is not 0), or ``None`` without
    files."""
    union = None
    for path in files:
        try:
            with Image.open(path) as picture:
                mask = np.asarray(picture.convert("L")) > 0
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            raise GazeDataError(f"{path}: not a readable mask image ({error})") from None
        if union is not None and union.shape != mask.shape:
            raise GazeDataError(
                f"{path}: mask of {mask.shape[1]} x {mask.shape[0]} pixels, but {files[0]} "
                f"has {union.shape[1]} x {union.shape[0]}"
            )
        union = mask if union is None else union | mask
    return union


def _region_on_grid(
    case: GazeCase, classes: Sequence[str], grid: tuple[int, int]
) -> np.ndarray | None:
    """The case's class region (union of its masks), a cell counting if the mask touches it."""
    region_name = CLASS_REGION.get(classes[case.label])
    union = _read_mask_union(case.masks.get(region_name, []) if region_name else [])
    if union is None:
        return None
    pooled = F.adaptive_max_pool2d(torch.from_numpy(union.astype(np.float32))[None, None], grid)
    return pooled[0, 0].numpy() > 0
