"""The segmentation recipe's data pipelines, as MONAI dictionary transforms.

MONAI does the heavy lifting: loading (one file per channel, stacked channel-first, or one
multi-channel file), reorientation, resampling, intensity presets, foreground cropping,
positive/negative crop sampling and augmentation. Every spatial step is invertible, so a
prediction can be taken back to the input's own geometry (see ``visprior.seg.predict``).

Data dictionaries hold ``"image"`` (a file, or a list of per-channel files) and, for
training and validation, ``"label"`` (one file); an optional ``"case"`` names the case in
error messages.

Files are untrusted: each header is checked before MONAI reads the voxels, a file that cannot
be read and a label map one-hot encoding would garble raise a one-line
:class:`~visprior.data.dataset.DatasetError` naming the case and file, and the pipelines
let that error out as it is rather than wrapped in MONAI's "applying transform" RuntimeError.

Example:
    >>> pre = resolve_intensity(Preprocessing(spacing=(1.5, 1.5, 2.0)), "CT")
    >>> data = inference_transforms(pre)({"image": ["case_0000.nii.gz"]})
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import warnings
from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    RandAffined,
    RandCropByLabelClassesd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandShiftIntensityd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)
from monai.transforms.utils import map_binary_to_indices

from visprior.data.dataset import DatasetError
from visprior.data.dicom import DicomSeriesReader
from visprior.data.volumes import read_volume, read_volume_header
from visprior.errors import find_cause, one_line
from visprior.seg.config import Preprocessing, SegTrainConfig

__all__ = [
    "CheckLabelValuesd",
    "CropToForegroundd",
    "LoadVolumesd",
    "PlannedNormalized",
    "PosNegCropd",
    "inference_transforms",
    "preprocessing_steps",
    "preprocessing_transforms",
    "resolve_intensity",
    "train_transforms",
    "validation_transforms",
]

IMAGE_KEY = "image"
LABEL_KEY = "label"
_FG_INDICES_KEY = "_fg_indices"
_BG_INDICES_KEY = "_bg_indices"
_CLASS_INDICES_KEY = "_class_indices"
# Voxel locations kept per class for class-balanced crops, as nnU-Net keeps (10,000): a crop's
# centre then costs no pass over the volume, which on a 10M-voxel CT with ten classes was most
# of a CPU training step.
LOCATIONS_PER_CLASS = 10_000

# Channel names (case-insensitive) that select each intensity preset under "auto".
_CT_NAMES = frozenset({"ct"})
_MRI_NAMES = frozenset(
    {"mri", "mr", "t1", "t1w", "t1c", "t1ce", "t1gd", "t2", "t2w", "flair", "adc", "dwi", "pd"}
)


def resolve_intensity(pre: Preprocessing, modality: str | Sequence[str]) -> Preprocessing:
    """Replace ``intensity="auto"`` by the preset the dataset's modality calls for.

    ``"CT"`` gives ``"ct"``; ``"MRI"`` (or an MR sequence name such as ``"T2"``, ``"FLAIR"``,
    ``"ADC"``) gives ``"mri"``; anything else ``"none"``. Matching ignores case. Given
    several channel names, all must agree, else ``"none"``.

    Args:
        pre: the preprocessing; returned unchanged unless its intensity is ``"auto"``.
        modality: the modality, or the dataset's channel names.

    Returns:
        A copy of ``pre`` with a concrete intensity preset.
    """
    if pre.intensity != "auto":
        return pre
    names = [modality] if isinstance(modality, str) else list(modality)
    presets = {_preset_for(name) for name in names}
    preset = presets.pop() if len(presets) == 1 else "none"
    return dataclasses.replace(pre, intensity=preset)


def _preset_for(name: str) -> str:
    name = name.strip().lower()
    if name in _CT_NAMES:
        return "ct"
    return "mri" if name in _MRI_NAMES else "none"


def preprocessing_transforms(
    pre: Preprocessing,
    keys: Sequence[str] = (IMAGE_KEY, LABEL_KEY),
    num_classes: int | None = None,
) -> list:
    """Load, reorient, resample, crop to the foreground and normalise: no randomness.

    Images are resampled bilinearly and labels with nearest neighbour; intensity presets
    touch the image only. The foreground crop selects voxels above the CT window's lower
    bound (``"ct"``) or non-zero voxels (otherwise), over all channels, without margin; an
    image with no foreground is kept whole instead of being cropped to nothing. Files are
    loaded by :class:`LoadVolumesd`, and label maps checked by :class:`CheckLabelValuesd`.

    Args:
        pre: the preprocessing with a concrete intensity (see :func:`resolve_intensity`).
        keys: the image key first, then label keys.
        num_classes: label values must lie in ``0..num_classes-1``; when None, they must only
            be non-negative integers.

    Returns:
        The transforms, in order, for a ``Compose``.

    Raises:
        ValueError: ``pre.intensity`` is still ``"auto"`` or unknown.
    """
    return [cls(**kwargs) for cls, kwargs in preprocessing_steps(pre, keys, num_classes)]


def preprocessing_steps(
    pre: Preprocessing,
    keys: Sequence[str] = (IMAGE_KEY, LABEL_KEY),
    num_classes: int | None = None,
) -> list[tuple[type, dict[str, Any]]]:
    """:func:`preprocessing_transforms` as ``(transform class, keyword arguments)`` pairs whose
    arguments are plain JSON values, so that a MONAI bundle config can name each step."""
    keys = list(keys)
    image_key = keys[0]
    modes = ["bilinear" if key == image_key else "nearest" for key in keys]
    steps: list = [(LoadVolumesd, {"keys": keys, "ensure_channel_first": True, "image_only": True})]
    if keys[1:]:
        steps.append((CheckLabelValuesd, {"keys": keys[1:], "num_classes": num_classes}))
    steps.append((Orientationd, {"keys": keys, "axcodes": pre.orientation, "labels": None}))
    if pre.spacing is not None:
        steps.append((Spacingd, {"keys": keys, "pixdim": list(pre.spacing), "mode": modes}))
    if pre.crop_foreground:
        threshold = pre.ct_window[0] if pre.intensity == "ct" else None
        steps.append(
            (CropToForegroundd, {"keys": keys, "source_key": image_key, "threshold": threshold})
        )
    steps += _intensity_steps(pre, image_key)
    steps.append((EnsureTyped, {"keys": keys}))
    return steps


class CropToForegroundd(CropForegroundd):
    """``CropForegroundd`` to the voxels above ``threshold`` of every channel of
    ``source_key`` (the non-zero voxels when ``None``), without margin; an image with no such
    voxel is kept whole instead of being cropped to nothing."""

    def __init__(self, keys: Any, source_key: str, threshold: float | None = None, **kwargs):
        super().__init__(
            keys,
            source_key=source_key,
            select_fn=functools.partial(_select_foreground, threshold=threshold),
            margin=0,
            allow_smaller=True,
            start_coord_key=None,
            end_coord_key=None,
            **kwargs,
        )


def _intensity_steps(pre: Preprocessing, image_key: str) -> list:
    if pre.intensity == "ct":
        low, high = pre.ct_window
        scale = {"a_min": low, "a_max": high, "b_min": 0.0, "b_max": 1.0, "clip": True}
        return [(ScaleIntensityRanged, {"keys": image_key, **scale})]
    if pre.intensity == "mri":
        return [(NormalizeIntensityd, {"keys": image_key, "nonzero": True, "channel_wise": True})]
    if pre.intensity == "none":
        return []
    if pre.intensity == "planned":
        schemes = [dict(scheme) for scheme in pre.channel_normalization]
        return [(PlannedNormalized, {"keys": image_key, "schemes": schemes})]
    raise ValueError(
        f"intensity {pre.intensity!r} is not a preset ('ct', 'mri', 'none', 'planned'); "
        "resolve 'auto' with visprior.seg.transforms.resolve_intensity first"
    )


class PlannedNormalized(MapTransform):
    """Each image channel normalised by the scheme ``seg plan`` chose for it: ``"ct"`` clips to
    the dataset's foreground percentiles and z-scores with its foreground mean and std (one
    scale for every case, as HU mean the same everywhere); ``"zscore"`` gives the image's
    non-zero voxels zero mean and unit variance (MR intensities have no common scale).

    Raises:
        ValueError: a scheme that is unknown or lacks its numbers, or a channel count that
            differs from the schemes' (named).
    """

    def __init__(self, keys: Any, schemes: Sequence[dict[str, Any]]):
        super().__init__(keys)
        self.schemes = [_checked_scheme(index, scheme) for index, scheme in enumerate(schemes)]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        result = dict(data)
        for key in self.key_iterator(result):
            image = result[key]
            if image.shape[0] != len(self.schemes):
                raise ValueError(
                    f"the image has {image.shape[0]} channel(s) but the plan normalises "
                    f"{len(self.schemes)}"
                )
            # A float copy keeps the MetaTensor's metadata (the spatial steps to invert).
            out = (image if isinstance(image, torch.Tensor) else torch.as_tensor(image)).float()
            out = out.clone()
            for index, scheme in enumerate(self.schemes):
                channel = out[index]
                if scheme["scheme"] == "ct":
                    low, high = scheme["clip"]
                    out[index] = (channel.clamp(low, high) - scheme["mean"]) / scheme["std"]
                    continue
                inside = channel != 0
                if inside.sum() > 1:
                    values = channel[inside]
                    scaled = (channel - values.mean()) / values.std().clamp_min(1e-8)
                    out[index] = torch.where(inside, scaled, channel)
            result[key] = out
        return result


def _checked_scheme(index: int, scheme: Any) -> dict[str, Any]:
    where = f"preprocessing.channel_normalization[{index}]"
    if not isinstance(scheme, dict) or scheme.get("scheme") not in ("ct", "zscore"):
        raise ValueError(f"{where}: expected a scheme 'ct' or 'zscore', got {scheme!r}")
    if scheme["scheme"] == "ct":
        try:
            low, high = (float(v) for v in scheme["clip"])
            mean, std = float(scheme["mean"]), float(scheme["std"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"{where}: a 'ct' scheme needs clip [low, high], mean and std"
            ) from None
        if not (low <= high and std > 0):
            raise ValueError(f"{where}: needs clip low <= high and std > 0, got {scheme!r}")
        return {"scheme": "ct", "clip": (low, high), "mean": mean, "std": std}
    return {"scheme": "zscore"}


def _select_foreground(image: Any, threshold: float | None) -> Any:
    """Voxels above ``threshold`` (non-zero ones when ``None``); all voxels if none is."""
    mask = image != 0 if threshold is None else image > threshold
    return mask if mask.any() else mask | ~mask


def inference_transforms(pre: Preprocessing) -> Compose:
    """The preprocessing of an image alone; its ``inverse`` undoes the spatial steps."""
    return _Pipeline(preprocessing_transforms(pre, keys=(IMAGE_KEY,)))


def validation_transforms(cfg: SegTrainConfig, num_classes: int | None = None) -> Compose:
    """The preprocessing of image and label, for sliding-window validation on whole volumes.

    Args:
        cfg: the training configuration.
        num_classes: label values must lie in ``0..num_classes-1`` (see
            :class:`CheckLabelValuesd`).
    """
    return _Pipeline(preprocessing_transforms(cfg.preprocessing, num_classes=num_classes))


def train_transforms(cfg: SegTrainConfig, num_classes: int | None = None) -> Compose:
    """Preprocessing, ``crops_per_volume`` crops of ``roi_size``, augmentation.

    Crops are centred as ``cfg.crop_sampling`` says: on foreground or background voxels
    (``"pos_neg"``), or on each of the ``num_classes`` label values alike (``"classes"``; a
    class missing from a case is skipped for that case). A volume smaller than the ROI is
    zero-padded first. A label without foreground is not an error: a warning names the case
    and its crops are drawn at random.

    Args:
        cfg: the training configuration.
        num_classes: label values 0..num_classes-1, background included; needed for
            ``"classes"`` sampling, and a label value outside this range is an error.

    Returns:
        A ``Compose`` whose output is a list of ``crops_per_volume`` dictionaries.

    Raises:
        ValueError: ``"classes"`` sampling without ``num_classes``, or an unknown sampling.
    """
    keys = [IMAGE_KEY, LABEL_KEY]
    roi = tuple(int(s) for s in cfg.roi_size)
    steps = preprocessing_transforms(cfg.preprocessing, keys, num_classes)
    steps.append(SpatialPadd(keys, spatial_size=roi))
    if cfg.crop_sampling == "classes" and num_classes:
        steps.append(ClassLocationsd(LABEL_KEY, num_classes))  # deterministic: cached
    steps += [_cropper(cfg, keys, roi, num_classes), *_augmentations(cfg, keys, roi)]
    return _Pipeline(steps)


def _cropper(cfg: SegTrainConfig, keys: list[str], roi: tuple[int, ...], num_classes: int | None):
    if cfg.crop_sampling == "pos_neg":
        # Background crops are centred where the image is above 0 (not air, for the CT
        # window's [0, 1]); a planned z-score puts half of every tissue below 0, so there the
        # whole cropped volume is a candidate.
        z_scored = cfg.preprocessing.intensity == "planned"
        return PosNegCropd(
            keys,
            label_key=LABEL_KEY,
            spatial_size=roi,
            pos=cfg.positive_weight,
            neg=cfg.negative_weight,
            num_samples=cfg.crops_per_volume,
            image_key=None if z_scored else IMAGE_KEY,
            image_threshold=0.0,
            allow_smaller=False,
        )
    if cfg.crop_sampling == "classes":
        if num_classes is None or num_classes < 2:
            raise ValueError(
                f"crop_sampling='classes' needs the number of label classes (>= 2), "
                f"got num_classes={num_classes!r}"
            )
        # No image mask: normalised MRI is negative inside structures too.
        return ClassCropd(
            keys,
            label_key=LABEL_KEY,
            spatial_size=roi,
            num_classes=num_classes,
            num_samples=cfg.crops_per_volume,
            indices_key=_CLASS_INDICES_KEY,
            allow_smaller=False,
            warn=False,
        )
    raise ValueError(f"crop_sampling must be 'pos_neg' or 'classes', got {cfg.crop_sampling!r}")


def _augmentations(cfg: SegTrainConfig, keys: list[str], roi: tuple[int, ...]) -> list:
    steps: list = [RandFlipd(keys, prob=cfg.flip_prob, spatial_axis=axis) for axis in cfg.flip_axes]
    if cfg.shift_intensity > 0 and cfg.shift_intensity_prob > 0:
        steps.append(
            RandShiftIntensityd(
                IMAGE_KEY, offsets=cfg.shift_intensity, prob=cfg.shift_intensity_prob
            )
        )
    if cfg.affine_prob > 0 and (cfg.rotate_range > 0 or cfg.scale_range > 0):
        steps.append(
            RandAffined(
                keys,
                prob=cfg.affine_prob,
                spatial_size=roi,
                rotate_range=(cfg.rotate_range,) * 3,
                scale_range=(cfg.scale_range,) * 3,
                mode=("bilinear", "nearest"),
                padding_mode="zeros",
                cache_grid=True,
            )
        )
    return steps


class PosNegCropd(RandCropByPosNegLabeld):
    """``RandCropByPosNegLabeld`` that takes a label without foreground in its stride.

    MONAI then falls back to background-centred crops with an anonymous warning, and raises
    "No sampling location available" when the image has no voxel above ``image_threshold``
    either. Here such a case gets a warning naming it, and its crops are centred at random on
    the background candidates, or on any voxel when there are none. Cases with foreground go
    to MONAI unchanged; nothing is precomputed, so ``CacheDataset`` caches no index arrays.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(
            *args, fg_indices_key=_FG_INDICES_KEY, bg_indices_key=_BG_INDICES_KEY, **kwargs
        )

    def __call__(self, data: Mapping[Hashable, Any], lazy: bool | None = None) -> list[dict]:
        label = data[self.label_key]
        if bool(torch.any(torch.as_tensor(label) != 0)):
            return super().__call__(data, lazy=lazy)
        warnings.warn(
            f"{_case_name(data, label)}: label has no foreground; its crops are drawn at random",
            stacklevel=2,
        )
        image = data.get(self.image_key) if self.image_key else None
        _, candidates = map_binary_to_indices(label, image, self.cropper.image_threshold)
        if len(candidates) == 0:
            candidates = torch.arange(int(np.prod(label.shape[1:])))
        # both pools alike: uniform crops, without MONAI's own warning
        pools = {_FG_INDICES_KEY: candidates, _BG_INDICES_KEY: candidates}
        return super().__call__({**data, **pools}, lazy=lazy)


