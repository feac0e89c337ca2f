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

__all__ = ["CXR_SUFFIXES", "CXRReadError", "read_cxr"]

CXR_SUFFIXES = (".dcm", ".dicom", ".png", ".jpg", ".jpeg")


class CXRReadError(ValueError):
    """A file that is not a readable 2D radiograph; the message names it."""


def read_cxr(path: str | Path) -> np.ndarray:
    """The radiograph in ``path`` as a float32 (rows, columns) array scaled to [0, 1].

    Args:
        path: a DICOM file (any suffix, or none) or a PNG / JPEG image. Colour images are
            converted to grey.

    Raises:
        CXRReadError: the file is missing, unreadable, or not a single 2D image.
    """
    path = Path(path)
    if not path.is_file():
        raise CXRReadError(f"{path}: no such file")
    if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
        return _read_picture(path)
    return _read_dicom(path)


def _read_picture(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as picture:
            picture.load()
            if picture.mode in ("I;16", "I;16B", "I"):
                array = np.asarray(picture, dtype=np.float32)
                peak = 65535.0 if picture.mode.startswith("I;16") else max(float(array.max()), 1)
            else:
                array = np.asarray(picture.convert("L"), dtype=np.float32)
                peak = 255.0
    except (OSError, UnidentifiedImageError) as error:
        raise CXRReadError(f"{path}: not a readable image ({error})") from None
    return np.clip(array / peak, 0.0, 1.0)


def _read_dicom(path: Path) -> np.ndarray:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        dataset = pydicom.dcmread(path)
        pixels = dataset.pixel_array
    except (InvalidDicomError, OSError, AttributeError, ValueError, RuntimeError) as error:
        raise CXRReadError(f"{path}: not a readable DICOM image ({error})") from None
    if pixels.ndim != 2:
        raise CXRReadError(
            f"{path}: expected one grey 2D image, got pixel data of shape {pixels.shape}"
        )
    values = np.asarray(apply_modality_lut(pixels, dataset), dtype=np.float64)
    windowed = "VOILUTSequence" in dataset or "WindowCenter" in dataset
    if windowed:
        values = np.asarray(apply_voi_lut(values, dataset, index=0), dtype=np.float64)
        low, high = _voi_output_range(dataset, values)
    else:
        low, high = _stored_range(dataset, values)
    image = (values - low) / max(high - low, 1e-12)
    image = np.clip(image, 0.0, 1.0).astype(np.float32)
    if str(dataset.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        image = 1.0 - image
    return image


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
