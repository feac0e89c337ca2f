"""Volume files, the header first: a header is checked against its file size before any voxel
array is allocated (``check_volume_header``, ``read_volume_header``, ``verify_headers``), and
``read_volume`` turns any reading failure into a :class:`DatasetError` naming the case and file.
"""

from __future__ import annotations

import gzip
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from visprior.data.dataset import (
    DatasetError,
    DatasetProblem,
    SegmentationCase,
    SegmentationDataset,
    _find_case,
    _plural,
    _printable,
    _Problems,
)
from visprior.errors import error_text

# The most voxels accepted from a compressed volume's header. A compressed file's size does not
# bound its voxel count tightly, so without a limit a forged header could make a reader allocate
# terabytes. 2**31 voxels are 8 GiB as float32: four times a 512 x 512 x 2000-slice CT.
MAX_VOXELS = 2**31

# Deflate never expands data more than 1032-fold, so a gzip file of n bytes holds at most
# 1032 * n bytes: a header asking for more is forged or the file was cut short.
_MAX_DEFLATE_RATIO = 1032
_MAX_DIMENSIONS = 5  # x, y, z, time and one more (ITK's vector axis); NIfTI allows 7
_GZIP_MAGIC = b"\x1f\x8b"
_OTHER_COMPRESSION_MAGICS = (b"BZh", b"\x28\xb5\x2f\xfd")  # bzip2, zstandard
_CHECKSUM_CHUNK = 16 * 2**20  # bytes decompressed at a time to reach a gzip file's CRC


class _VolumeProblem(Exception):
    """Why a volume file cannot be used: a problem kind and a sentence without the file name."""

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(text)
        self.kind, self.text = kind, text


def check_volume_header(path: str | os.PathLike) -> str | None:
    """Judge a volume file from its header and size alone, reading no voxels.

    Refused: a header nibabel cannot parse; no dimension, more than 5, or a size below 1; an
    uncompressed file shorter than the voxels its header declares; a gzip file too small to
    hold them even at deflate's best ratio (1032:1); a compressed file declaring more than
    :data:`MAX_VOXELS` voxels. No voxel array is allocated, so this is safe on any file.

    Args:
        path: a NIfTI file (or any format nibabel opens).

    Returns:
        None if nothing is wrong, else what is, as a sentence that does not name the file, e.g.
        ``"header declares 30000 x 30000 x 30000 float32 voxels (108 TB with the header), but the
        file has 832 bytes"``.
    """
    try:
        _load_header(Path(path))
    except _VolumeProblem as problem:
        return problem.text
    return None


def read_volume_header(path: str | os.PathLike, case: str | None = None) -> Any:
    """Open a volume's header (see :func:`check_volume_header`) without reading its voxels.

    Returns:
        The nibabel image; its ``dataobj`` reads the voxels on demand.

    Raises:
        DatasetError: the header is unusable; the message names the case and file.
    """
    try:
        return _load_header(Path(path))
    except _VolumeProblem as problem:
        raise _volume_error(Path(path), case, problem) from problem.__cause__


def read_volume(
    path: str | os.PathLike, case: str | None = None, verify_checksum: bool = False
) -> tuple[Any, np.ndarray]:
    """Open a volume, checking its header first (see :func:`check_volume_header`), and read it.

    Args:
        path: the file.
        case: the case it belongs to, for the message.
        verify_checksum: also decompress a gzip file to its end to verify its CRC: readers stop
            after the voxels, so damage that still decompresses gives wrong voxels silently.

    Returns:
        ``(image, voxels)``: the nibabel image (affine, header) and its voxel array.

    Raises:
        DatasetError: the header is unusable or the voxels cannot be read (file cut short,
            corrupt gzip stream, ...); the message names the case and file, and its problem's
            ``kind`` is ``"unreadable"``, ``"bad-header"``, ``"too-large"`` or ``"truncated"``.
    """
    try:
        return _load_volume(Path(path), verify_checksum)
    except _VolumeProblem as problem:
        raise _volume_error(Path(path), case, problem) from problem.__cause__


def verify_headers(
    dataset: SegmentationDataset, cases: Iterable[str | SegmentationCase] | None = None
) -> None:
    """Check the header of every image and label of ``cases`` (see :func:`check_volume_header`).

    Cheap (no voxel is read): meant to run before training, so that a forged or cut-short file
    fails at once, with every such file listed, instead of when it is first loaded.

    Args:
        dataset: from :func:`load_dataset`.
        cases: case names or cases; default every training case.

    Raises:
        DatasetError: naming the first unusable file, its case and what is wrong, and how many
            more there are; ``problems`` lists them all.
    """
    by_name = {case.name: case for case in dataset.test + dataset.training}
    chosen = dataset.training if cases is None else [_find_case(by_name, c) for c in cases]
    problems = _Problems(dataset.root)
    for case in chosen:
        for path in (*case.images, *([case.label] if case.label is not None else [])):
            try:
                _load_header(path)
            except _VolumeProblem as problem:
                message = f"cannot read {problems.rel(path)}: {problem.text}"
                problems.add(problem.kind, message, case.name, path)
    if problems:
        more = f" (and {_plural(len(problems) - 1, 'more file')})" if problems[1:] else ""
        raise DatasetError(f"{problems[0]}{more}", problems)


