"""Evaluate 3D label maps: Dice, 95th-percentile Hausdorff distance and normalised surface Dice.

The metrics themselves come from MONAI (``compute_dice``, ``compute_hausdorff_distance``,
``compute_surface_dice``); NIfTI files are read with nibabel. This module does the bookkeeping:
pairing files by case, checking geometry, naming each class's status, averaging over cases and
writing ``per_case.csv`` / ``summary.json``.

A class gets one of four statuses per case:

* ``"present"``: in both the label and the prediction; MONAI computes all three metrics.
* ``"missed"``: only in the label: Dice 0, NSD 0, HD95 ``None`` (undefined).
* ``"false-positive"``: only in the prediction: Dice 0, NSD 0, HD95 ``None``.
* ``"absent"``: in neither: every metric ``None``, and the case is left out of the class's mean.

MONAI returns NaN for these empty-mask cases (Dice NaN when the label is empty, HD95 NaN
whenever either mask is empty), so the status is decided from the masks first and MONAI is only
called for present classes: no NaN or inf reaches a row.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice

from visprior.data.volumes import read_volume
from visprior.fileio import atomic_path, check_outputs, nifti_stem

__all__ = [
    "STATUSES",
    "EvaluationResult",
    "evaluate_case",
    "evaluate_folder",
    "format_table",
    "summarize",
]

STATUSES = ("present", "missed", "false-positive", "absent")
METRICS = ("dice", "hd95", "nsd")
CSV_COLUMNS = ("case", "class", "value", "dice", "hd95", "nsd", "status")
OUTPUT_FILES = ("per_case.csv", "summary.json")
HD_PERCENTILE = 95


@dataclass
class EvaluationResult:
    """What :func:`evaluate_folder` found.

    Attributes:
        rows: one dict per case and class, with keys ``case`` plus those of
            :func:`evaluate_case`'s rows.
        summary: per-class statistics, ``mean_foreground_dice`` and the settings, as written to
            ``summary.json``.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def mean_foreground_dice(self) -> float | None:
        """Mean over classes of each class's mean Dice; ``None`` if no class was ever seen."""
        return self.summary.get("mean_foreground_dice")


# --------------------------------------------------------------------------------------------
# One case
# --------------------------------------------------------------------------------------------


def _status(in_prediction: bool, in_label: bool) -> str:
    if in_label:
        return "present" if in_prediction else "missed"
    return "false-positive" if in_prediction else "absent"


def _present_metrics(
    pred: np.ndarray, label: np.ndarray, spacing: tuple[float, ...], tolerance: float
) -> dict[str, float]:
    """MONAI's three metrics for one class that both masks contain."""
    y_pred = torch.from_numpy(np.ascontiguousarray(pred))[None, None]
    y = torch.from_numpy(np.ascontiguousarray(label))[None, None]
    with warnings.catch_warnings():
        # Deprecated argument used inside MONAI's own edge extraction; nothing to act on here.
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*")
        dice = compute_dice(y_pred, y, include_background=True)
        hd95 = compute_hausdorff_distance(
            y_pred, y, include_background=True, percentile=HD_PERCENTILE, spacing=spacing
        )
        nsd = compute_surface_dice(
            y_pred, y, class_thresholds=[tolerance], include_background=True, spacing=spacing
        )
    return {"dice": float(dice), "hd95": float(hd95), "nsd": float(nsd)}


def _check_case_inputs(prediction: np.ndarray, label: np.ndarray, spacing: Sequence[float]) -> None:
    if prediction.shape != label.shape:
        raise ValueError(
            f"prediction shape {prediction.shape} does not match label shape {label.shape}"
        )
    if label.ndim != 3:
        raise ValueError(f"expected 3D label maps, got shape {label.shape}")
    if len(spacing) != label.ndim or any(float(s) <= 0 for s in spacing):
        raise ValueError(f"spacing {tuple(spacing)} must hold {label.ndim} positive voxel sizes")


