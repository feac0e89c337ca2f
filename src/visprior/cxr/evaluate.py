"""``visprior cxr evaluate`` and ``visprior cxr predict``: scores, CAMs and overlays.

``evaluate`` scores a trained run on a part of its own split (the test part by default):
macro and per-class one-vs-rest ROC-AUC, accuracy, the confusion matrix and the localisation
hit rate, written as ``metrics.json`` and ``predictions.csv`` beside CAM overlay PNGs (image,
true class's CAM, gaze map). Given a folder of ``seed_<n>`` runs, it scores each and reports
the median AUC.

``predict`` classifies radiograph files (DICOM, PNG, JPEG) with a trained network and writes
``predictions.csv`` and one CAM overlay per image into the output folder; inputs are only read.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from visprior.cxr.config import CXRTrainConfig
from visprior.cxr.io import CXR_SUFFIXES
from visprior.cxr.metrics import classification_metrics, localisation_hit
from visprior.engine.checkpoint import (
    CheckpointError,
    build_model_from_checkpoint,
    find_checkpoint,
    load_checkpoint,
)
from visprior.engine.config import config_from_dict
from visprior.engine.distributed import resolve_device
from visprior.fileio import atomic_path, check_outputs, write_csv_rows

__all__ = [
    "CXRClassifier",
    "evaluate_run",
    "evaluate_seeds",
    "format_report",
    "load_classifier",
    "predict_images",
]


@dataclass
class CXRClassifier:
    model: nn.Module
    classes: list[str]
    image_size: int
    map_grid: tuple[int, int]
    config: CXRTrainConfig
    device: torch.device
    source: str

    @property
    def predicts_saliency(self) -> bool:
        """MT-UNet: the maps are gaze saliency (N, 1, S, S), not class activation maps."""
        from visprior.cxr.mtunet import MTUNet

        return isinstance(self.model, MTUNet)

    @property
    def map_name(self) -> str:
        return "predicted gaze saliency" if self.predicts_saliency else "class activation map"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (N, K) and maps of a batch of (N, 1, S, S) images: the CAMs
        (N, K, h, w) of a CAM classifier, or MT-UNet's saliency probabilities (N, 1, S, S)."""
        logits, maps = self.model(images.to(self.device))
        if self.predicts_saliency:
            maps = maps.float().exp()
        return logits.float().softmax(1).cpu().numpy(), maps.float().cpu().numpy()


def load_classifier(
    run_or_checkpoint: str | os.PathLike, device: str | torch.device = "cpu"
) -> CXRClassifier:
    """The trained network of a run folder (best checkpoint, else last) or checkpoint file.

    Raises:
        FileNotFoundError: no checkpoint there.
        CheckpointError: not a CXR checkpoint, or its weights do not fit its network.
    """
    path = find_checkpoint(run_or_checkpoint)
    state = load_checkpoint(path, map_location="cpu")
    if state.get("task") != "cxr":
        raise CheckpointError(f"{path}: not a CXR classification checkpoint")
    device = resolve_device(device)
    model = build_model_from_checkpoint(state, source=str(path)).eval().to(device)
    config = config_from_dict(CXRTrainConfig, state["config"], source=f"{path}: config")
    grid = tuple(int(v) for v in state["map_grid"])
    return CXRClassifier(
        model, list(state["classes"]), int(state["image_size"]), grid, config, device, str(path)
    )


