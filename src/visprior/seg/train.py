"""``visprior seg train``: train a registered 3D network on an nnU-Net or MSD dataset.

The loop is the shared ``engine.Trainer``; this module supplies the segmentation task: MONAI
transforms and datasets, DiceCE loss, sliding-window validation with per-class Dice, and the
checkpoint entries ``seg predict`` needs (network, labels, channels, preprocessing).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import CacheDataset, DataLoader, list_data_collate
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.metrics import compute_dice
from monai.networks.utils import one_hot
from torch import nn

from visprior.checkpoint_io import CheckpointError, is_visprior_checkpoint, read_weights_only
from visprior.data.dataset import SegmentationDataset, load_dataset
from visprior.data.splits import kfold_split, load_split, save_split
from visprior.data.volumes import verify_headers
from visprior.engine.config import config_to_dict, save_config
from visprior.engine.distributed import is_main_process
from visprior.engine.sampling import SeededSamples, loader_generator, training_sampler
from visprior.engine.trainer import Trainer, TrainerSettings, TrainingResult, start_run
from visprior.nets.build import ModelSpec
from visprior.nets.official import (
    extract_state_dict,
    infer_official_config,
    load_official_checkpoint,
)
from visprior.nets.registry import get_model
from visprior.nets.upkern import is_depthwise_kernel_pair, upkern_state_dict
from visprior.seg.config import SegTrainConfig
from visprior.seg.plan import load_plan
from visprior.seg.postprocess import DECISION_FILE, decide_for_run, describe_decision
from visprior.seg.transforms import resolve_intensity, train_transforms, validation_transforms

__all__ = ["Initialization", "SegmentationTask", "initialize_from", "train_segmentation"]

METRIC = "val_mean_dice"


class SegmentationTask:
    """DiceCE on random crops; validation = sliding-window Dice per foreground class."""

    def __init__(
        self,
        config: SegTrainConfig,
        dataset: SegmentationDataset,
        validation: torch.utils.data.Dataset,
        model_spec: ModelSpec,
        device: torch.device,
    ):
        self.config, self.dataset, self.validation = config, dataset, validation
        self.model_spec, self.device = model_spec, device
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True, batch=config.batch_dice)
        names = {v: n for n, v in dataset.labels.items()}
        # compute_dice's columns are the label values 1..C-1, declared or not.
        self.class_names = [names.get(v, f"class_{v}") for v in range(1, dataset.num_classes)]

    def training_loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        image = batch["image"].to(self.device)
        label = batch["label"].to(self.device)
        # the loss in float32 under autocast, as the plan's timed step computes it: a bf16
        # softmax and Dice sums over a crop lose the precision they need
        return self.loss(model(image).float(), label)

    def validate(self, model: nn.Module) -> dict[str, float]:
        num_classes = self.dataset.num_classes
        scores = []
        for item in DataLoader(self.validation, batch_size=1, num_workers=0):
            image = item["image"].to(self.device)
            logits = sliding_window_inference(
                image,
                self.config.roi_size,
                self.config.sw_batch_size,
                model,
                overlap=self.config.val_overlap,
                mode="gaussian",
            )
            prediction = one_hot(logits.argmax(1, keepdim=True), num_classes)
            label = one_hot(item["label"].to(self.device).long(), num_classes)
            # NaN where a class is absent from the label: left out of its mean.
            scores.append(compute_dice(prediction, label, include_background=False)[0].cpu())
        per_class = torch.stack(scores).nanmean(0).tolist()
        metrics = {METRIC: float(np.nanmean(per_class)) if per_class else math.nan}
        metrics.update(
            {f"val_dice_{n}": s for n, s in zip(self.class_names, per_class, strict=True)}
        )
        return metrics

    def checkpoint_extras(self) -> dict[str, Any]:
        return {
            "task": "segmentation",
            "model": self.model_spec.to_dict(),
            "labels": dict(self.dataset.labels),
            "channel_names": list(self.dataset.channel_names),
            "preprocessing": config_to_dict(self.config.preprocessing),
            "roi_size": list(self.config.roi_size),
            "config": config_to_dict(self.config),
        }


def train_segmentation(config: SegTrainConfig, resume: bool = False) -> TrainingResult:
    """Train as ``config`` says; ``resume`` continues the run in ``config.output``.

    Writes into ``config.output``: ``config.yaml``, ``splits.json``, ``checkpoints/best.pt``
    and ``last.pt``, ``metrics.csv``, ``tensorboard/`` and ``curves.png``; then the best
    network's predictions of the validation cases (``validation/``) and the post-processing
    chosen on them (``postprocessing.json``, see :mod:`visprior.seg.postprocess`).
    """
    started = time.perf_counter()
    run_dir = Path(config.output)
    _check_init(config)
    device = start_run(run_dir, resume, config.seed, config.deterministic, config.device)

    dataset = load_dataset(config.dataset)
    verify_headers(dataset)  # a forged or cut-short file fails now, not hours into caching
    config = dataclasses.replace(
        config, preprocessing=resolve_intensity(config.preprocessing, dataset.modality)
    )
    _check_planned_channels(config, dataset)
    model_spec = ModelSpec(
        config.model,
        {
            "in_channels": dataset.num_channels,
            "out_channels": dataset.num_classes,
            **config.model_kwargs,
        },
    )
    model = model_spec.build()
    _check_roi(config, model)
    train_cases, val_cases = _fold_cases(config, dataset, run_dir)
    if config.init_checkpoint and not resume:
        start = initialize_from(
            model, config.init_checkpoint, config.model, model_spec, upkern=config.upkern
        )
        if is_main_process():
            print(start.describe(config.init_checkpoint))
    model.to(device)
    if is_main_process():
        save_config(config, run_dir / "config.yaml")

    # The deterministic preprocessing is cached once; augmentation runs on every draw.
    train_data, val_data = (
        CacheDataset(
            dataset.data_dicts(cases),
            transforms,
            cache_rate=config.cache_rate,
            num_workers=0,
            progress=False,
        )
        for cases, transforms in (
            (train_cases, train_transforms(config, dataset.num_classes)),
            (val_cases, validation_transforms(config, dataset.num_classes)),
        )
    )
    # Each draw's augmentation is seeded from (seed, epoch, case): a resumed run sees the very
    # crops and augmentations the uninterrupted run would have seen.
    loader = DataLoader(
        SeededSamples(train_data),
        batch_size=config.batch_size,
        sampler=training_sampler(train_data, config.seed, with_seeds=True),
        num_workers=config.num_workers,
        persistent_workers=config.num_workers > 0,
        collate_fn=list_data_collate,
        generator=loader_generator(config.seed),
    )
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    task = SegmentationTask(config, dataset, val_data, model_spec, device)
    settings = TrainerSettings(
        iterations=config.iterations,
        val_every=config.val_every,
        metric=METRIC,
        time_limit_minutes=config.time_limit_minutes,
        wall_limit_minutes=_wall_limit_minutes(config, time.perf_counter() - started),
        # the final validation, and the held-out prediction for post-processing after it
        reserve_validations=2.0 if config.postprocess_on_validation and config.fold != -1 else 1.0,
        amp=config.amp,
        precision=config.precision,
        sync_batchnorm=config.sync_batchnorm,
        lr_schedule=config.lr_schedule,
        warmup_iterations=config.warmup_iterations,
    )
    trainer = Trainer(model, optimizer, task, loader, run_dir, settings, device)
    result = trainer.fit(resume=resume)
    if is_main_process() and config.postprocess_on_validation:
        decision = decide_for_run(run_dir, dataset, val_cases, train_cases)
        print(describe_decision(decision, run_dir / DECISION_FILE))
    return result


def _wall_limit_minutes(config: SegTrainConfig, setup_seconds: float) -> float:
    """What ``budget_minutes`` leaves the training loop: less the plan's timing and the run's
    setup (reading and caching the data)."""
    if config.budget_minutes is None:
        return math.inf
    planning = 0.0
    if config.plan_file and config.configuration in ("auto", "budget"):
        timed = load_plan(config.plan_file).get("budget") or {}
        planning = float(timed.get("planning_seconds", 0.0))
    return config.budget_minutes - (planning + setup_seconds) / 60


@dataclasses.dataclass
class Initialization:
    """What :func:`initialize_from` did: the weights left fresh, the kernels it resampled
    (``upkern``), and the kernels left fresh only because their size differs."""

    fresh: list[str]
    resampled: list[str]
    other_kernel_size: list[str]

    def describe(self, source: str | Path) -> str:
        lines = [f"initialised from {source}; new: {', '.join(self.fresh) or 'none'}"]
        if self.resampled:
            lines.append(f"UpKern: {len(self.resampled)} depth-wise kernels resampled")
        if self.other_kernel_size:
            lines.append(
                f"{len(self.other_kernel_size)} depth-wise kernels of another size start fresh; "
                "--upkern resamples them"
            )
        return "\n".join(lines)


def initialize_from(
    model: nn.Module,
    path: str | Path,
    model_name: str,
    model_spec: ModelSpec | dict[str, Any],
    upkern: bool = False,
) -> Initialization:
    """Copy every weight of a checkpoint whose name and shape fit ``model``.

    ``path`` is a visprior checkpoint or an authors' RepUX-Net / 3D UX-Net checkpoint. Weights
    that do not fit (the output head, for a new label set) keep their fresh initialisation.
    With ``upkern``, depth-wise kernels of another size are resampled to the model's (see
    :mod:`visprior.nets.upkern`). ``model_spec``: how ``model`` was built (or its checkpoint
    entry).
    """
    if not isinstance(model_spec, ModelSpec):
        model_spec = ModelSpec.from_dict(model_spec)
    path = Path(path)
    raw = read_weights_only(path)
    if is_visprior_checkpoint(raw):
        source = raw["state_dict"]
    else:
        source = _official_state(raw, model_name, model_spec, str(path))
    target = model.state_dict()
    if upkern:
        fitting, resampled = upkern_state_dict(source, target)
    else:
        fitting = {k: v for k, v in source.items() if k in target and v.shape == target[k].shape}
        resampled = []
    if not fitting:
        raise CheckpointError(f"{path}: no weight fits the network {model_name!r}")
    model.load_state_dict(fitting, strict=False)
    # BFR frequency maps follow from the kernel size: not weights to report
    fresh = sorted(k for k in set(target) - set(fitting) if not k.endswith(".frequency_map"))
    other_size = [
        k for k in fresh if k in source and is_depthwise_kernel_pair(source[k], target[k])
    ]
    return Initialization(fresh, resampled, other_size)


def _check_init(config: SegTrainConfig) -> None:
    """A bad ``--init`` / ``--upkern`` is refused before the run folder is made."""
    if config.upkern and not config.init_checkpoint:
        raise ValueError("--upkern needs --init CHECKPOINT: the trained network to resample")
    if config.init_checkpoint:
        path = Path(config.init_checkpoint)
        if path.is_dir():
            raise ValueError(
                f"--init takes a checkpoint file, and {path} is a folder "
                f"(a run's are {path / 'checkpoints' / 'best.pt'} and last.pt)"
            )
        if not path.is_file():
            raise ValueError(f"--init: checkpoint not found: {path}")


def _official_state(raw: Any, model_name: str, spec: ModelSpec, source: str) -> dict:
    """An authors' checkpoint, converted through a donor network with its own head size."""
    try:
        official = infer_official_config(extract_state_dict(raw, source), source)
    except (ValueError, AttributeError) as error:
        raise CheckpointError(
            f"{source}: neither a visprior nor an authors' checkpoint: {error}"
        ) from None
    # the donor has the checkpoint's head and kernels; UpKern may resample them after
    donor_kwargs = {
        **spec.kwargs,
        "out_channels": official["out_channels"],
        "kernel_size": official["kernel_size"],
    }
    donor = load_official_checkpoint(raw, model=get_model(model_name, **donor_kwargs))
    return donor.state_dict()


