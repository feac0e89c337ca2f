"""The CXR training data as tensors: the dataset a config names (read by ``cxr/data.py``'s
readers), radiographs resized to a square, and :class:`GazeImageDataset` with each case's gaze
map and anatomy region on the network's map grid. Training, evaluation and ``simplify`` read
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

__all__ = ["GazeImageDataset", "load_cxr_dataset", "load_image", "output_grid", "square_image"]


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


class GazeImageDataset(Dataset):
    """Cases as tensors: image (1, S, S), label, gaze map and anatomy region on the CAM grid.

    Images are read once and kept resized in memory; gaze maps go through a disk cache. A case
    without fixations has ``has_gaze`` False and a zero map; a case whose class has no region
    (or whose masks are missing) has ``has_region`` False.

    Raises:
        GazeDataError: with ``need_gaze``, a case without fixations (named).
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
    ):
        self.cases = list(cases)
        cache = GazeCache(cache_dir) if cache_dir else None
        build = cache.heatmap if cache else gaze_heatmap
        self.items = []
        off_image: list[str] = []
        for case in self.cases:
            original = read_cxr(case.image)
            image = square_image(original, image_size)
            gaze, has_gaze = np.zeros(grid, np.float32), False
            if case.fixations is not None and len(case.fixations):
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
                has_gaze = True
            elif need_gaze:
                raise GazeDataError(
                    f"case {case.case_id} ({case.image}) has no fixations; train with "
                    "use_gaze=false, or leave the case out"
                )
            region = _region_on_grid(case, classes, grid)
            has_region = region is not None
            self.items.append(
                {
                    "image": image,
                    "label": case.label,
                    "gaze": torch.from_numpy(np.asarray(gaze, np.float32)),
                    "has_gaze": has_gaze,
                    "region": torch.from_numpy(region if has_region else np.zeros(grid, bool)),
                    "has_region": has_region,
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

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]


def _region_on_grid(
    case: GazeCase, classes: Sequence[str], grid: tuple[int, int]
) -> np.ndarray | None:
    """The case's class region (union of its masks), a cell counting if the mask touches it."""
    region_name = CLASS_REGION.get(classes[case.label])
    files = case.masks.get(region_name, []) if region_name else []
    if not files:
        return None
    union = None
    for path in files:
        with Image.open(path) as picture:
            mask = np.asarray(picture.convert("L")) > 0
        union = mask if union is None else union | mask
    pooled = F.adaptive_max_pool2d(torch.from_numpy(union.astype(np.float32))[None, None], grid)
    return pooled[0, 0].numpy() > 0