def evaluate_case(
    prediction: np.ndarray,
    label: np.ndarray,
    spacing: Sequence[float],
    classes: Mapping[str, int],
    nsd_tolerance_mm: float = 1.0,
) -> list[dict[str, Any]]:
    """Score one predicted label map against its reference, class by class.

    Args:
        prediction: integer label map, shape ``(X, Y, Z)``.
        label: reference label map of the same shape.
        spacing: voxel size in mm along each axis; HD95 is in mm and NSD's tolerance too.
        classes: class name -> label value; values <= 0 (background) are skipped.
        nsd_tolerance_mm: distance within which surface points count as agreeing for NSD.

    Returns:
        One dict per foreground class with keys ``class``, ``value``, ``dice``, ``hd95``,
        ``nsd`` and ``status`` (see the module docstring for what each status means).

    Raises:
        ValueError: if the shapes differ, the maps are not 3D or ``spacing`` does not fit.
    """
    prediction, label = np.asarray(prediction), np.asarray(label)
    _check_case_inputs(prediction, label, spacing)
    spacing = tuple(float(s) for s in spacing)
    rows = []
    for name, value in classes.items():
        value = int(value)
        if value <= 0:
            continue
        pred_mask, label_mask = prediction == value, label == value
        status = _status(bool(pred_mask.any()), bool(label_mask.any()))
        if status == "present":
            metrics = _present_metrics(pred_mask, label_mask, spacing, float(nsd_tolerance_mm))
        elif status == "absent":
            metrics = dict.fromkeys(METRICS)
        else:
            metrics = {"dice": 0.0, "hd95": None, "nsd": 0.0}
        rows.append({"class": name, "value": value, **metrics, "status": status})
    return rows


# --------------------------------------------------------------------------------------------
# A folder of cases
# --------------------------------------------------------------------------------------------


def _nifti_files(folder: Path) -> dict[str, Path]:
    """Case name -> file for every ``*.nii.gz`` / ``*.nii`` in ``folder`` (not recursive)."""
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a directory")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        case = nifti_stem(path.name)
        if case is None or not path.is_file():
            continue
        if case in files:
            raise ValueError(
                f"case {case!r} appears twice in {folder}: {files[case].name}, {path.name}"
            )
        files[case] = path
    return files


def _pair_cases(pred_dir: Path, label_dir: Path) -> list[tuple[str, Path, Path]]:
    preds, labels = _nifti_files(pred_dir), _nifti_files(label_dir)
    # `seg predict --probabilities` writes {case}_probabilities beside {case}: not a label map.
    suffix = "_probabilities"
    preds = {
        c: p for c, p in preds.items() if not (c.endswith(suffix) and c[: -len(suffix)] in preds)
    }
    no_pred = sorted(set(labels) - set(preds))
    no_label = sorted(set(preds) - set(labels))
    problems = []
    if no_pred:
        problems.append(f"labels without a prediction in {pred_dir}: {', '.join(no_pred)}")
    if no_label:
        problems.append(f"predictions without a label in {label_dir}: {', '.join(no_label)}")
    if problems:
        raise ValueError("; ".join(problems))
    if not labels:
        raise ValueError(f"no .nii.gz / .nii label files in {label_dir}")
    return [(case, preds[case], labels[case]) for case in sorted(labels)]


def _read_label_map(path: Path, case: str, role: str) -> tuple[Any, np.ndarray]:
    """A label map as integers, its header checked before its voxels are read.

    Raises:
        DatasetError: the file cannot be read (see ``visprior.data.volumes.read_volume``).
        ValueError: it holds non-numeric, non-integer, NaN or negative values; the message
            names the case, the file and the values.
    """
    # a damaged file that still decompresses would be scored silently
    image, data = read_volume(path, case, verify_checksum=True)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.dtype.kind not in "biuf":  # RGB or complex voxels
        raise ValueError(f"case {case!r}: the {role} {path} holds voxels of type {data.dtype}")
    if np.issubdtype(data.dtype, np.floating):
        rounded = np.rint(data)
        wrong = ~np.isclose(rounded, data, rtol=0, atol=1e-3)  # NaN too
        if wrong.any():
            raise ValueError(
                f"case {case!r}: the {role} {path} holds non-integer values: "
                f"{_show_values(data[wrong])}"
            )
        data = rounded
    if data.size and data.min() < 0:
        negative = _show_values(data[data < 0])
        raise ValueError(f"case {case!r}: the {role} {path} holds negative values: {negative}")
    return image, data.astype(np.int64, copy=False)


