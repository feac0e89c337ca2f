"""``visprior cxr train``: train a CAM classifier on chest X-rays, guided by gaze (GG-CAM).

The loop is the shared ``engine.Trainer`` run by epochs: one validation per pass over the
training cases, the plateau schedule on the validation loss with the best weights reloaded at
each drop (GG-CAM's recipe), best / last checkpoints, resume. This module supplies the loss,
the validation scores, the run's split and the checkpoint entries ``cxr predict`` / ``cxr
evaluate`` need; the data comes from ``cxr/dataset.py``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from visprior.checkpoint_io import load_checkpoint
from visprior.cxr.config import CXRTrainConfig
from visprior.cxr.data import GazeDataset, split_per_class, subsample_per_class
from visprior.cxr.dataset import GazeImageDataset, load_cxr_dataset, load_image, output_grid
from visprior.cxr.loss import gaze_guided_loss, multitask_loss
from visprior.engine.config import config_to_dict, save_config
from visprior.engine.distributed import is_main_process, unwrap
from visprior.engine.sampling import loader_generator, training_sampler
from visprior.engine.trainer import Trainer, TrainerSettings, TrainingResult, start_run
from visprior.fileio import atomic_path
from visprior.metrics.classification import classification_metrics
from visprior.metrics.saliency import kl_divergence
from visprior.nets.build import ModelSpec, build_model_from_checkpoint
from visprior.nets.ggcam import load_backbone_weights
from visprior.nets.mtunet import MTUNetOutput
from visprior.nets.registry import canonical_name

# GazeImageDataset, load_cxr_dataset, load_image and output_grid live in cxr/dataset.py; they
# stay importable from here.
__all__ = [
    "CXRTask",
    "GazeImageDataset",
    "load_cxr_dataset",
    "load_image",
    "output_grid",
    "train_cxr",
    "train_seeds",
]


class CXRTask:
    """GG-CAM's loss on a batch; validation: loss, macro AUC, accuracy, the loss scalars."""

    def __init__(
        self,
        config: CXRTrainConfig,
        classes: Sequence[str],
        validation: DataLoader,
        model_spec: ModelSpec,
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
            "model": self.model_spec.to_dict(),
            "classes": self.classes,
            "image_size": self.config.image_size,
            "map_grid": list(self.grid),
            "config": config_to_dict(self.config),
        }


def _saliency_divergences(log_saliency: torch.Tensor, batch: dict) -> list[float]:
    """KL(G || P) of each validation image that has a gaze map."""
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
    (default ``<output>/cache``); ``config.gaze_source`` replaces the training part's (shuffled
    ones are the cached maps dealt out again, mask ones are not cached).

    Raises:
        ValueError: a ``gaze_source`` other than "fixations" for a run that does not train on
            gaze.
    """
    if config.gaze_source != "fixations" and not _needs_gaze(config):
        raise ValueError(
            f"gaze_source={config.gaze_source} changes the training gaze, but this run does "
            "not train on gaze (use_gaze=false, or MT-UNet with tasks=classification)"
        )
    run_dir = Path(config.output)
    device = start_run(run_dir, resume, config.seed, config.deterministic, config.device)

    dataset = load_cxr_dataset(config)
    model_spec = ModelSpec(
        canonical_name(config.model),
        {
            "num_classes": len(dataset.classes),
            **({"loss_init": tuple(config.loss_init)} if config.loss_init else {}),
            **config.model_kwargs,
        },
    )
    last = run_dir / "checkpoints" / "last.pt"
    if resume and model is None and last.is_file():
        saved = load_checkpoint(last)
        if saved["model"].get("pruned"):
            model = build_model_from_checkpoint(saved, str(last))
    if model is not None:
        model_spec.pruned = True
    else:
        model = model_spec.build()
    if config.weights and not resume and not model_spec.pruned:
        load_backbone_weights(model, config.weights)
    model.to(device)
    grid = output_grid(model, config.image_size, model_spec.kwargs.get("in_channels", 1))
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
            # only the training part's gaze is replaced: validation scores the real gaze
            gaze_source=config.gaze_source if name == "train" else "fixations",
            shuffle_seed=config.seed,
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
        precision=config.precision,
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
    train = subsample_per_class(train, config.train_fraction, config.split_seed)
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