def _fold_cases(config: SegTrainConfig, dataset: SegmentationDataset, run_dir: Path):
    """Training and validation case names; the split is saved once and reused on resume."""
    names = [case.name for case in dataset.training]
    if config.fold == -1:  # train on every case; validate on them too (no held-out set)
        return names, names
    if len(names) < 2:
        raise ValueError(
            f"{dataset.root}: one training case leaves none to validate fold {config.fold} on; "
            "train on it with --fold -1 (post-processing is then not chosen)"
        )
    split_path = run_dir / "splits.json"
    if split_path.is_file():
        splits = load_split(split_path)
    else:
        splits = kfold_split(names, folds=config.folds, seed=config.seed)
        if is_main_process():
            save_split(splits, split_path)
    if not 0 <= config.fold < len(splits):
        raise ValueError(f"fold {config.fold} does not exist: folds are 0..{len(splits) - 1} or -1")
    return splits[config.fold]["train"], splits[config.fold]["val"]


def _check_planned_channels(config: SegTrainConfig, dataset: SegmentationDataset) -> None:
    pre = config.preprocessing
    if pre.intensity == "planned" and len(pre.channel_normalization) != dataset.num_channels:
        source = config.plan_file or "preprocessing.channel_normalization"
        raise ValueError(
            f"{source}: normalises {len(pre.channel_normalization)} channel(s) but "
            f"{config.dataset} has {dataset.num_channels}; run `visprior seg plan` again"
        )


def _check_roi(config: SegTrainConfig, model: nn.Module) -> None:
    divisor = getattr(model, "size_divisibility", 1)
    if any(s % divisor for s in config.roi_size):
        raise ValueError(
            f"roi_size {tuple(config.roi_size)} must be divisible by {divisor} for "
            f"model {config.model!r}"
        )