def _volume_error(path: Path, case: str | None, problem: _VolumeProblem) -> DatasetError:
    where = f"case {case!r}: " if case is not None else ""
    message = f"cannot read {_printable(str(path))}: {problem.text}"
    return DatasetError(where + message, [DatasetProblem(problem.kind, message, case, path)])


def _load_volume(path: Path, verify_checksum: bool = False) -> tuple[Any, np.ndarray]:
    image = _load_header(path)
    try:
        data = np.asanyarray(image.dataobj)
        data_file = _data_file(image)
        if verify_checksum and data_file is not None and _magic(data_file) == "gzip":
            with gzip.open(data_file) as stream:
                while stream.read(_CHECKSUM_CHUNK):  # the CRC is compared at the stream's end
                    pass
    except Exception as error:  # whatever a reader raises on corrupt bytes, MemoryError included
        raise _VolumeProblem("unreadable", _describe_error(error)) from error
    return image, data


def _load_header(path: Path) -> Any:
    """The nibabel image, once its header has passed every check; raises _VolumeProblem."""
    try:
        image = nib.load(path)
        header = image.header
        dtype = np.dtype(header.get_data_dtype())
        dims = _declared_dims(header)
    except Exception as error:  # a parser fed arbitrary bytes may raise anything
        raise _VolumeProblem("unreadable", _describe_error(error)) from error
    if not 1 <= len(dims) <= _MAX_DIMENSIONS:
        text = f"header declares {len(dims)} dimensions; 1 to {_MAX_DIMENSIONS} are supported"
        raise _VolumeProblem("bad-header", text)
    if min(dims) < 1:
        text = f"header declares dimension sizes {dims}; each must be at least 1"
        raise _VolumeProblem("bad-header", text)
    try:
        _check_file_size(image, dims, dtype)
    except OSError as error:  # e.g. the .img of an Analyze/NIfTI pair is missing
        raise _VolumeProblem("unreadable", _describe_error(error)) from error
    return image


def _declared_dims(header: Any) -> tuple[int, ...]:
    """The dimension sizes a header declares, taken from the raw NIfTI/Analyze ``dim`` field
    where there is one (nibabel's shape hides a count of 0 and forgives negative sizes)."""
    try:
        dim = [int(value) for value in header["dim"]]
    except (KeyError, TypeError, ValueError):
        return tuple(int(size) for size in header.get_data_shape())
    if not 0 <= dim[0] <= 7:
        raise ValueError(f"header dim[0] is {dim[0]}; NIfTI allows 0 to 7 dimensions")
    return tuple(dim[1 : 1 + dim[0]])


def _data_file(image: Any) -> str | None:
    """The file holding the voxels (the ``.img`` of a pair), if nibabel reads them from one."""
    return getattr(image.file_map.get("image"), "filename", None)


def _magic(file_name: str) -> str | None:
    """``"gzip"``, ``"other"`` (bzip2, zstandard) or None (uncompressed), from the first bytes."""
    with open(file_name, "rb") as stream:
        start = stream.read(4)
    if start.startswith(_GZIP_MAGIC):  # .nii.gz, .mgz, ...
        return "gzip"
    return "other" if start.startswith(_OTHER_COMPRESSION_MAGICS) else None


def _check_file_size(image: Any, dims: tuple[int, ...], dtype: np.dtype) -> None:
    """Refuse a header declaring more voxel bytes than its file can hold."""
    data_file = _data_file(image)
    offset = getattr(image.dataobj, "offset", None)
    if data_file is None or offset is None:  # not an on-disk array nibabel reads directly
        return
    voxels = math.prod(dims)  # a Python int: no overflow
    needed = int(offset) + voxels * dtype.itemsize
    size = os.stat(data_file).st_size
    declared = f"header declares {' x '.join(map(str, dims))} {dtype} voxels"
    compression = _magic(data_file)
    if compression is None:
        if size < needed:
            text = f"{declared} ({_bytes(needed)} with the header), but the file has {size} bytes"
            raise _VolumeProblem("truncated", text)
        return
    if voxels > MAX_VOXELS:
        text = (
            f"{declared} ({voxels} voxels), more than the {MAX_VOXELS} (2**31) accepted from a "
            "compressed file (visprior.data.volumes.MAX_VOXELS)"
        )
        raise _VolumeProblem("too-large", text)
    if compression == "gzip" and needed > _MAX_DEFLATE_RATIO * size:
        text = (
            f"{declared} ({_bytes(needed)} with the header), more than a {size}-byte gzip file "
            f"can hold (deflate expands at most {_MAX_DEFLATE_RATIO}-fold)"
        )
        raise _VolumeProblem("truncated", text)


def _bytes(count: int) -> str:
    """``"832 bytes"``, ``"2 GB"``, ``"4,000 TB"``: for messages."""
    if count < 1000:
        return f"{count} bytes"
    exponent = min(4, int(math.log10(count)) // 3)
    value = count / 1000**exponent
    shown = f"{value:.3g}" if value < 1000 else f"{value:,.0f}"
    return f"{shown} {('kB', 'MB', 'GB', 'TB')[exponent - 1]}"


def _describe_error(error: BaseException) -> str:
    name = type(error).__name__
    if name.islower():  # zlib.error, struct.error: the bare name says nothing
        name = f"{type(error).__module__}.{name}"
    return f"{name}: {error_text(error)}"
