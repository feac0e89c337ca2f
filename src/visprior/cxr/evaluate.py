"""``visprior cxr evaluate``: scores, CAMs and overlays of a trained run.

``evaluate`` scores a trained run on a part of its own split (the test part by default):
macro, per-class and worst-class one-vs-rest ROC-AUC, accuracy, the confusion matrix and the
localisation hit rate, written as ``metrics.json`` and ``predictions.csv`` beside CAM overlay
PNGs (image, true class's CAM, gaze map). Where cases have a mask of their finding
(``finding.png``, written by data generators), a CAM classifier is also scored against it: the
pointing game and the IoU of the thresholded CAM. Given a folder of ``seed_<n>`` runs, it
scores each and reports the medians.

Prediction on radiograph files, and the classifier loader both use, are ``cxr/predict.py``'s
(re-exported here).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from visprior.cxr.dataset import GazeImageDataset, load_cxr_dataset
from visprior.cxr.predict import (
    CXRClassifier,
    load_classifier,
    predict_images,
    save_cam_overlay,
)
from visprior.fileio import atomic_path, check_outputs, write_csv_rows, write_json
from visprior.metrics.classification import (
    classification_metrics,
    localisation_hit,
    mask_iou,
    pointing_hit,
    threshold_map,
)
from visprior.metrics.saliency import (
    auc_judd,
    correlation_coefficient,
    kl_divergence,
    normalized_scanpath_saliency,
    similarity,
)

__all__ = [
    "CXRClassifier",
    "evaluate_run",
    "evaluate_seeds",
    "finding_scores",
    "format_report",
    "format_seed_summary",
    "load_classifier",
    "predict_images",
]


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
        The metrics (also in ``metrics.json``): a CAM classifier's with ``hit_rate`` and
        ``hits_per_class``, and where a case of the part has a finding mask,
        ``finding_hit_rate``, ``finding_hits_per_class``, ``finding_iou`` and
        ``finding_cases`` (see :func:`finding_scores`); MT-UNet's with ``saliency``.
    """
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
        metrics.update(finding_scores(tensors, cams, labels, classifier.classes))
    metrics.update({"part": part, "checkpoint": classifier.source})

    # Everything is computed: an error above leaves no file of this evaluation behind.
    if per_image:
        write_csv_rows(out_dir / "saliency_per_image.csv", per_image, ["case", *SALIENCY_METRICS])
    write_json(out_dir / "metrics.json", metrics)
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


def finding_scores(tensors, cams: np.ndarray, labels: np.ndarray, classes) -> dict[str, Any]:
    """The true class's CAM against the finding mask, over the cases that have one (none: an
    empty dict). Each CAM is upsampled bilinearly to the input size first (as the overlays
    draw it).

    - ``finding_hit_rate``: the pointing game, the CAM's peak inside the mask dilated by one
      CAM cell (image_size / grid pixels: the CAM cannot point more finely than that);
      ``finding_hits_per_class``: class -> [hits, cases].
    - ``finding_iou``: the mean IoU of the CAM thresholded at half its range with the mask.
    - ``finding_cases``: how many cases were scored.
    """
    hits: dict[str, list[bool]] = {}
    overlaps = []
    for index, item in enumerate(tensors):
        if not item["has_finding"]:
            continue
        mask = item["finding"].numpy()
        cam = cams[index, labels[index]]
        upsampled = F.interpolate(
            torch.as_tensor(cam, dtype=torch.float32)[None, None],
            size=mask.shape,
            mode="bilinear",
            align_corners=False,
        )[0, 0].numpy()
        cell = max(mask.shape[0] / cam.shape[0], mask.shape[1] / cam.shape[1])
        hit = pointing_hit(upsampled, mask, tolerance=cell)
        hits.setdefault(classes[labels[index]], []).append(hit)
        overlaps.append(mask_iou(threshold_map(upsampled, 0.5), mask))
    if not overlaps:
        return {}
    every = [h for values in hits.values() for h in values]
    return {
        "finding_hit_rate": float(np.mean(every)),
        "finding_hits_per_class": {k: [int(sum(v)), len(v)] for k, v in hits.items()},
        "finding_iou": float(np.mean(overlaps)),
        "finding_cases": len(overlaps),
    }


