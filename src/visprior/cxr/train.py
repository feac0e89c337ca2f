"""``visprior cxr train``: train a CAM classifier on chest X-rays, guided by gaze (GG-CAM).

The loop is the shared ``engine.Trainer`` run by epochs: one validation per pass over the
training cases, the plateau schedule on the validation loss with the best weights reloaded at
each drop (GG-CAM's recipe), best / last checkpoints, resume. This module supplies the data
(images resized to a square, gaze heatmaps and anatomy masks on the CAM grid, cached), the
loss, the validation scores and the checkpoint entries ``cxr predict`` / ``cxr evaluate``
need.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from visprior.cxr.config import CXRTrainConfig
from visprior.cxr.data import (
    CLASS_REGION,
    EGD_CLASSES,
    GazeCase,
    GazeDataError,
    GazeDataset,
    read_egd_cxr,
    read_reflacx,
    split_per_class,
)
from visprior.cxr.gaze import OUTSIDE_THE_IMAGE, GazeCache, gaze_heatmap
from visprior.cxr.io import read_cxr
from visprior.cxr.loss import gaze_guided_loss
from visprior.cxr.metrics import classification_metrics
from visprior.cxr.mtunet import MTUNetOutput, multitask_loss
from visprior.engine.checkpoint import build_model_from_checkpoint, load_checkpoint
from visprior.engine.config import config_to_dict, save_config
from visprior.engine.distributed import is_main_process, unwrap
from visprior.engine.sampling import loader_generator, training_sampler
from visprior.engine.trainer import Trainer, TrainerSettings, TrainingResult, start_run
from visprior.fileio import atomic_path
from visprior.registry import canonical_name, get_model

__all__ = [
    "CXRTask",
    "GazeImageDataset",
    "output_grid",
    "load_cxr_dataset",
    "load_image",
    "train_cxr",
    "train_seeds",
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
    from PIL import Image

    union = None
    for path in files:
        with Image.open(path) as picture:
            mask = np.asarray(picture.convert("L")) > 0
        union = mask if union is None else union | mask
    pooled = F.adaptive_max_pool2d(torch.from_numpy(union.astype(np.float32))[None, None], grid)
    return pooled[0, 0].numpy() > 0


class CXRTask:
    """GG-CAM's loss on a batch; validation: loss, macro AUC, accuracy, the loss scalars."""

    def __init__(
        self,
        config: CXRTrainConfig,
        classes: Sequence[str],
        validation: DataLoader,
        model_spec: dict[str, Any],
        grid: tuple[int, int],
        device: torch.device,
    ):
        self.config, self.classes, self.validation = config, list(classes), validation
        self.model_spec, self.grid, self.device = model_spec, grid, device

    def training_loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        image = batch["image"].to(self.device)
        label = batch["label"].to(self.device)
        output = model(image)
        weights = unwrap(model).loss_weights
        if isinstance(output, MTUNetOutput):
            gaze = batch["gaze"].to(self.device)
            return multitask_loss(output, label, gaze, weights, self.config.tasks)[0]
        gaze = batch["gaze"].to(self.device) if self.config.use_gaze else None
        return gaze_guided_loss(output, label, weights, gaze).total

    def validate(self, model: nn.Module) -> dict[str, float]:
        probabilities, labels, losses, divergences = [], [], [], []
        for batch in self.validation:
            output = model(batch["image"].to(self.device))
            logits = output[0].float()
            label = batch["label"].to(self.device)
            losses.append(F.cross_entropy(logits, label, reduction="sum").item())
            probabilities.append(logits.softmax(1).cpu().numpy())
            labels.append(label.cpu().numpy())
            if isinstance(output, MTUNetOutput):
                divergences += _saliency_divergences(output.log_saliency, batch)
        scores = classification_metrics(
            np.concatenate(probabilities), np.concatenate(labels), self.classes
        )
        metrics = {
            "val_loss": sum(losses) / max(scores["n"], 1),
            "val_auc": scores["auc"],
            "val_accuracy": scores["accuracy"],
        }
        if divergences:
            metrics["val_kl"] = float(np.mean(divergences))
        # the loss weights as the scales they stand for: s = exp(lg_s), k = exp(lg_k)
        for name, value in unwrap(model).loss_weights.named_parameters():
            metrics[name.removeprefix("lg_")] = float(value.exp())
        return metrics

    def checkpoint_extras(self) -> dict[str, Any]:
        return {
            "task": "cxr",
            "model": self.model_spec,
            "classes": self.classes,
            "image_size": self.config.image_size,
            "map_grid": list(self.grid),
            "config": config_to_dict(self.config),
        }


def _saliency_divergences(log_saliency: torch.Tensor, batch: dict) -> list[float]:
    """KL(G || P) of each validation image that has a gaze map."""
    from visprior.metrics.saliency import kl_divergence

    maps = log_saliency.float().exp()[:, 0].cpu().numpy()
    return [
        kl_divergence(predicted, gaze)
        for predicted, gaze, has_gaze in zip(
            maps, batch["gaze"].numpy(), batch["has_gaze"].tolist(), strict=True
        )
        if has_gaze
    ]