class ClassLocationsd(MapTransform):
    """Up to :data:`LOCATIONS_PER_CLASS` flat voxel indices of each label class, drawn with a
    fixed seed (so the step is deterministic, and ``CacheDataset`` keeps its result), for
    :class:`ClassCropd` to centre crops on."""

    def __init__(self, label_key: str, num_classes: int, per_class: int = LOCATIONS_PER_CLASS):
        super().__init__([label_key])
        self.label_key, self.num_classes, self.per_class = label_key, num_classes, per_class

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        flat = np.asarray(data[self.label_key]).reshape(-1)
        generator = np.random.default_rng(0)
        pools = []
        for value in range(self.num_classes):
            found = np.flatnonzero(flat == value)
            if len(found) > self.per_class:
                found = np.sort(generator.choice(found, self.per_class, replace=False))
            pools.append(found)
        return {**data, _CLASS_INDICES_KEY: pools}


class ClassCropd(RandCropByLabelClassesd):
    """``RandCropByLabelClassesd`` on :class:`ClassLocationsd`'s locations, whose lists do not
    go on with the crops (a batch cannot stack them)."""

    def __call__(self, data: Mapping[Hashable, Any], lazy: bool | None = None) -> list[dict]:
        crops = super().__call__(data, lazy=lazy)
        for crop in crops:
            crop.pop(_CLASS_INDICES_KEY, None)
        return crops