def _show_values(values: np.ndarray, limit: int = 10) -> str:
    unique = np.unique(values)
    shown = ", ".join(f"{value:g}" for value in unique[:limit])
    return shown + (f", ... ({unique.size - limit} more)" if unique.size > limit else "")


def _check_declared(
    case: str, path: Path, role: str, data: np.ndarray, classes: Mapping[str, int]
) -> None:
    """Refuse label values that are neither background nor one of ``classes``: they would
    silently count as background for every class."""
    undeclared = np.setdiff1d(np.unique(data), [0, *classes.values()])
    if undeclared.size:
        raise ValueError(
            f"case {case!r}: the {role} {path} holds values not among the classes evaluated "
            f"({', '.join(map(str, classes.values()))}): {_show_values(undeclared)}"
        )


def _load_pair(
    case: str, pred_path: Path, label_path: Path
) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Load one case's prediction and label; check they share a grid; return arrays + spacing."""
    pred_img, pred = _read_label_map(pred_path, case, "prediction")
    label_img, label = _read_label_map(label_path, case, "label")
    if pred.shape != label.shape:
        raise ValueError(
            f"case {case!r}: prediction shape {pred.shape} != label shape {label.shape}"
        )
    if not np.allclose(pred_img.affine, label_img.affine, atol=1e-3):
        raise ValueError(
            f"case {case!r}: prediction affine\n{pred_img.affine}\n"
            f"does not match label affine\n{label_img.affine}"
        )
    spacing = tuple(float(z) for z in label_img.header.get_zooms()[:3])
    return pred, label, spacing


def _classes_from_labels(cases: Sequence[tuple[str, Path, Path]]) -> dict[str, int]:
    values: set[int] = set()
    for case, _, path in cases:
        values.update(int(v) for v in np.unique(_read_label_map(path, case, "label")[1]) if v > 0)
    return {f"class_{v}": v for v in sorted(values)}


def _foreground_classes(classes: Mapping[str, int]) -> dict[str, int]:
    """Keep foreground entries, e.g. of a dataset.json ``labels`` mapping with a background."""
    return {str(name): int(value) for name, value in classes.items() if int(value) > 0}


def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"mean": None, "std": None, "n": 0}
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std()), "n": len(values)}


def _class_summary(rows: list[dict[str, Any]], name: str, value: int) -> dict[str, Any]:
    own = [row for row in rows if row["class"] == name]
    seen = [row for row in own if row["status"] != "absent"]
    summary: dict[str, Any] = {"value": value}
    for metric in METRICS:
        summary[metric] = _stats([row[metric] for row in seen if row[metric] is not None])
    summary["counts"] = {status: sum(row["status"] == status for row in own) for status in STATUSES}
    return summary


def summarize(
    rows: list[dict[str, Any]], classes: Mapping[str, int], settings: Mapping[str, Any]
) -> dict[str, Any]:
    """Per-class mean/std (population) and status counts, plus the mean foreground Dice.

    A class's statistics cover the cases where it is present, missed or a false positive; the
    mean foreground Dice averages the classes' mean Dice over the classes seen at least once.
    """
    per_class = {name: _class_summary(rows, name, value) for name, value in classes.items()}
    class_means = [c["dice"]["mean"] for c in per_class.values() if c["dice"]["mean"] is not None]
    return {
        "mean_foreground_dice": float(np.mean(class_means)) if class_means else None,
        "classes": per_class,
        "num_cases": len({row["case"] for row in rows}),
        "settings": dict(settings),
    }


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def _write_outputs(out_dir: Path, rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / OUTPUT_FILES[0]) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        writer.writerows([_csv_cell(row[key]) for key in CSV_COLUMNS] for row in rows)
    with atomic_path(out_dir / OUTPUT_FILES[1]) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")