def train_cxr(
    config: CXRTrainConfig, resume: bool = False, model: nn.Module | None = None
) -> TrainingResult:
    """Train as ``config`` says; ``resume`` continues the run in ``config.output``.

    ``model``: start from this network instead of a new one of ``config.model`` (a network
    shrunk by ``visprior simplify``: ``config.model`` names its architecture, and its layer
    widths are read back from the checkpoint's tensors).

    Writes into ``config.output``: ``config.yaml``, ``split.json`` (case ids of the training,
    validation and test parts), ``checkpoints/best.pt`` and ``last.pt``, ``metrics.csv``,
    ``tensorboard/`` and ``curves.png``. Gaze maps are cached in ``config.cache_dir``
    (default ``<output>/cache``).
    """
    run_dir = Path(config.output)
    device = start_run(run_dir, resume, config.seed, config.deterministic, config.device)

    dataset = load_cxr_dataset(config)
    model_spec = {
        "name": canonical_name(config.model),
        "kwargs": {
            "num_classes": len(dataset.classes),
            **({"loss_init": tuple(config.loss_init)} if config.loss_init else {}),
            **config.model_kwargs,
        },
    }
    last = run_dir / "checkpoints" / "last.pt"
    if resume and model is None and last.is_file():
        saved = load_checkpoint(last)
        if saved["model"].get("pruned"):
            model = build_model_from_checkpoint(saved, str(last))
    if model is not None:
        model_spec["pruned"] = True
    else:
        model = get_model(model_spec["name"], **model_spec["kwargs"])
    if config.weights and not resume and not model_spec.get("pruned"):
        from visprior.cxr.models import load_backbone_weights

        load_backbone_weights(model, config.weights)
    model.to(device)
    grid = output_grid(model, config.image_size, model_spec["kwargs"].get("in_channels", 1))
    if is_main_process():
        save_config(config, run_dir / "config.yaml")

    parts = _split(config, dataset, run_dir)
    cache = Path(config.cache_dir) if config.cache_dir else run_dir / "cache"
    train_data, val_data = (
        GazeImageDataset(
            parts[name],
            dataset.classes,
            config.image_size,
            grid,
            config.gaze_sigma_px,
            cache,
            need_gaze=name == "train" and _needs_gaze(config),
        )
        for name in ("train", "val")
    )
    sampler = training_sampler(train_data, config.seed)
    loader = DataLoader(
        train_data,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        drop_last=len(train_data) > config.batch_size,  # no lone-image batch for BatchNorm
        generator=loader_generator(config.seed),
    )
    val_loader = DataLoader(val_data, batch_size=config.batch_size, shuffle=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = len(loader)
    task = CXRTask(config, dataset.classes, val_loader, model_spec, grid, device)
    settings = TrainerSettings(
        iterations=config.epochs * steps_per_epoch,
        val_every=steps_per_epoch,
        metric=config.metric,
        mode="max" if config.metric == "val_auc" else "min",
        time_limit_minutes=config.time_limit_minutes,
        amp=config.amp,
        sync_batchnorm=config.sync_batchnorm,
        unused_parameters=_leaves_parameters_out(config),
        log_every=max(1, min(10, steps_per_epoch)),
        lr_schedule="plateau",
        plateau_patience=config.plateau_patience,
        plateau_factor=config.plateau_factor,
        reload_best_on_drop=True,
        early_stop_patience=config.early_stop_patience,
    )
    trainer = Trainer(model, optimizer, task, loader, run_dir, settings, device)
    return trainer.fit(resume=resume)


def _leaves_parameters_out(config: CXRTrainConfig) -> bool:
    """A single-task MT-UNet leaves a head and its loss weights out of the loss; a CAM
    classifier without gaze leaves its three loss scalars out."""
    if canonical_name(config.model) == "mtunet":
        return config.tasks != "both"
    return not config.use_gaze


def _needs_gaze(config: CXRTrainConfig) -> bool:
    if canonical_name(config.model) == "mtunet":
        return config.tasks != "classification"
    return config.use_gaze


def _split(config: CXRTrainConfig, dataset: GazeDataset, run_dir: Path) -> dict[str, list]:
    """The per-class split, saved as case ids in ``split.json`` and reused on resume."""
    path = run_dir / "split.json"
    by_id = {case.case_id: case for case in dataset.cases}
    if path.is_file():
        saved = json.loads(path.read_text())
        missing = [i for ids in saved.values() for i in ids if i not in by_id]
        if missing:
            raise ValueError(f"{path}: case(s) no longer in the dataset: {', '.join(missing[:5])}")
        return {name: [by_id[i] for i in ids] for name, ids in saved.items()}
    train, val, test = split_per_class(dataset.cases, tuple(config.split), config.split_seed)
    if not train or not val:
        raise ValueError(
            f"{config.dataset}: too few cases for a training and a validation part "
            f"({dataset.counts()})"
        )
    parts = {"train": train, "val": val, "test": test}
    if is_main_process():
        with atomic_path(path) as temporary:
            temporary.write_text(
                json.dumps({k: [c.case_id for c in v] for k, v in parts.items()}, indent=1)
            )
    return parts


def train_seeds(config: CXRTrainConfig, seeds: int) -> list[TrainingResult]:
    """``seeds`` runs (seeds ``config.seed``, +1, ...) in ``<output>/seed_<n>``, one split.

    The split depends on ``split_seed`` only, so every run sees the same test cases; the gaze
    cache is shared.
    """
    cache = config.cache_dir or str(Path(config.output) / "cache")
    results = []
    for seed in range(config.seed, config.seed + seeds):
        output = str(Path(config.output) / f"seed_{seed}")
        results.append(
            train_cxr(dataclasses.replace(config, seed=seed, output=output, cache_dir=cache))
        )
    return results