def evaluate_run(
    run_dir: str | os.PathLike,
    part: str = "test",
    out_dir: str | os.PathLike | None = None,
    overlays: int = 8,
    dataset: str | None = None,
    images_root: str | None = None,
    device: str = "cpu",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Score a run on ``part`` ("train", "val" or "test") of its saved split.

    Args:
        run_dir: the run folder (with ``split.json`` and ``checkpoints/``).
        part: which part of the split.
        out_dir: where to write; default ``<run_dir>/evaluation/<part>``.
        overlays: how many CAM overlay PNGs to draw (the first cases of the part).
        dataset, images_root: where the data is now, if it moved since training.
        overwrite: replace an earlier evaluation's files (``--force``).

    Returns:
        The metrics (also in ``metrics.json``), with ``hit_rate`` and ``hits_per_class``.
    """
    from visprior.cxr.train import GazeImageDataset, load_cxr_dataset

    run_dir = Path(run_dir)
    classifier = load_classifier(run_dir, device)
    split_path = run_dir / "split.json"
    if not split_path.is_file():
        raise FileNotFoundError(f"{split_path}: no split in this run folder")
    split = json.loads(split_path.read_text())
    if part not in split:
        raise ValueError(f"part must be one of {', '.join(split)}; got {part!r}")
    config = classifier.config
    changes = {"dataset": dataset, "images_root": images_root}
    for key, value in changes.items():
        if value:
            setattr(config, key, value)
    data = load_cxr_dataset(config)
    by_id = {case.case_id: case for case in data.cases}
    missing = [i for i in split[part] if i not in by_id]
    if missing:
        raise ValueError(f"{config.dataset}: case(s) of the split not found: {missing[:5]}")
    cases = [by_id[i] for i in split[part]]
    out_dir = Path(out_dir) if out_dir else run_dir / "evaluation" / part
    shown = cases[: max(overlays, 0)]
    overlay_paths = [out_dir / "overlays" / f"{case.case_id}.png" for case in shown]
    tables = ["metrics.json", "predictions.csv", "saliency_per_image.csv"]
    check_outputs([*(out_dir / name for name in tables), *overlay_paths], overwrite=overwrite)
    tensors = GazeImageDataset(
        cases,
        classifier.classes,
        classifier.image_size,
        classifier.map_grid,
        config.gaze_sigma_px,
        config.cache_dir or run_dir / "cache",
    )
    probabilities, cams = [], []
    for batch in DataLoader(tensors, batch_size=16):
        p, c = classifier(batch["image"])
        probabilities.append(p)
        cams.append(c)
    probabilities, cams = np.concatenate(probabilities), np.concatenate(cams)
    labels = np.array([case.label for case in cases])
    metrics = classification_metrics(probabilities, labels, classifier.classes)
    per_image = []
    if classifier.predicts_saliency:
        per_image, summary = saliency_scores(tensors, cases, cams[:, 0])
        metrics["saliency"] = summary
    else:
        metrics.update(_localisation(tensors, cams, labels, classifier.classes))
    metrics.update({"part": part, "checkpoint": classifier.source})

    # Everything is computed: an error above leaves no file of this evaluation behind.
    if per_image:
        write_csv_rows(out_dir / "saliency_per_image.csv", per_image, ["case", *SALIENCY_METRICS])
    _write_json(out_dir / "metrics.json", metrics)
    _write_predictions(out_dir / "predictions.csv", cases, labels, probabilities, classifier)
    for index, overlay in enumerate(overlay_paths):
        item = tensors[index]
        true_cam = cams[index, 0 if classifier.predicts_saliency else labels[index]]
        save_cam_overlay(
            item["image"][0].numpy(),
            true_cam,
            overlay,
            gaze=item["gaze"].numpy() if item["has_gaze"] else None,
            title=f"{cases[index].case_id}: true {classifier.classes[labels[index]]}, "
            f"predicted {classifier.classes[int(probabilities[index].argmax())]}",
            map_name=classifier.map_name,
        )
    return metrics


SALIENCY_METRICS = ("kl", "cc", "sim", "nss", "auc_judd")


def saliency_scores(tensors, cases, maps: np.ndarray) -> tuple[list[dict], dict[str, Any]]:
    """Per image KL, CC, SIM (against the gaze map) and NSS, AUC-Judd (against the fixations
    on the map's grid); with the mean and median of each over the images that have gaze."""
    from visprior.metrics.saliency import (
        auc_judd,
        correlation_coefficient,
        kl_divergence,
        normalized_scanpath_saliency,
        similarity,
    )

    rows = []
    for item, case, predicted in zip(tensors, cases, maps, strict=True):
        if not item["has_gaze"]:
            continue
        gaze = item["gaze"].numpy()
        fixated = _fixations_on_grid(case, item["original_size"].tolist(), predicted.shape)
        rows.append(
            {
                "case": case.case_id,
                "kl": kl_divergence(predicted, gaze),
                "cc": correlation_coefficient(predicted, gaze),
                "sim": similarity(predicted, gaze),
                "nss": normalized_scanpath_saliency(predicted, fixated),
                "auc_judd": auc_judd(predicted, fixated),
            }
        )
    summary: dict[str, Any] = {"images": len(rows)}
    for name in SALIENCY_METRICS:
        values = [row[name] for row in rows]
        summary[name] = {"mean": _mean(values), "median": _median(values)}
    return rows, summary


def _fixations_on_grid(case, original_size, grid) -> np.ndarray:
    """The case's fixations as (row, column) cells of ``grid``."""
    rows, cols = original_size
    x, y = case.fixations[:, 0], case.fixations[:, 1]
    r = np.minimum((y * grid[0] / rows).astype(int), grid[0] - 1)
    c = np.minimum((x * grid[1] / cols).astype(int), grid[1] - 1)
    return np.stack([r, c], axis=1)


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def _localisation(tensors, cams, labels, classes) -> dict[str, Any]:
    hits: dict[str, list[bool]] = {}
    for index, item in enumerate(tensors):
        if item["has_region"]:
            hit = localisation_hit(cams[index, labels[index]], item["region"].numpy())
            hits.setdefault(classes[labels[index]], []).append(hit)
    every = [h for values in hits.values() for h in values]
    return {
        "hit_rate": float(np.mean(every)) if every else math.nan,
        "hits_per_class": {k: [int(sum(v)), len(v)] for k, v in hits.items()},
    }


def evaluate_seeds(parent: str | os.PathLike, part: str = "test", **options) -> dict[str, Any]:
    """Evaluate every ``seed_<n>`` run under ``parent``; median and each run's AUC."""
    runs = sorted(Path(parent).glob("seed_*/split.json"))
    if not runs:
        raise FileNotFoundError(f"{parent}: no seed_<n> run folders")
    check_outputs([Path(parent) / f"seeds_{part}.json"], overwrite=options.get("overwrite", False))
    results = {p.parent.name: evaluate_run(p.parent, part, **options) for p in runs}
    summary = {
        "runs": len(results),
        "median_auc": _median([r["auc"] for r in results.values()]),
        "median_accuracy": _median([r["accuracy"] for r in results.values()]),
        "median_hit_rate": _median([r.get("hit_rate", math.nan) for r in results.values()]),
        "auc": {name: r["auc"] for name, r in results.items()},
    }
    if all("saliency" in r for r in results.values()):  # MT-UNet runs
        summary["median_saliency"] = {
            score: _median([r["saliency"][score]["mean"] for r in results.values()])
            for score in SALIENCY_METRICS
        }
    _write_json(Path(parent) / f"seeds_{part}.json", summary)
    return summary


def _median(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.median(finite)) if finite else math.nan


def format_report(metrics: dict[str, Any], classes: Sequence[str] | None = None) -> str:
    """A short table: AUC per class and macro, accuracy, hit rate, confusion matrix."""
    lines = [f"{'class':<24} {'AUC':>7}"]
    for name, auc in metrics["auc_per_class"].items():
        lines.append(f"{name:<24} {auc:>7.4f}")
    lines.append(f"{'macro':<24} {metrics['auc']:>7.4f}")
    accuracy = f"accuracy {metrics['accuracy']:.4f} on {metrics['n']} images"
    if "hit_rate" in metrics:
        accuracy += f"; localisation hit rate {metrics['hit_rate']:.4f}"
    lines.append(accuracy)
    saliency = metrics.get("saliency")
    if saliency:
        lines.append(f"saliency on {saliency['images']} images with gaze (mean / median):")
        for name in SALIENCY_METRICS:
            lines.append(
                f"  {name:<9} {saliency[name]['mean']:.4f} / {saliency[name]['median']:.4f}"
            )
    lines.append("confusion matrix (rows: true, columns: predicted):")
    names = list(classes or metrics["auc_per_class"])
    width = max(len(n) for n in names) + 2
    lines.append(" " * width + "".join(f"{n:>{width}}" for n in names))
    for name, row in zip(names, metrics["confusion_matrix"], strict=True):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>{width}}" for v in row))
    return "\n".join(lines)


def predict_images(
    classifier: CXRClassifier,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    overwrite: bool = False,
) -> Path:
    """Classify image files (or every image in given folders); write CSV and map overlays
    (``<name>_cam.png``, or ``<name>_saliency.png`` for MT-UNet).

    Raises:
        FileExistsError: an output exists (without ``overwrite``), or an output path is one
            of the inputs.
    """
    from visprior.cxr.train import load_image

    files = collect_images(inputs)
    out_dir = Path(out_dir)
    table = out_dir / "predictions.csv"
    suffix = "_saliency" if classifier.predicts_saliency else "_cam"
    overlays = [out_dir / f"{path.stem}{suffix}.png" for path in files]
    check_outputs([table, *overlays], inputs=files, overwrite=overwrite)
    if len({o.name for o in overlays}) != len(overlays):
        raise ValueError("two inputs share a file name; predict them into separate folders")
    rows = []
    for path, overlay in zip(files, overlays, strict=True):
        image = load_image(path, classifier.image_size)
        probabilities, cams = classifier(image[None])
        predicted = int(probabilities[0].argmax())
        rows.append(
            {
                "file": str(path),
                "predicted": classifier.classes[predicted],
                **{
                    f"p_{c}": f"{p:.6f}"
                    for c, p in zip(classifier.classes, probabilities[0], strict=True)
                },
            }
        )
        save_cam_overlay(
            image[0].numpy(),
            cams[0, 0 if classifier.predicts_saliency else predicted],
            overlay,
            map_name=classifier.map_name,
            title=f"{path.name}: {classifier.classes[predicted]} "
            f"(p = {probabilities[0, predicted]:.2f})",
        )
    return write_csv_rows(table, rows)


def collect_images(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    files = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in CXR_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"{item}: no .dcm/.png/.jpg file in this folder")
            files += found
        elif item.is_file():
            files.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    return files


def save_cam_overlay(
    image: np.ndarray,
    cam: np.ndarray,
    path: str | os.PathLike,
    gaze: np.ndarray | None = None,
    title: str = "",
    map_name: str = "class activation map",
) -> Path:
    """The image with a map (CAM or saliency) over it, and the gaze map beside it when given
    (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = image.shape
    upsample = lambda grid: F.interpolate(  # noqa: E731
        torch.as_tensor(grid, dtype=torch.float32)[None, None], size=size, mode="bilinear"
    )[0, 0].numpy()
    panels = 2 if gaze is None else 3
    figure, axes = plt.subplots(1, panels, figsize=(3.2 * panels, 3.4))
    axes[0].imshow(image, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("image")
    axes[1].imshow(image, cmap="gray", vmin=0, vmax=1)
    axes[1].imshow(upsample(cam), cmap="jet", alpha=0.45)
    axes[1].set_title(map_name)
    if gaze is not None:
        axes[2].imshow(image, cmap="gray", vmin=0, vmax=1)
        axes[2].imshow(upsample(gaze), cmap="jet", alpha=0.45, vmin=0, vmax=1)
        axes[2].set_title("gaze map")
    for axis in axes:
        axis.axis("off")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    plt.close(figure)
    return path


def _write_json(path: Path, values: dict[str, Any]) -> None:
    """Strict JSON: NaN (a score that does not exist) is written as null."""
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(_nan_to_none(values), indent=1))


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _write_predictions(path, cases, labels, probabilities, classifier) -> None:
    with atomic_path(path) as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "true", "predicted", *(f"p_{c}" for c in classifier.classes)])
        for case, label, p in zip(cases, labels, probabilities, strict=True):
            writer.writerow(
                [
                    case.case_id,
                    classifier.classes[label],
                    classifier.classes[int(p.argmax())],
                    *(f"{v:.6f}" for v in p),
                ]
            )