def evaluate_seeds(
    parent: str | os.PathLike,
    part: str = "test",
    out_dir: str | os.PathLike | None = None,
    **options,
) -> dict[str, Any]:
    """Evaluate every ``seed_<n>`` run under ``parent``; the medians over the runs of the
    scores (those of the finding masks where a run has them) and each run's AUC.

    ``out_dir``: where to write (each run's scores in ``<out_dir>/seed_<n>``, the summary
    beside them); default each run's own folder and ``parent``.
    """
    runs = sorted(Path(parent).glob("seed_*/split.json"))
    if not runs:
        raise FileNotFoundError(f"{parent}: no seed_<n> run folders")
    summary_dir = Path(out_dir) if out_dir else Path(parent)
    check_outputs([summary_dir / f"seeds_{part}.json"], overwrite=options.get("overwrite", False))
    results = {
        p.parent.name: evaluate_run(
            p.parent, part, out_dir=Path(out_dir) / p.parent.name if out_dir else None, **options
        )
        for p in runs
    }
    summary = {
        "runs": len(results),
        "median_auc": _median([r["auc"] for r in results.values()]),
        "median_accuracy": _median([r["accuracy"] for r in results.values()]),
        "median_hit_rate": _median([r.get("hit_rate", math.nan) for r in results.values()]),
        "median_worst_class_auc": _median(
            [r.get("worst_class_auc", math.nan) for r in results.values()]
        ),
        "auc": {name: r["auc"] for name, r in results.items()},
    }
    for score in ("finding_iou", "finding_hit_rate"):
        if any(score in r for r in results.values()):
            summary[f"median_{score}"] = _median([r.get(score, math.nan) for r in results.values()])
    if all("saliency" in r for r in results.values()):  # MT-UNet runs
        summary["median_saliency"] = {
            score: _median([r["saliency"][score]["mean"] for r in results.values()])
            for score in SALIENCY_METRICS
        }
    write_json(summary_dir / f"seeds_{part}.json", summary)
    return summary


def _median(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.median(finite)) if finite else math.nan


def format_report(metrics: dict[str, Any], classes: Sequence[str] | None = None) -> str:
    """A short table: AUC per class, macro and worst, accuracy, hit rate, the finding scores,
    confusion matrix."""
    lines = [f"{'class':<24} {'AUC':>7}"]
    for name, auc in metrics["auc_per_class"].items():
        lines.append(f"{name:<24} {auc:>7.4f}")
    lines.append(f"{'macro':<24} {metrics['auc']:>7.4f}")
    if "worst_class_auc" in metrics:
        lines.append(f"{'worst class':<24} {metrics['worst_class_auc']:>7.4f}")
    accuracy = f"accuracy {metrics['accuracy']:.4f} on {metrics['n']} images"
    if "hit_rate" in metrics:
        accuracy += f"; localisation hit rate {metrics['hit_rate']:.4f}"
    lines.append(accuracy)
    if "finding_iou" in metrics:
        lines.append(
            f"finding masks ({metrics['finding_cases']} images): pointing hit rate "
            f"{metrics['finding_hit_rate']:.4f} (one CAM cell of tolerance), CAM IoU "
            f"{metrics['finding_iou']:.4f}"
        )
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


def format_seed_summary(summary: dict[str, Any]) -> str:
    """:func:`evaluate_seeds`' summary: each run's AUC, then the medians over the runs."""
    lines = [f"{name}: macro AUC {auc:.4f}" for name, auc in summary["auc"].items()]
    lines.append(
        f"median over {summary['runs']} runs: AUC {summary['median_auc']:.4f}, accuracy "
        f"{summary['median_accuracy']:.4f}, hit rate {summary['median_hit_rate']:.4f}, "
        f"worst-class AUC {summary['median_worst_class_auc']:.4f}"
    )
    if "median_finding_iou" in summary:
        lines.append(
            f"median on the finding masks: pointing {summary['median_finding_hit_rate']:.4f}, "
            f"IoU {summary['median_finding_iou']:.4f}"
        )
    for score, value in summary.get("median_saliency", {}).items():
        lines.append(f"median {score}: {value:.4f}")
    return "\n".join(lines)


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
