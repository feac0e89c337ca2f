"""Reading chest radiographs: DICOM (pydicom) and PNG / JPEG (Pillow), as float images in [0, 1].

DICOM pixel data goes through the modality LUT (rescale slope / intercept), then the VOI LUT or
the window the header declares, if any, else the full range of stored values; MONOCHROME1
images (where the lowest value is brightest) are inverted so that bone is always bright.

Example:
    >>> image = read_cxr("RG1_UNCR.dcm")  # float32, shape (rows, columns), 0 = black
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from visprior.errors import error_text

__all__ = ["CXR_SUFFIXES", "CXRReadError", "MAX_CXR_PIXELS", "read_cxr"]

CXR_SUFFIXES = (".dcm", ".dicom", ".png", ".jpg", ".jpeg")


class CXRReadError(ValueError):
    """A file that is not a readable 2D radiograph; the message names it."""


# The largest image accepted, checked against the header before any pixel is decoded: a
# hostile header must not make us allocate gigabytes. Radiographs are at most about 4k x 4k.
MAX_CXR_PIXELS = 8192 * 8192
GREY_PHOTOMETRICS = ("MONOCHROME1", "MONOCHROME2")
_PIXEL_DATA_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def read_cxr(path: str | Path) -> np.ndarray:
    """The radiograph in ``path`` as a float32 (rows, columns) array scaled to [0, 1].

    Args:
        path: a DICOM file (any suffix, or none) or a PNG / JPEG image. Colour pictures are
            converted to grey; DICOM files must be grey (MONOCHROME1 or MONOCHROME2).

    Raises:
        CXRReadError: the file is missing, unreadable, truncated, larger than
            ``MAX_CXR_PIXELS``, or not a single grey 2D image (the file and the problem named).
    """
    path = Path(path)
    if not path.is_file():
        raise CXRReadError(f"{path}: no such file")
    if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
        return _read_picture(path)
    return _read_dicom(path)


def _read_picture(path: Path) -> np.ndarray:
    from PIL import Image

    # Pillow raises many kinds of errors on damaged files (OSError, SyntaxError, ValueError,
    # DecompressionBombError, ...); each means the file cannot be used, so all are reported.
    try:
        with Image.open(path) as picture:
            columns, rows = picture.size
            _check_size(path, rows, columns)
            picture.load()
            if picture.mode in ("I;16", "I;16B", "I"):
                array = np.asarray(picture, dtype=np.float32)
                peak = 65535.0 if picture.mode.startswith("I;16") else max(float(array.max()), 1)
            else:
                array = np.asarray(picture.convert("L"), dtype=np.float32)
                peak = 255.0
    except CXRReadError:
        raise
    except Exception as error:
        raise CXRReadError(f"{path}: not a readable image ({_reason(error)})") from None
    return np.clip(array / peak, 0.0, 1.0)


def _read_dicom(path: Path) -> np.ndarray:
    # pydicom raises many kinds of errors on malformed files (InvalidDicomError, struct.error,
    # KeyError, NotImplementedError, ...); each means the file cannot be used.
    try:
        dataset = pydicom.dcmread(path)
        for _ in dataset.iterall():  # decode every element now, so that a bad one fails here
            pass
    except Exception as error:
        raise CXRReadError(f"{path}: not a readable DICOM file ({_reason(error)})") from None
    _check_dicom_header(path, dataset)
    try:
        pixels = dataset.pixel_array
    except Exception as error:
        raise CXRReadError(f"{path}: not a readable DICOM image ({_reason(error)})") from None
    if pixels.ndim != 2:
        raise CXRReadError(
            f"{path}: expected one grey 2D image, got pixel data of shape {pixels.shape}"
        )
    try:
        values = np.asarray(apply_modality_lut(pixels, dataset), dtype=np.float64)
        windowed = "VOILUTSequence" in dataset or "WindowCenter" in dataset
        if windowed:
            values = np.asarray(apply_voi_lut(values, dataset, index=0), dtype=np.float64)
            low, high = _voi_output_range(dataset, values)
        else:
            low, high = _stored_range(dataset, values)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as error:
        raise CXRReadError(
            f"{path}: unusable rescale or window values in the header ({_reason(error)})"
        ) from None
    if not (np.isfinite(values).all() and np.isfinite([low, high]).all()):
        raise CXRReadError(f"{path}: pixel values are not finite after the header's rescale")
    image = (values - low) / max(high - low, 1e-12)
    image = np.clip(image, 0.0, 1.0).astype(np.float32)
    if str(dataset.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        image = 1.0 - image
    return image


def _check_dicom_header(path: Path, dataset) -> None:
    """Refuse what is not one grey image of a sane size before any pixel is decoded."""
    if not any(tag in dataset for tag in _PIXEL_DATA_TAGS):
        raise CXRReadError(f"{path}: DICOM file without pixel data (not an image, or truncated)")
    try:
        photometric = str(dataset.get("PhotometricInterpretation", "") or "").strip().upper()
        rows = int(dataset.get("Rows", 0) or 0)
        columns = int(dataset.get("Columns", 0) or 0)
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
    except (ValueError, TypeError) as error:
        raise CXRReadError(f"{path}: unusable image header ({_reason(error)})") from None
    if photometric not in GREY_PHOTOMETRICS:
        raise CXRReadError(
            f"{path}: photometric interpretation {photometric or 'missing'!r} is not a grey "
            f"radiograph ({' or '.join(GREY_PHOTOMETRICS)})"
        )
    if frames != 1:
        raise CXRReadError(f"{path}: {frames} frames; expected a single image")
    _check_size(path, rows, columns)


def _check_size(path: Path, rows: int, columns: int) -> None:
    if rows < 1 or columns < 1:
        raise CXRReadError(f"{path}: image of {rows} x {columns} pixels; expected at least 1 x 1")
    if rows * columns > MAX_CXR_PIXELS:
        raise CXRReadError(
            f"{path}: image of {rows} x {columns} pixels is larger than the {MAX_CXR_PIXELS} "
            "pixels accepted"
        )


def _reason(error: BaseException) -> str:
    """An error's message on one line and of bounded length, to quote in ours."""
    text = error_text(error)
    return text if len(text) <= 240 else text[:237] + "..."


def _stored_range(dataset, values: np.ndarray) -> tuple[float, float]:
    """The range the stored bits can hold, through the rescale; the data's own if it is wider."""
    bits = int(dataset.get("BitsStored", 0) or 0)
    if bits <= 0 or int(dataset.get("PixelRepresentation", 0) or 0) == 1:
        return float(values.min()), float(values.max())
    slope = float(dataset.get("RescaleSlope", 1) or 1)
    intercept = float(dataset.get("RescaleIntercept", 0) or 0)
    ends = sorted((intercept, (2**bits - 1) * slope + intercept))
    return min(ends[0], float(values.min())), max(ends[1], float(values.max()))


def _voi_output_range(dataset, values: np.ndarray) -> tuple[float, float]:
    """A LUT's own output range; a window's, as pydicom's ``apply_windowing`` defines it."""
    bits = int(dataset.get("BitsStored", 0) or 0)
    if "VOILUTSequence" in dataset or bits <= 0:
        return float(values.min()), float(values.max())
    if int(dataset.get("PixelRepresentation", 0) or 0) == 0:
        low, high = 0.0, float(2**bits - 1)
    else:
        low, high = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope, intercept = dataset.get("RescaleSlope"), dataset.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        low, high = low * float(slope) + float(intercept), high * float(slope) + float(intercept)
    return low, high