def _case_name(data: Mapping[Hashable, Any], label: Any) -> str:
    """The data dictionary's ``"case"`` entry, else the label's file name."""
    if "case" in data:
        return f"case {data['case']!r}"
    meta = getattr(label, "meta", {}) or {}
    return str(meta.get("filename_or_obj", "a case"))


class _Pipeline(Compose):
    """``Compose`` that lets a :class:`DatasetError` out as it is.

    MONAI wraps whatever a step raises in ``RuntimeError("applying transform <...>")``; a
    DatasetError already names the case, file and problem, so it is re-raised unwrapped, with
    its own cause (the reader's error) kept. ``CacheDataset`` calls this ``__call__`` too.
    """

    def __call__(self, input_, start=0, end=None, threading=False, lazy=None):
        try:
            return super().__call__(input_, start=start, end=end, threading=threading, lazy=lazy)
        except RuntimeError as error:
            cause = find_cause(error, DatasetError)
            if cause is None:
                raise
            raise cause from cause.__cause__


class LoadVolumesd(LoadImaged):
    """``LoadImaged`` for untrusted files: each header is checked before MONAI reads anything,
    and a failure names the case and file.

    A header declaring more voxels than its file can hold (or a compressed file more than
    ``MAX_VOXELS``), with no, non-positive or more than 5 dimensions, or that nibabel cannot
    parse, is refused before any voxel array is allocated (see
    :func:`visprior.data.volumes.check_volume_header`). When MONAI's reader then fails
    (file cut short, corrupt gzip stream), the files are read one by one to find the culprit.

    A :class:`visprior.data.dicom.DicomSeries`, or a folder holding one series, is read by
    :class:`visprior.data.dicom.DicomSeriesReader` (slices sorted by position, rescaled,
    oriented from their headers); a list of them is one channel each.

    Raises:
        DatasetError: ``"case 'liver_3': cannot read /data/imagesTr/liver_3_0001.nii.gz:
            EOFError: Compressed file ended before the end-of-stream marker was reached"``;
            the case comes from the dictionary's ``"case"`` entry, when there is one.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("reader", DicomSeriesReader())
        # MONAI would turn a DicomSeries into a path string; paths are expanded in __call__
        kwargs["expanduser"] = False
        with _quiet_unused_dicom_reader():
            super().__init__(*args, **kwargs)

    def __call__(self, data: Mapping[Hashable, Any], reader: Any = None) -> dict:
        case = data.get("case")
        data = dict(data)
        for key in self.key_iterator(data):
            data[key] = _expanded(data[key])
        files = [path for key in self.key_iterator(data) for path in _files(data[key])]
        for path in files:
            read_volume_header(path, case)
        try:
            return super().__call__(data, reader)
        except DatasetError:  # DICOM series: already names the series
            raise
        except Exception as error:
            for path in files:
                read_volume(path, case)  # raises, naming the file, if this one is unreadable
            where = f"case {case!r}: " if case is not None else ""
            listed = ", ".join(map(str, files))
            message = f"{where}cannot load {listed}: {type(error).__name__}: {error}"
            raise DatasetError(one_line(message)) from error


_NO_NVIMGCODEC_LOG = "nvImageCodec is not available"
_NO_NVIMGCODEC_WARNING = "NvImgCodecPydicomReader: nvImageCodec decoder plugin"


@contextlib.contextmanager
def _quiet_unused_dicom_reader() -> Iterator[None]:
    """Without nvImageCodec, MONAI's ``LoadImage`` says so twice each time it is built (a log
    line from its nvimgcodec plugin, a ``UserWarning`` from its DICOM reader), although the
    volumes read here are NIfTI. Both are silenced while the reader is built, and only those."""
    logger = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_NO_NVIMGCODEC_LOG)

    logger.addFilter(keep)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_NO_NVIMGCODEC_WARNING, category=UserWarning)
            yield
    finally:
        logger.removeFilter(keep)


def _files(value: Any) -> list[str | os.PathLike]:
    """The volume files of a data dictionary entry (one path or a list of per-channel paths,
    ``~`` expanded): not DICOM series, nor folders holding one."""
    values = value if isinstance(value, (list, tuple)) else [value]
    return [
        item for item in values if isinstance(item, (str, os.PathLike)) and not os.path.isdir(item)
    ]


def _expanded(value: Any) -> Any:
    """Paths with ``~`` expanded, as ``LoadImage(expanduser=True)`` would; the rest as is."""
    if isinstance(value, (list, tuple)):
        return [_expanded(item) for item in value]
    if isinstance(value, (str, os.PathLike)):
        return os.path.expanduser(value)
    return value


class CheckLabelValuesd(MapTransform):
    """Refuse a label map that one-hot encoding would garble.

    Values must be integers from 0 to ``num_classes - 1`` (non-negative integers when
    ``num_classes`` is None). Otherwise a non-integer value is silently truncated to a class,
    and a negative or too large one fails deep inside the loss (a device-side assert on CUDA).
    Runs on the label as loaded, before any resampling.

    Raises:
        DatasetError: naming the case, the label file and up to 10 offending values.
    """

    def __init__(
        self, keys: Any, num_classes: int | None = None, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.num_classes = num_classes

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            problem = self._problem(torch.as_tensor(d[key]))
            if problem is not None:
                case = d.get("case")
                where = f"case {case!r}: " if case is not None else ""
                meta = getattr(d[key], "meta", {}) or {}
                file = meta.get("filename_or_obj", key)
                raise DatasetError(f"{where}label {file} {problem}")
        return d

    def _problem(self, label: torch.Tensor) -> str | None:
        if label.is_floating_point():
            bad = label[label != label.round()]  # NaN too
            if bad.numel():
                return f"has non-integer values: {_show(bad)}"
        bad = label[label < 0]
        if bad.numel():
            return f"has negative values: {_show(bad)}"
        if self.num_classes is not None:
            bad = label[label >= self.num_classes]
            if bad.numel():
                top = self.num_classes - 1
                return f"has values above {top}, the largest label value declared: {_show(bad)}"
        return None


def _show(values: torch.Tensor, limit: int = 10) -> str:
    unique = torch.unique(values.flatten().float()).tolist()
    shown = ", ".join(f"{value:g}" for value in unique[:limit])
    return shown + (f", ... ({len(unique) - limit} more)" if len(unique) > limit else "")
