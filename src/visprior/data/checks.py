"""``check_dataset``: every image and label of a dataset opened, and every problem reported at
once (``format_problems`` prints them), as ``visprior seg check`` shows them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from visprior.data.dataset import (
    DatasetProblem,
    ProblemList,
    SegmentationCase,
    SegmentationDataset,
    _plural,
    _printable,
    _Problems,
    _scan,
)
from visprior.data.volumes import _load_volume, _VolumeProblem

_AFFINE_ATOL = 1e-3


@dataclass
class _Volume:
    path: Path
    data: np.ndarray
    affine: np.ndarray | None


def check_dataset(root: str | os.PathLike) -> ProblemList:
    """Check a dataset thoroughly, opening every image and label, and report every problem.

    Structure: missing/invalid ``dataset.json`` or keys, missing files, ``numTraining`` not
    matching, files belonging to no case or with a wrong channel suffix, paths or symlinks leaving
    the folder and folders, pipes or devices in place of files (never read). Content: headers that
    cannot be right (see :func:`check_volume_header`; judged before any voxel is read),
    unreadable files (a gzip file is decompressed to its end, so that its CRC is verified),
    image/label shape or affine mismatch, channels that disagree, undeclared (negative included)
    or non-integer label values, empty labels, NaN/Inf image voxels. It never raises.

    Args:
        root: the dataset folder.

    Returns:
        Every problem found (empty when the dataset is clean), with ``num_cases`` set to the
        number of cases checked (None when ``dataset.json`` could not be used).
    """
    dataset, problems = _scan(Path(root))
    if dataset is None:
        return ProblemList(problems)
    cases = dataset.training + dataset.test
    for case in cases:
        problems.extend(_check_case(case, dataset))
    return ProblemList(problems, num_cases=len(cases))


def _check_case(case: SegmentationCase, dataset: SegmentationDataset) -> _Problems:
    problems = _Problems(dataset.root)
    per_file = 1 if dataset.layout == "nnunet" else dataset.num_channels
    geometry = []  # (path, spatial shape, affine) of each readable image
    for path in case.images:
        volume = _read(path, case.name, problems)
        if volume is not None:
            shape = _spatial_shape(volume, per_file, case.name, problems)
            geometry.append((path, shape, volume.affine))
            _check_finite(volume, case.name, problems)
    _check_channels(geometry, case.name, problems)
    label = _read(case.label, case.name, problems) if case.label is not None else None
    if label is not None:
        if geometry:
            _check_geometry(label, geometry[0], case.name, problems)
        _check_label_values(label, dataset.labels, case.name, problems)
    return problems


def _read(path: Path, case: str, problems: _Problems) -> _Volume | None:
    """Load a NIfTI (or any nibabel format); None if it is missing (already reported) or broken."""
    if not path.is_file():
        return None
    try:
        image, data = _load_volume(path, verify_checksum=True)
    except _VolumeProblem as problem:
        problems.add(problem.kind, f"cannot read {problems.rel(path)}: {problem.text}", case, path)
        return None
    return _Volume(path, data, image.affine)


def _spatial_shape(volume: _Volume, channels: int, case: str, problems: _Problems) -> tuple:
    """The first three axes; the file must be 3D, or 4D with ``channels`` on the last axis."""
    shape = volume.data.shape
    expected = "3D" if channels == 1 else f"4D with {channels} channels on the last axis"
    if not (len(shape) == 3 if channels == 1 else len(shape) == 4 and shape[3] == channels):
        message = f"{problems.rel(volume.path)} has shape {shape}, expected {expected}"
        problems.add("channel-mismatch", message, case, volume.path)
    return tuple(shape[:3])


def _check_finite(volume: _Volume, case: str, problems: _Problems) -> None:
    if volume.data.dtype.kind not in "fc":
        return
    nan, inf = int(np.isnan(volume.data).sum()), int(np.isinf(volume.data).sum())
    if nan or inf:
        message = f"{problems.rel(volume.path)} has {nan} NaN and {inf} Inf voxels"
        problems.add("non-finite", message, case, volume.path)


def _check_channels(geometry: list, case: str, problems: _Problems) -> None:
    """Every channel of a case must share the first channel's shape and affine."""
    if not geometry:
        return
    first_path, first_shape, first_affine = geometry[0]
    first = problems.rel(first_path)
    for path, shape, affine in geometry[1:]:
        if shape != first_shape:
            message = f"{problems.rel(path)} has shape {shape} but {first} has {first_shape}"
            problems.add("channel-mismatch", message, case, path)
        elif not _same_affine(affine, first_affine):
            message = f"{problems.rel(path)} and {first} have different affines"
            problems.add("channel-mismatch", message, case, path)


