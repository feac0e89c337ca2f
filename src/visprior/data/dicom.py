"""DICOM series as volumes: found in folders, checked from their headers, read in slice order.

A series is the files sharing a SeriesInstanceUID. Its slices are sorted by their position
along the slice normal (InstanceNumber is not used: scanners number in either direction, or by
acquisition time), each slice's stored values pass through its rescale slope and intercept
(the modality LUT), and the grid comes from ImageOrientationPatient, ImagePositionPatient and
PixelSpacing, turned from DICOM's LPS into RAS as nibabel and MONAI do. The voxel array is
(columns, rows, slices), the layout of MONAI's ``PydicomReader``, so a series and a NIfTI
file converted from it share one voxel grid.

Before any pixel is decoded, each series is checked from its headers, and each refusal is one
line naming the series:

- one orientation, image size and pixel spacing (a localizer or a second reconstruction that
  shares the series UID makes a mixed series);
- no two slices at one position (several phases, echoes or time points in one series);
- equal steps between neighbouring slices: a gap of whole steps means missing slices, any
  other difference unequal spacing.

Multi-frame (enhanced) objects are refused; non-image objects (SEG, RTSTRUCT, SR, ...) in a
folder are skipped.

Example:
    >>> [series] = find_series("patient7/CT")
    >>> volume = read_series(series)  # float32, series.shape, on the grid of series.affine
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from monai.data import ImageReader
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple
from pydicom.misc import is_dicom
from pydicom.pixels import apply_modality_lut

from visprior.data.dataset import DatasetError
from visprior.data.volumes import MAX_VOXELS
from visprior.errors import error_text

__all__ = [
    "DicomSeries",
    "DicomSeriesError",
    "DicomSeriesReader",
    "check_one_grid",
    "dicom_cases",
    "find_series",
    "match_channels",
    "only_series",
    "read_series",
]

# Objects that carry no image slices of their own.
NON_IMAGE_MODALITIES = frozenset({"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "SR", "PR", "KO", "REG"})
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_ORIENTATION_TOLERANCE = 1e-4  # direction cosines are written with ~6 decimals
_SPACING_TOLERANCE = 1e-3  # relative, for PixelSpacing
_STEP_TOLERANCE = 0.01  # of the slice step, plus _POSITION_TOLERANCE mm
_POSITION_TOLERANCE = 1e-3  # mm; positions are decimal strings of at most 16 characters


class DicomSeriesError(DatasetError):
    """A DICOM series cannot be read as one volume; the message names the series or file."""


@dataclass(frozen=True)
class DicomSeries:
    """One series, checked from its headers, its slices in order.

    Attributes:
        uid: SeriesInstanceUID.
        description: SeriesDescription (``""`` when absent).
        folder: the folder that holds its files (their common parent).
        files: one file per slice, sorted by position along the slice normal.
        shape: ``(columns, rows, slices)``.
        affine: voxel index to RAS millimetres, 4 x 4.
        modality: Modality (``"CT"``, ``"MR"``, ...).
    """

    uid: str
    description: str
    folder: Path
    files: tuple[Path, ...]
    shape: tuple[int, int, int]
    affine: np.ndarray = field(compare=False, repr=False)
    modality: str = ""

    @property
    def name(self) -> str:
        """The series in messages: description, UID and folder."""
        return _series_label(self.description, self.uid, self.folder)

    def __str__(self) -> str:  # MONAI records it as the image's file name
        return str(self.folder)


def _series_label(description: str, uid: str, folder: Path) -> str:
    return f"series {description!r} ({uid}) in {folder}"


def find_series(folder: str | os.PathLike) -> list[DicomSeries]:
    """Every image series in ``folder`` and its subfolders, each checked from its headers.

    Files that are not DICOM (no ``DICM`` marker) and non-image objects are skipped.

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
        DicomSeriesError: a DICOM file cannot be parsed (named), or a series fails a check
            (see the module's documentation; the series is named).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"not a folder: {folder}")
    grouped: dict[str, list[tuple[Path, Any]]] = {}
    for path in _files_below(folder):
        header = _read_header(path)
        if header is None:
            continue
        uid = str(header.get("SeriesInstanceUID", "") or "")
        if not uid:
            raise DicomSeriesError(f"{path}: DICOM image without a SeriesInstanceUID")
        grouped.setdefault(uid, []).append((path, header))
    return [_checked_series(uid, items) for uid, items in grouped.items()]


def _files_below(folder: Path) -> Iterable[Path]:
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(root) / name


def _read_header(path: Path) -> Any | None:
    """The header of an image slice; ``None`` for a file that is not one."""
    try:
        if not is_dicom(path):
            return None
        header = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as error:  # pydicom raises many kinds on damaged files
        raise DicomSeriesError(f"{path}: not a readable DICOM file ({error_text(error)})") from None
    modality = str(header.get("Modality", "") or "").upper()
    sop_class = header.get("SOPClassUID") or header.file_meta.get("MediaStorageSOPClassUID", "")
    image_storage = "Image Storage" in pydicom.uid.UID(str(sop_class)).name
    if modality in NON_IMAGE_MODALITIES or not (image_storage or "Rows" in header):
        return None
    if "Rows" not in header:
        raise DicomSeriesError(f"{path}: a DICOM image without an image size (truncated?)")
    return header


def _checked_series(uid: str, items: list[tuple[Path, Any]]) -> DicomSeries:
    paths = [path for path, _ in items]
    folder = Path(os.path.commonpath([str(path.parent) for path in paths]))
    description = str(items[0][1].get("SeriesDescription", "") or "").strip()
    where = _series_label(description, uid, folder)
    geometry = [_slice_geometry(path, header, where) for path, header in items]
    first = geometry[0]
    for path, other in zip(paths[1:], geometry[1:], strict=True):
        _check_same_plane(where, paths[0], first, path, other)
    row_cosine, column_cosine = first["orientation"][:3], first["orientation"][3:]
    normal = np.cross(row_cosine, column_cosine)
    positions = np.array([g["position"] for g in geometry])
    order = np.argsort(positions @ normal, kind="stable")
    files = tuple(paths[i] for i in order)
    positions = positions[order]
    step = _slice_step(where, files, positions, normal, items[order[0]][1])
    rows, columns = first["size"]
    row_spacing, column_spacing = first["spacing"]
    if rows * columns * len(files) > MAX_VOXELS:
        raise DicomSeriesError(f"{where}: {columns} x {rows} x {len(files)} voxels, too large")
    lps = np.eye(4)
    lps[:3, 0] = row_cosine * column_spacing  # along a row: the column index grows
    lps[:3, 1] = column_cosine * row_spacing
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    return DicomSeries(
        uid=uid,
        description=description,
        folder=folder,
        files=files,
        shape=(columns, rows, len(files)),
        affine=LPS_TO_RAS @ lps,
        modality=str(items[0][1].get("Modality", "") or ""),
    )


def _slice_geometry(path: Path, header: Any, where: str) -> dict[str, Any]:
    frames = header.get("NumberOfFrames", 1)
    if frames not in (None, "") and int(frames) > 1:
        raise DicomSeriesError(
            f"{where}: {path.name} is a multi-frame (enhanced) object of {int(frames)} frames; "
            "only series of single-slice files are read"
        )
    if int(header.get("SamplesPerPixel", 1) or 1) != 1:
        raise DicomSeriesError(f"{where}: {path.name} is a colour image, not a grey slice")
    try:
        orientation = np.array([float(v) for v in header.ImageOrientationPatient])
        position = np.array([float(v) for v in header.ImagePositionPatient])
        spacing = np.array([float(v) for v in header.PixelSpacing])
        size = (int(header.Rows), int(header.Columns))
    except (AttributeError, TypeError, ValueError) as error:
        raise DicomSeriesError(
            f"{where}: {path.name} lacks a usable ImageOrientationPatient, "
            f"ImagePositionPatient, PixelSpacing or image size ({error_text(error)})"
        ) from None
    if orientation.shape != (6,) or position.shape != (3,) or spacing.shape != (2,):
        raise DicomSeriesError(f"{where}: {path.name} has malformed geometry tags")
    finite = np.isfinite(orientation).all() and np.isfinite(position).all()
    if not finite or not (spacing > 0).all() or min(size) < 1:
        raise DicomSeriesError(f"{where}: {path.name} has non-finite or non-positive geometry")
    row_cosine, column_cosine = orientation[:3], orientation[3:]
    lengths = np.linalg.norm(row_cosine), np.linalg.norm(column_cosine)
    if not (np.allclose(lengths, 1.0, atol=1e-3) and abs(row_cosine @ column_cosine) < 1e-3):
        raise DicomSeriesError(
            f"{where}: {path.name} has an ImageOrientationPatient that is not two orthogonal "
            f"unit vectors: {orientation.tolist()}"
        )
    return {"orientation": orientation, "position": position, "spacing": spacing, "size": size}


def _check_same_plane(where: str, path: Path, first: dict, other_path: Path, other: dict):
    if not np.allclose(other["orientation"], first["orientation"], atol=_ORIENTATION_TOLERANCE):
        raise DicomSeriesError(
            f"{where}: mixed series, slices in different orientations "
            f"({other_path.name}: {np.round(other['orientation'], 4).tolist()}, {path.name}: "
            f"{np.round(first['orientation'], 4).tolist()}); a localizer or a second "
            "reconstruction shares the series UID. Move the odd files out"
        )
    if other["size"] != first["size"]:
        raise DicomSeriesError(
            f"{where}: mixed series, images of {other['size'][0]} x {other['size'][1]} "
            f"({other_path.name}) and {first['size'][0]} x {first['size'][1]} ({path.name})"
        )
    if not np.allclose(other["spacing"], first["spacing"], rtol=_SPACING_TOLERANCE):
        raise DicomSeriesError(
            f"{where}: mixed series, pixel spacing {other['spacing'].tolist()} "
            f"({other_path.name}) and {first['spacing'].tolist()} ({path.name})"
        )


def _slice_step(
    where: str, files: Sequence[Path], positions: np.ndarray, normal: np.ndarray, header: Any
) -> np.ndarray:
    """The vector from one slice to the next; refuses duplicates, gaps and unequal steps."""
    if len(files) == 1:
        thickness = header.get("SpacingBetweenSlices") or header.get("SliceThickness") or 1.0
        return normal * abs(float(thickness))
    distances = positions @ normal
    gaps = np.diff(distances)
    duplicates = np.flatnonzero(gaps < _POSITION_TOLERANCE)
    if duplicates.size:
        index = duplicates[0]
        raise DicomSeriesError(
            f"{where}: mixed series, {files[index].name} and {files[index + 1].name} lie at "
            f"one position ({distances[index]:.4g} mm along the normal): several phases, "
            "echoes or time points share the series; split them into series of one each"
        )
    step = float(np.median(gaps))
    tolerance = _STEP_TOLERANCE * step + _POSITION_TOLERANCE
    for index, gap in enumerate(gaps):
        if abs(gap - step) <= tolerance:
            continue
        between = f"between {files[index].name} and {files[index + 1].name}"
        whole = round(gap / step)
        if whole >= 2 and abs(gap - whole * step) <= tolerance:
            raise DicomSeriesError(
                f"{where}: {whole - 1} missing slice(s) {between} ({gap:.4g} mm apart, "
                f"{step:.4g} mm elsewhere)"
            )
        raise DicomSeriesError(
            f"{where}: unequal slice spacing, {gap:.4g} mm {between}, {step:.4g} mm elsewhere"
        )
    steps = np.diff(positions, axis=0)
    mean_step = steps.mean(axis=0)
    if np.abs(steps - mean_step).max() > tolerance:
        raise DicomSeriesError(
            f"{where}: slices are not stacked along one line (their in-plane offsets vary), "
            "so they do not form one regular grid"
        )
    return mean_step


def read_series(series: DicomSeries) -> np.ndarray:
    """The series' voxels, float32, ``series.shape``, after each slice's modality LUT.

    Raises:
        DicomSeriesError: a file cannot be decoded (e.g. a compressed transfer syntax
            without its decoder installed), or no longer matches its header; names the file.
    """
    columns, rows, _ = series.shape
    volume = np.empty(series.shape, np.float32)
    for index, path in enumerate(series.files):
        try:
            dataset = pydicom.dcmread(path)
            pixels = dataset.pixel_array
            values = apply_modality_lut(pixels, dataset)
        except Exception as error:  # pydicom raises many kinds on undecodable pixel data
            raise DicomSeriesError(
                f"{series.name}: cannot decode the pixels of {path.name} ({error_text(error)})"
            ) from None
        if str(dataset.get("SeriesInstanceUID", "")) != series.uid or pixels.shape != (
            rows,
            columns,
        ):
            raise DicomSeriesError(f"{series.name}: {path.name} changed since it was scanned")
        volume[:, :, index] = np.asarray(values, np.float32).T
    return volume


def only_series(folder: str | os.PathLike) -> DicomSeries:
    """The one series in ``folder``.

    Raises:
        DicomSeriesError: no series, or several (each named).
    """
    found = find_series(folder)
    if len(found) != 1:
        raise DicomSeriesError(
            f"{folder}: expected one DICOM series, found {len(found)}"
            + (": " + "; ".join(s.name for s in found) if found else "")
        )
    return found[0]


def check_one_grid(series: Sequence[DicomSeries], case: str | None = None) -> None:
    """Refuse channel series that are not on one voxel grid (shape and affine to 1e-3 mm).

    Raises:
        DicomSeriesError: naming the case, when given, and both series.
    """
    first = series[0]
    for other in series[1:]:
        if other.shape != first.shape or not np.allclose(
            other.affine, first.affine, atol=_POSITION_TOLERANCE
        ):
            where = f"case {case!r}: " if case is not None else ""
            raise DicomSeriesError(
                f"{where}{other.name} does not share the grid of {first.name} (shape "
                f"{other.shape} vs {first.shape}); the channels must be on one grid"
            )


def dicom_cases(
    folder: str | os.PathLike, channel_names: Sequence[str]
) -> dict[str, list[DicomSeries]]:
    """The cases in a folder of DICOM: each case's series, one per channel, in channel order.

    Each subfolder holding DICOM files (at any depth) is one case, named after the subfolder,
    unless ``folder`` is one case itself: when it holds DICOM files directly, when a series
    spreads over several subfolders, or when no subfolder holds as many series as there are
    channels (``patient/T2/``, ``patient/ADC/`` for a two-channel run). A case's series are
    matched to channels by :func:`match_channels`.

    Raises:
        DicomSeriesError: a series fails its checks, or the series of a case do not match
            the channels; the message names the case and series.
    """
    folder = Path(folder)
    series = find_series(folder)
    grouped: dict[str, list[DicomSeries]] = {}
    one_case = False
    for item in series:
        tops = {path.relative_to(folder).parts[0] for path in item.files}
        # a file in the folder itself, or a series spread over subfolders
        one_case = one_case or len(tops) > 1 or any(path.parent == folder for path in item.files)
        grouped.setdefault(tops.pop(), []).append(item)
    if all(len(items) < len(channel_names) for items in grouped.values()):
        one_case = True  # no subfolder holds a whole case: the folder is one
    if one_case:
        return (
            {folder.name: match_channels(folder.name, series, channel_names, folder)}
            if series
            else {}
        )
    return {
        case: match_channels(case, items, channel_names, folder / case)
        for case, items in sorted(grouped.items())
    }


def match_channels(
    case: str, series: Sequence[DicomSeries], channel_names: Sequence[str], root: Path
) -> list[DicomSeries]:
    """The series of each channel, in channel order.

    A single series for a single channel is taken as it is. Otherwise a series belongs to a
    channel when the channel's name appears, as whole words and in any case, in the series'
    SeriesDescription or in its folder's path below ``root`` (the case's folder), or when a
    folder on that path is the channel's four-digit index (``0000``, ``0001``, as in nnU-Net's
    file names). Each channel must match exactly one series; series that match no channel
    (a localizer, say) are left out.

    Raises:
        DicomSeriesError: a channel matches no series or several; names the case, the channel
            and every series with its description.
    """
    if len(series) == 1 and len(channel_names) == 1:
        return list(series)
    chosen = []
    for index, name in enumerate(channel_names):
        hits = [item for item in series if _names_channel(item, name, index, root)]
        if len(hits) != 1:
            listed = "; ".join(f"{s.description!r} in {s.folder}" for s in series)
            how = "none" if not hits else f"{len(hits)}"
            raise DicomSeriesError(
                f"case {case!r}: channel {index} ({name!r}) matches {how} of its "
                f"{len(series)} series ({listed}); name each series' folder or description "
                f"after its channel ({', '.join(map(repr, channel_names))}), or give each "
                "series a folder of its own"
            )
        chosen.append(hits[0])
    return chosen


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _names_channel(series: DicomSeries, name: str, index: int, root: Path) -> bool:
    try:
        folders = series.folder.relative_to(root).parts
    except ValueError:
        folders = ()
    if f"{index:04d}" in folders:
        return True
    wanted = _words(name)
    for text in (series.description, *folders):
        words = _words(text)
        for start in range(len(words) - len(wanted) + 1):
            if wanted and words[start : start + len(wanted)] == wanted:
                return True
    return False


class DicomSeriesReader(ImageReader):
    """MONAI ``ImageReader`` for DICOM series: a :class:`DicomSeries`, or a folder holding one.

    MONAI's own ``PydicomReader`` (1.6) stacks a folder's slices in InstanceNumber order and
    checks nothing of the geometry, so a series numbered against its positions, with a gap or
    with a localizer inside comes out on a wrong grid. This reader gives the same array and
    affine where those agree (tested), and sorts by position and refuses the rest otherwise.

    Several series are stacked as channels and must share one grid. Registered by
    :class:`visprior.seg.transforms.LoadVolumesd`, so ``LoadImage`` picks it for folders and
    series while NIfTI files keep going to nibabel.

    Raises:
        DicomSeriesError: a folder without exactly one series, a series failing its checks,
            or channel series on different grids.
    """

    def verify_suffix(self, filename: Sequence[Any] | Any) -> bool:
        names = ensure_tuple(filename)
        return bool(names) and all(
            isinstance(name, DicomSeries)
            or (isinstance(name, (str, os.PathLike)) and Path(name).is_dir())
            for name in names
        )

    def read(self, data: Sequence[Any] | Any, **kwargs: Any) -> list[DicomSeries]:
        return [
            item if isinstance(item, DicomSeries) else only_series(item)
            for item in ensure_tuple(data)
        ]

    def get_data(self, img: Sequence[DicomSeries]) -> tuple[np.ndarray, dict]:
        check_one_grid(img)
        first = img[0]
        arrays = [read_series(series) for series in img]
        array = arrays[0] if len(arrays) == 1 else np.stack(arrays)
        meta = {
            MetaKeys.AFFINE: first.affine.copy(),
            MetaKeys.ORIGINAL_AFFINE: first.affine.copy(),
            MetaKeys.SPATIAL_SHAPE: np.asarray(first.shape),
            MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan") if len(arrays) == 1 else 0,
            MetaKeys.SPACE: SpaceKeys.RAS,
            "spacing": np.linalg.norm(first.affine[:3, :3], axis=0),
        }
        return array, meta
