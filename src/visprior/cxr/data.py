"""Chest X-ray datasets with radiologists' gaze: EGD-CXR and REFLACX readers, splits, tensors.

Both readers give a :class:`GazeDataset`: class names and one :class:`GazeCase` per image, with
its fixations in original-image pixels (x = column, y = row), their durations where recorded,
and the anatomy masks the localisation score needs (EGD-CXR only).

EGD-CXR (PhysioNet ``egd-cxr``) layout, with the MIMIC-CXR images elsewhere::

    egd-cxr/master_sheet.csv          dicom_id, path, Normal, CHF, pneumonia (0/1), ...
    egd-cxr/fixations.csv             DICOM_ID, X_ORIGINAL, Y_ORIGINAL, FPOGD (s), ...
    egd-cxr/eye_gaze.csv              the raw gaze samples, same coordinate columns
    egd-cxr/audio_segmentation_transcripts/<dicom_id>/heart.png, left_lung.png, right_lung.png
                                      and finding.png where a generator drew the finding's mask
    mimic-cxr/<path from master_sheet> (DICOM), or <images>/<dicom_id>.dcm|.png|.jpg

REFLACX layout::

    reflacx/main_data/metadata_phase_<n>.csv   id, dicom_id, image, image_size_x/y, labels...
    reflacx/main_data/<id>/fixations.csv       x_position, y_position,
                                               timestamp_start_fixation, timestamp_end_fixation

Example:
    >>> data = read_egd_cxr("egd-cxr", images_root="mimic-cxr")
    >>> train, val, test = split_per_class(data.cases, seed=0)
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from visprior.cxr.io import CXR_SUFFIXES
from visprior.fileio import decode_utf8

__all__ = [
    "EGD_CLASSES",
    "GazeCase",
    "GazeDataError",
    "GazeDataset",
    "read_egd_cxr",
    "read_reflacx",
    "split_per_class",
    "subsample_per_class",
]

EGD_CLASSES = ("Normal", "CHF", "pneumonia")
# Mask files per region, each read only where it exists. "finding" (the finding's own mask) is
# written by data generators only; real EGD-CXR has none.
EGD_MASKS = {
    "heart": ("heart.png",),
    "lungs": ("left_lung.png", "right_lung.png"),
    "finding": ("finding.png",),
}
# Which anatomy a class's finding lies in, for the localisation score (GG-CAM's rule).
CLASS_REGION = {"CHF": "heart", "pneumonia": "lungs"}


class GazeDataError(ValueError):
    """A dataset file that cannot be used; the message names the file and the row."""


@dataclass
class GazeCase:
    """One image with its class, fixations and anatomy masks.

    Args:
        case_id: the image's identifier (EGD-CXR / REFLACX ``dicom_id``, or REFLACX ``id``).
        image: the radiograph file.
        label: index into the dataset's classes.
        fixations: (N, 2) float array of (x, y) in original pixels, or ``None``.
        durations: (N,) fixation durations in seconds, or ``None`` (each counts once).
        masks: region name (``"heart"``, ``"lungs"``, ``"finding"``) -> mask image files,
            united; a region without files is left out.
        source: the file the fixations came from, for error messages.
        lines: each fixation's line in ``source``, for error messages.
    """

    case_id: str
    image: Path
    label: int
    fixations: np.ndarray | None = None
    durations: np.ndarray | None = None
    masks: dict[str, list[Path]] = field(default_factory=dict)
    source: str = ""
    lines: np.ndarray | None = None


@dataclass
class GazeDataset:
    classes: list[str]
    cases: list[GazeCase]

    def counts(self) -> dict[str, int]:
        """Cases per class."""
        found = np.bincount([c.label for c in self.cases], minlength=len(self.classes))
        return dict(zip(self.classes, found.tolist(), strict=True))


def read_egd_cxr(
    root: str | Path,
    images_root: str | Path | None = None,
    gaze_file: str = "fixations.csv",
    classes: Sequence[str] = EGD_CLASSES,
    masks_folder: str = "audio_segmentation_transcripts",
) -> GazeDataset:
    """Read EGD-CXR's master sheet, fixations and masks.

    Args:
        root: the EGD-CXR folder (``master_sheet.csv`` and the gaze files).
        images_root: where the images are: the MIMIC-CXR folder (the sheet's ``path`` column
            is relative to it) or a flat folder of ``<dicom_id>.dcm|.png|.jpg``; default
            ``root``.
        gaze_file: ``fixations.csv`` (duration-weighted) or ``eye_gaze.csv``.
        classes: the one-hot label columns of the master sheet, in class order.
        masks_folder: the folder of per-image anatomy masks under ``root``.

    Raises:
        GazeDataError: a missing, empty or malformed file or column, a duplicate or empty
            id, a label that is not 0 or 1, a row without exactly one class, a coordinate or
            duration that is not a finite number (or a negative duration), an image that
            cannot be found (each named with its file and row).
    """
    root = Path(root)
    images_root = root if images_root is None else Path(images_root)
    sheet_path = root / "master_sheet.csv"
    rows = _read_csv(sheet_path, required=("dicom_id", *classes))
    gaze_path = root / gaze_file
    gaze = _read_fixation_table(gaze_path)
    cases = []
    first_row: dict[str, int] = {}
    for line, row in rows:
        dicom_id = _plain_id(row["dicom_id"], f"{sheet_path}: row {line}", "dicom_id")
        where = f"{sheet_path}: row {line} (dicom_id {dicom_id})"
        if dicom_id in first_row:
            raise GazeDataError(f"{where}: duplicate dicom_id, also on row {first_row[dicom_id]}")
        first_row[dicom_id] = line
        label = _one_hot_label(row, classes, where)
        image = _find_image(images_root, dicom_id, row.get("path", ""), where)
        points, durations, lines = gaze.get(dicom_id, (None, None, None))
        mask_dir = root / masks_folder / dicom_id
        masks = {
            region: [mask_dir / name for name in names if (mask_dir / name).is_file()]
            for region, names in EGD_MASKS.items()
        }
        cases.append(
            GazeCase(
                dicom_id,
                image,
                label,
                points,
                durations,
                {k: v for k, v in masks.items() if v},
                str(gaze_path),
                lines,
            )
        )
    if not cases:
        raise GazeDataError(f"{sheet_path}: no cases")
    return GazeDataset(list(classes), cases)


def read_reflacx(
    root: str | Path,
    images_root: str | Path,
    classes: Sequence[str],
    normal_class: str | None = "Normal",
    phases: Iterable[int] = (1, 2, 3),
) -> GazeDataset:
    """Read REFLACX's metadata and per-reading fixations.

    REFLACX grades abnormalities (columns of the metadata, certainty 0-5) instead of giving one
    class. A reading's class is the column of ``classes`` with the highest certainty; readings
    where all are 0 get ``normal_class`` (or are left out when it is ``None``). Readings whose
    eye tracking was discarded are left out.

    Args:
        root: the REFLACX folder (``main_data/``).
        images_root: the MIMIC-CXR folder the metadata's ``image`` paths are relative to.
        classes: abnormality columns to classify (e.g. ``["Consolidation", "Enlarged cardiac
            silhouette"]``).
        normal_class: the name of the class of readings with none of them.
        phases: which ``metadata_phase_<n>.csv`` files to read (those that exist).

    Raises:
        GazeDataError: no metadata file; a missing, empty or malformed file or column; a
            duplicate or empty id; a grade, coordinate or time that is not a finite number;
            negative times or a fixation ending before it starts (each named with its file
            and row).
    """
    root = Path(root) / "main_data"
    images_root = Path(images_root)
    names = [*classes, normal_class] if normal_class else list(classes)
    sheets = [root / f"metadata_phase_{n}.csv" for n in phases]
    sheets = [p for p in sheets if p.is_file()]
    if not sheets:
        raise GazeDataError(f"{root}: no metadata_phase_<n>.csv file")
    cases = []
    first_row: dict[str, str] = {}
    for sheet in sheets:
        for line, row in _read_csv(sheet, required=("id", "dicom_id", "image")):
            if row.get("eye_tracking_data_discarded", "").strip().lower() == "true":
                continue
            case_id = _plain_id(row["id"], f"{sheet}: row {line}", "id")
            where = f"{sheet}: row {line} (id {case_id})"
            if case_id in first_row:
                raise GazeDataError(f"{where}: duplicate id, also on {first_row[case_id]}")
            first_row[case_id] = f"{sheet.name} row {line}"
            missing = [c for c in classes if c not in row]
            if missing:
                raise GazeDataError(f"{sheet}: no column {', '.join(map(repr, missing))}")
            grades = [_number(row[c], where, c, minimum=0) for c in classes]
            if max(grades) > 0:
                label = int(np.argmax(grades))
            elif normal_class:
                label = len(classes)
            else:
                continue
            dicom_id = _plain_id(row["dicom_id"], where, "dicom_id")
            image = _find_image(images_root, dicom_id, row["image"], where)
            fixation_file = root / case_id / "fixations.csv"
            points, durations, lines = _reflacx_fixations(fixation_file)
            cases.append(
                GazeCase(case_id, image, label, points, durations, {}, str(fixation_file), lines)
            )
    if not cases:
        raise GazeDataError(f"{root}: no usable reading")
    return GazeDataset(names, cases)


def split_per_class(
    cases: Sequence[GazeCase],
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    seed: int = 0,
) -> tuple[list[GazeCase], list[GazeCase], list[GazeCase]]:
    """Training / validation / test cases, each class split by ``fractions`` on its own.

    Deterministic for a seed; every class with at least three cases has one in each part.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1: {fractions}")
    rng = np.random.default_rng(seed)
    parts: tuple[list, list, list] = ([], [], [])
    for label in sorted({c.label for c in cases}):
        members = [c for c in cases if c.label == label]
        order = rng.permutation(len(members))
        n = len(members)
        n_val = max(1, round(fractions[1] * n)) if n >= 3 and fractions[1] > 0 else 0
        n_test = max(1, round(fractions[2] * n)) if n >= 3 and fractions[2] > 0 else 0
        n_train = n - n_val - n_test
        for index, position in enumerate(order):
            part = 0 if index < n_train else 1 if index < n_train + n_val else 2
            parts[part].append(members[position])
    return parts


# -- helpers -------------------------------------------------------------------------------------


def _read_csv(path: Path, required: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """Rows as column -> text, each with the line it starts on (the header is line 1).

    The file must be UTF-8 (a byte-order mark before the header, as Excel writes, is
    accepted); column names are stripped of spaces; blank rows are skipped; every other row
    must have the header's number of fields (extra empty fields, trailing commas, are ignored).

    Raises:
        GazeDataError: a missing, unreadable, empty or non-UTF-8 file, a missing or repeated
            column, a row with the wrong number of fields (file and row named).
    """
    if not path.is_file():
        raise GazeDataError(f"{path}: no such file")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise GazeDataError(f"{path}: cannot be read ({error.strerror or error})") from None
    text = decode_utf8(data, path, GazeDataError)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise GazeDataError(f"{path}: empty file; expected a header with {', '.join(required)}")
        header = [name.strip() for name in header]
        _check_header(path, header, required)
        rows = []
        line = reader.line_num  # where the last record ended; a quoted field may span lines
        for fields in reader:
            line, start = reader.line_num, line + 1
            if not any(value.strip() for value in fields):
                continue
            extra = fields[len(header) :]
            if len(fields) < len(header) or any(value.strip() for value in extra):
                raise GazeDataError(
                    f"{path}: row {start}: {len(fields)} fields, but the header has {len(header)}"
                )
            rows.append((start, dict(zip(header, fields, strict=False))))
    except csv.Error as error:
        raise GazeDataError(f"{path}: row {line + 1}: not valid CSV ({error})") from None
    return rows


def _check_header(path: Path, header: list[str], required: Sequence[str]) -> None:
    named = [name for name in header if name]
    repeated = sorted({name for name in named if named.count(name) > 1})
    if repeated:
        raise GazeDataError(f"{path}: column(s) {', '.join(map(repr, repeated))} appear twice")
    missing = [c for c in required if c not in header]
    if missing:
        found = ", ".join(map(repr, named[:12])) + (
            f" and {len(named) - 12} more" if named[12:] else ""
        )
        raise GazeDataError(
            f"{path}: missing column(s) {', '.join(map(repr, missing))}; found {found or 'none'}"
        )


def _plain_id(text: str, where: str, column: str) -> str:
    """An identifier that is also one file or folder name (ids name files in both layouts)."""
    value = text.strip()
    if not value:
        raise GazeDataError(f"{where}: {column} is empty")
    if "/" in value or "\\" in value or value in (".", "..") or not value.isprintable():
        raise GazeDataError(f"{where}: {column} = {value!r} is not a plain name")
    return value


def _number(text: str | None, where: str, column: str, minimum: float | None = None) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise GazeDataError(f"{where}: {column} = {text!r} is not a number") from None
    if not np.isfinite(value):
        raise GazeDataError(f"{where}: {column} = {text!r} is not a finite number")
    if minimum is not None and value < minimum:
        raise GazeDataError(f"{where}: {column} = {text!r} is below {minimum:g}")
    return value


def _one_hot_label(row: dict[str, str], classes: Sequence[str], where: str) -> int:
    flags = [_number(row[c], where, c) for c in classes]
    for name, flag in zip(classes, flags, strict=True):
        if flag not in (0, 1):
            raise GazeDataError(f"{where}: {name} = {row[name]!r} is not 0 or 1")
    chosen = [i for i, flag in enumerate(flags) if flag == 1]
    if len(chosen) != 1:
        found = ", ".join(f"{c}={row[c].strip()}" for c in classes)
        raise GazeDataError(f"{where}: expected exactly one class set, found {found}")
    return chosen[0]


def _find_image(images_root: Path, case_id: str, relative: str, where: str) -> Path:
    candidates = []
    relative = (relative or "").strip()
    if relative:
        candidate = images_root / relative
        # A sheet is data from elsewhere: its paths may not climb out of the image folder.
        # (Links inside the folder are followed: MIMIC-CXR is often linked in from a disk.)
        parts = PurePosixPath(relative.replace("\\", "/"))
        windows_drive = PureWindowsPath(relative).drive
        if parts.is_absolute() or ".." in parts.parts or windows_drive or "\x00" in relative:
            raise GazeDataError(
                f"{where}: image path {relative!r} leaves the image folder {images_root}; "
                "it was not read"
            )
        candidates.append(candidate)
    candidates += [images_root / f"{case_id}{suffix}" for suffix in CXR_SUFFIXES]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise GazeDataError(
        f"{where}: image not found (looked for {candidates[0]}"
        + (f" and {case_id}.dcm/.png/.jpg in {images_root}" if relative else "")
        + ")"
    )


Fixations = tuple[np.ndarray, np.ndarray | None, np.ndarray]  # points, durations, lines


def _read_fixation_table(path: Path) -> dict[str, Fixations]:
    """EGD-CXR gaze file -> dicom_id -> ((N, 2) points, durations or None, CSV lines)."""
    rows = _read_csv(path, required=("DICOM_ID", "X_ORIGINAL", "Y_ORIGINAL"))
    timed = bool(rows) and "FPOGD" in rows[0][1]
    grouped: dict[str, tuple[list, list, list]] = {}
    for line, row in rows:
        where = f"{path}: row {line}"
        x = _number(row["X_ORIGINAL"], where, "X_ORIGINAL")
        y = _number(row["Y_ORIGINAL"], where, "Y_ORIGINAL")
        dicom_id = _plain_id(row["DICOM_ID"], where, "DICOM_ID")
        points, durations, lines = grouped.setdefault(dicom_id, ([], [], []))
        points.append((x, y))
        lines.append(line)
        if timed:
            durations.append(_number(row["FPOGD"], where, "FPOGD", minimum=0))
    return {
        key: (
            np.asarray(p, dtype=np.float64),
            np.asarray(d, dtype=np.float64) if timed else None,
            np.asarray(n, dtype=np.int64),
        )
        for key, (p, d, n) in grouped.items()
    }


def _reflacx_fixations(path: Path) -> Fixations:
    columns = ("x_position", "y_position", "timestamp_start_fixation", "timestamp_end_fixation")
    rows = _read_csv(path, required=columns)
    values = np.zeros((len(rows), 4), dtype=np.float64)
    for index, (line, row) in enumerate(rows):
        where = f"{path}: row {line}"
        x, y = (_number(row[c], where, c) for c in columns[:2])
        start, end = (_number(row[c], where, c, minimum=0) for c in columns[2:])
        if end < start:
            raise GazeDataError(
                f"{where}: timestamp_end_fixation {end:g} is before "
                f"timestamp_start_fixation {start:g}"
            )
        values[index] = (x, y, start, end)
    lines = np.asarray([line for line, _ in rows], dtype=np.int64)
    return values[:, :2], values[:, 3] - values[:, 2], lines


def subsample_per_class(
    cases: Sequence[GazeCase], fraction: float, seed: int = 0
) -> list[GazeCase]:
    """``fraction`` of each class's cases (at least one), drawn with ``seed``, in their order.

    Raises:
        ValueError: a fraction outside (0, 1].
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"train_fraction must lie in (0, 1], got {fraction}")
    if fraction == 1:
        return list(cases)
    rng = np.random.default_rng(seed)
    kept: set[int] = set()
    for label in sorted({c.label for c in cases}):
        members = [i for i, c in enumerate(cases) if c.label == label]
        count = max(1, round(fraction * len(members)))
        kept.update(members[i] for i in rng.permutation(len(members))[:count])
    return [case for i, case in enumerate(cases) if i in kept]