def evaluate_folder(
    pred_dir: str | os.PathLike,
    label_dir: str | os.PathLike,
    classes: Mapping[str, int] | None = None,
    out_dir: str | os.PathLike | None = None,
    nsd_tolerance_mm: float = 1.0,
    overwrite: bool = False,
) -> EvaluationResult:
    """Evaluate every prediction in ``pred_dir`` against the label of the same case name.

    Files are ``*.nii.gz`` or ``*.nii``; the case name is the file name without that extension.
    The voxel spacing comes from each label's header.

    Args:
        pred_dir: folder of predicted label maps.
        label_dir: folder of reference label maps.
        classes: class name -> label value (a dataset.json ``labels`` mapping works; values <= 0
            are dropped). Default: every value > 0 found in any label, named ``class_<v>``.
        out_dir: if given, ``per_case.csv`` and ``summary.json`` are written there (atomically).
            Nothing is ever written into ``pred_dir`` or ``label_dir`` unless named here.
        nsd_tolerance_mm: NSD tolerance in mm.
        overwrite: replace an earlier ``per_case.csv`` / ``summary.json`` in ``out_dir``.

    Returns:
        The per-case rows and the summary.

    Raises:
        ValueError: if a case lacks its prediction or label (the cases are listed), if a
            prediction's shape or affine differs from its label's, if no labels are found, or
            if a label map holds non-integer or negative values, or values that are neither 0
            nor in ``classes`` (the case, file and values are named).
        DatasetError: a file cannot be read (a ValueError too; the case and file are named).
        FileExistsError: an earlier evaluation is in ``out_dir`` and ``overwrite`` is false.
    """
    pred_dir, label_dir = Path(pred_dir), Path(label_dir)
    if out_dir is not None:
        check_outputs([Path(out_dir) / name for name in OUTPUT_FILES], overwrite=overwrite)
    cases = _pair_cases(pred_dir, label_dir)
    if classes is None:
        classes = _classes_from_labels(cases)
    classes = _foreground_classes(classes)
    rows = []
    for case, pred_path, label_path in cases:
        pred, label, spacing = _load_pair(case, pred_path, label_path)
        _check_declared(case, label_path, "label", label, classes)
        _check_declared(case, pred_path, "prediction", pred, classes)
        for row in evaluate_case(pred, label, spacing, classes, nsd_tolerance_mm):
            rows.append({"case": case, **row})
    settings = {
        "pred_dir": str(pred_dir),
        "label_dir": str(label_dir),
        "classes": classes,
        "nsd_tolerance_mm": float(nsd_tolerance_mm),
        "hd_percentile": HD_PERCENTILE,
        "spacing_source": "label header zooms",
        "std": "population (ddof=0)",
    }
    summary = summarize(rows, classes, settings)
    if out_dir is not None:
        _write_outputs(Path(out_dir), rows, summary)
    return EvaluationResult(rows=rows, summary=summary)


# --------------------------------------------------------------------------------------------
# A readable table
# --------------------------------------------------------------------------------------------


def _mean_std(stats: Mapping[str, Any], digits: int) -> str:
    if stats["mean"] is None:
        return "-"
    return f"{stats['mean']:.{digits}f}±{stats['std']:.{digits}f}"


def _counts(counts: Mapping[str, int]) -> str:
    return "/".join(str(counts[status]) for status in STATUSES)


def format_table(result: EvaluationResult) -> str:
    """A fixed-width table: one row per class, then the mean foreground Dice.

    Counts read present/missed/false-positive/absent; a class absent from every case shows
    ``absent`` instead of metrics.
    """
    header = ("class", "value", "Dice", "HD95 (mm)", "NSD", "pres/miss/fp/abs")
    lines = []
    for name, info in result.summary["classes"].items():
        if info["dice"]["n"] == 0:
            metrics = ("absent", "absent", "absent")
        else:
            metrics = tuple(_mean_std(info[m], 2 if m == "hd95" else 4) for m in METRICS)
        lines.append((name, str(info["value"]), *metrics, _counts(info["counts"])))
    mean = result.mean_foreground_dice
    lines.append(("mean foreground", "", "-" if mean is None else f"{mean:.4f}", "", "", ""))
    widths = [max(len(row[i]) for row in (header, *lines)) for i in range(len(header))]
    rule = "  ".join("-" * w for w in widths)
    text = [_table_line(header, widths), rule]
    text += [_table_line(row, widths) for row in lines[:-1]]
    text += [rule, _table_line(lines[-1], widths)]
    return "\n".join(text)


def _table_line(cells: Sequence[str], widths: Sequence[int]) -> str:
    first = cells[0].ljust(widths[0])
    rest = [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
    return "  ".join([first, *rest]).rstrip()
