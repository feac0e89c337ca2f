"""Atomic file writes (a reader never sees a half-written checkpoint, export or image) and
NIfTI file names."""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "NIFTI_SUFFIXES",
    "atomic_path",
    "check_outputs",
    "decode_utf8",
    "nifti_stem",
    "remove_stale_temporaries",
    "save_nifti_atomic",
    "write_csv_rows",
    "write_json",
]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
_TEMPORARY_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it, rename it over ``path`` and
    fsync the folder.

    If the body raises, the temporary file is removed and ``path`` is left as it was.

    Example:
        >>> with atomic_path("model.pt") as tmp:
        ...     torch.save(state, tmp)
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=_TEMPORARY_SUFFIX, dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give the usual permissions
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        _fsync_folder(target.parent)  # the rename itself survives a power cut
    finally:
        tmp.unlink(missing_ok=True)


def check_outputs(
    outputs: Iterable[str | os.PathLike],
    inputs: Iterable[str | os.PathLike] = (),
    overwrite: bool = False,
) -> None:
    """Before anything is written: no output may replace an input (ever), nor an earlier
    output unless ``overwrite`` (``--force`` on the command line) says so.

    Raises:
        FileExistsError: naming the first output in the way; nothing was written.
    """
    originals = {Path(path).resolve(): Path(path) for path in inputs}
    for output in map(Path, outputs):
        if output.resolve() in originals:
            raise FileExistsError(
                f"{output} would replace the input {originals[output.resolve()]}; choose another "
                "output folder (nothing was written)"
            )
        if output.exists() and not overwrite:
            raise FileExistsError(
                f"{output} exists; pass --force to replace it, or choose another output folder "
                "(nothing was written)"
            )


def decode_utf8(data: bytes, path: str | os.PathLike, error: type[Exception]) -> str:
    """``data`` read from ``path`` as UTF-8 text (a leading byte-order mark, as spreadsheets
    write, is dropped); otherwise ``error`` naming the line and the first bad byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as problem:
        line = data[: problem.start].count(b"\n") + 1
        raise error(
            f"{path}: line {line}: not UTF-8 text (byte 0x{data[problem.start]:02x})"
        ) from None


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete what ``atomic_path`` left in ``folder`` when its process was killed mid-write
    (``.NAME.XXXXXXXX.tmp``); the files they were meant to replace are untouched. Only call it
    where no other process is writing."""
    removed = []
    for candidate in Path(folder).glob(f".*{_TEMPORARY_SUFFIX}"):
        if candidate.is_file() and not candidate.is_symlink():
            candidate.unlink()
            removed.append(candidate)
    return removed


def _fsync_folder(folder: Path) -> None:
    if os.name != "posix":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_csv_rows(
    path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] = ()
) -> Path:
    """Write ``rows`` as a CSV table with a header, atomically; the columns default to the
    first row's keys."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(columns or rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


def save_nifti_atomic(image, path: str | os.PathLike) -> Path:
    """Write a nibabel NIfTI image to ``path`` as gzipped NIfTI, atomically."""
    with atomic_path(path) as tmp, gzip.open(tmp, "wb", compresslevel=1) as stream:
        image.to_stream(stream)  # nibabel cannot infer the format from atomic_path's ".tmp"
    return Path(path)


def nifti_stem(name: str) -> str | None:
    """``name`` without its ``.nii.gz`` / ``.nii`` ending; ``None`` if it is not NIfTI."""
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def write_json(path: str | os.PathLike, values: Any) -> Path:
    """Strict JSON, atomically: NaN (a score that does not exist) is written as null, NumPy
    numbers as plain ones."""
    path = Path(path)
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(_plain_json(values), indent=1))
    return path


def _plain_json(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_json(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float) or type(value).__module__ == "numpy":
        number = value.item() if hasattr(value, "item") else value
        return None if isinstance(number, float) and math.isnan(number) else number
    return value