def _check_geometry(label: _Volume, reference: tuple, case: str, problems: _Problems) -> None:
    """The label must have its image's spatial shape and affine."""
    image_path, image_shape, image_affine = reference
    label_name, image_name = problems.rel(label.path), problems.rel(image_path)
    if label.data.shape != image_shape:
        shapes = f"shape {label.data.shape} but image {image_name} has {image_shape}"
        message = f"label {label_name} has {shapes}"
        problems.add("shape-mismatch", message, case, label.path)
    if not _same_affine(label.affine, image_affine):
        message = f"label {label_name} and image {image_name} have different affines"
        if label.affine is not None and image_affine is not None:
            difference = np.abs(np.asarray(label.affine) - np.asarray(image_affine)).max()
            message += f" (largest difference {difference:.4g})"
        problems.add("affine-mismatch", message, case, label.path)


def _same_affine(first: np.ndarray | None, second: np.ndarray | None) -> bool:
    if first is None or second is None:
        return first is None and second is None
    return np.shape(first) == np.shape(second) and np.allclose(first, second, atol=_AFFINE_ATOL)


def _check_label_values(label: _Volume, labels: dict[str, int], case: str, problems: _Problems):
    name = problems.rel(label.path)
    if label.data.dtype.kind not in "biuf":  # RGB or complex voxels: no label values at all
        message = f"label {name} has voxels of type {label.data.dtype}, not numbers"
        problems.add("non-integer-label", message, case, label.path)
        return
    values = np.unique(label.data)
    integral = np.isclose(values, np.round(values))
    if not integral.all():
        message = f"label {name} has non-integer values: {_show(values[~integral])}"
        problems.add("non-integer-label", message, case, label.path)
    declared = set(labels.values())
    undeclared = [v for v in np.round(values[integral]).astype(np.int64) if v not in declared]
    if undeclared:
        message = (
            f"label {name} has values not declared in dataset.json labels: {_show(undeclared)}"
        )
        problems.add("undeclared-label", message, case, label.path)
    if values.size and not np.any(values):
        problems.add("empty-label", f"label {name} contains only background (0)", case, label.path)


def _show(values: Iterable, limit: int = 10) -> str:
    values = list(values)
    shown = ", ".join(f"{value:g}" for value in values[:limit])
    return shown + (f", ... ({len(values) - limit} more)" if len(values) > limit else "")


def format_problems(problems: Iterable[DatasetProblem], num_cases: int | None = None) -> str:
    """A terminal report: dataset-wide problems, then one block per case, then a count line.

    Args:
        problems: as returned by :func:`check_dataset`.
        num_cases: number of cases checked, for the all-clear line; defaults to
            ``problems.num_cases`` when ``problems`` is a :class:`ProblemList`.

    Returns:
        Lines such as ``case_001:`` / ``  label labelsTr/case_001.nii.gz is missing
        [missing-file]``, ending with ``"3 problems in 2 cases"`` or
        ``"no problems found in 12 cases"``.
    """
    num_cases = num_cases if num_cases is not None else getattr(problems, "num_cases", None)
    groups: dict[str | None, list[DatasetProblem]] = {}
    for problem in sorted(problems, key=lambda p: p.case is not None):
        groups.setdefault(problem.case, []).append(problem)
    lines = []
    for case, found in groups.items():
        lines.append("dataset:" if case is None else f"{_printable(case)}:")
        lines.extend(f"  {problem.message} [{problem.kind}]" for problem in found)
    lines.append(_count_line(groups, num_cases))
    return "\n".join(lines)


def _count_line(groups: dict[str | None, list[DatasetProblem]], num_cases: int | None) -> str:
    """``"3 problems in 2 cases"``, ``"4 problems: 3 in 2 cases, 1 dataset-wide"``, ..."""
    wide = len(groups.get(None, []))
    in_cases = sum(len(found) for case, found in groups.items() if case is not None)
    cases = _plural(len(groups) - (None in groups), "case")
    if not wide and not in_cases:
        return "no problems found" + (f" in {_plural(num_cases, 'case')}" if num_cases else "")
    if not wide:
        return f"{_plural(in_cases, 'problem')} in {cases}"
    if not in_cases:
        return f"{_plural(wide, 'problem')}, dataset-wide"
    return f"{_plural(wide + in_cases, 'problem')}: {in_cases} in {cases}, {wide} dataset-wide"
