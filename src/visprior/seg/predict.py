"""Segment new volumes with a trained checkpoint, in each input's own geometry.

MONAI does the heavy lifting: the checkpoint's preprocessing (``visprior.seg.transforms``),
Gaussian-weighted sliding-window inference, and ``Invertd``, which undoes cropping,
resampling and reorientation so that labels and probabilities land on the input's voxel
grid, with the input's shape and affine. The network is fused for deployment first
(``visprior.reparameterize_model``).

Inputs follow nnU-Net's naming: ``{case}_{XXXX}.nii.gz``, one file per channel; a lone file
is one case. A folder without NIfTI files is read as DICOM: one case per folder of series,
one series per channel (see :func:`visprior.data.dicom.dicom_cases`). Outputs are
``{case}.nii.gz`` (uint8 labels) or, for DICOM input, ``{case}.dcm`` (a DICOM Segmentation
referring to its source series), and optionally ``{case}_probabilities.nii.gz`` (float32,
channels last), written atomically.

Example:
    >>> predictor = load_predictor("runs/seg/Dataset004", device="cuda")
    >>> predict_files(predictor, ["imagesTs"], "predictions", overlap=0.5)
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.transforms import Compose, Invertd, KeepLargestConnectedComponent
from torch import nn
from tqdm.auto import tqdm

from visprior.data.dataset import num_classes_for
from visprior.data.dicom import DicomSeries, check_one_grid, dicom_cases
from visprior.data.dicom_seg import write_segmentation
from visprior.data.volumes import read_volume_header
from visprior.engine.checkpoint import (
    CheckpointError,
    build_model_from_checkpoint,
    find_checkpoint,
    load_checkpoint,
)
from visprior.engine.config import config_from_dict, config_to_dict
from visprior.engine.distributed import resolve_device
from visprior.engine.precision import autocast, resolve_precision
from visprior.fileio import NIFTI_SUFFIXES, check_outputs, nifti_stem, save_nifti_atomic
from visprior.reparam import reparameterize_model
from visprior.seg.config import Preprocessing
from visprior.seg.transforms import inference_transforms, resolve_intensity

__all__ = [
    "OUTPUT_FORMATS",
    "SegmentationPredictor",
    "case_name",
    "collect_cases",
    "invert_probabilities",
    "keep_largest_components",
    "load_ensemble",
    "load_predictor",
    "predict_files",
    "save_nifti",
]

_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})\.nii(\.gz)?$")
_REQUIRED_ENTRIES = ("model", "labels", "channel_names", "preprocessing", "roi_size")
_AFFINE_TOLERANCE = 1e-4  # mm; MONAI keeps affines in float64, voxel data in float32
OUTPUT_FORMATS = ("nifti", "dicom-seg")

# One input of a case: a NIfTI file (a channel, or all of them) or a DICOM series (a channel).
CaseInput = Path | DicomSeries


@dataclass
class SegmentationPredictor:
    """A fused network with the preprocessing and geometry it was trained with.

    Args:
        model: the network, fused and in eval mode, on ``device``.
        preprocessing: the checkpoint's preprocessing, intensity preset resolved.
        roi_size: sliding-window size in voxels.
        channel_names: one name per input channel.
        labels: class name to label value, background 0 included; a predicted label is
            the index of the network's output channel.
        device: where the network runs.
        overlap: default sliding-window overlap.
        sw_batch_size: default number of windows per forward pass.
        source: where the predictor came from, for messages.
        model_name: the network's registered name (``"repuxnet"``, ``"unet"``...), which a
            DICOM Segmentation names as its algorithm.
        stitch_device: where the whole-volume output is assembled; ``None``: on ``device``
            when it is the CPU or when the buffers take under half of the GPU's free memory,
            else on the CPU (the network still runs on the GPU, window by window).
        buffer_dtype: the whole-volume buffers' type: ``torch.float16`` or ``torch.bfloat16``
            halve their memory (a 512 x 512 x 300 CT with 14 classes: 4.4 GB in float32); the
            network itself still runs in float32.
        precision: ``"32"``, ``"bf16"`` or ``"16-mixed"``: the network's autocast (the
            large-kernel FFT path stays float32; see :mod:`visprior.engine.precision`).
        ensemble: more predictors whose probabilities are averaged with this one's (each with
            its own network, window size and mirroring); they must share its labels, channels
            and preprocessing (see :func:`load_ensemble`).
        mirror_axes: test-time mirroring: each window's softmax is averaged over every
            combination of flips of these spatial axes (0, 1, 2 of the preprocessed grid, as
            ``flip_axes`` in training), each flipped back before it is averaged; ``()``: none.
    """

    model: nn.Module
    preprocessing: Preprocessing
    roi_size: tuple[int, int, int]
    channel_names: list[str]
    labels: dict[str, int]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    overlap: float = 0.5
    sw_batch_size: int = 2
    source: str = "checkpoint"
    model_name: str = "network"
    stitch_device: torch.device | None = None
    buffer_dtype: torch.dtype = torch.float32
    mirror_axes: tuple[int, ...] = ()
    precision: str = "32"
    ensemble: list[SegmentationPredictor] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.mirror_axes = _checked_axes(self.mirror_axes, "mirror_axes")
        self.precision = resolve_precision(self.precision, self.device, amp=False)
        self.transforms: Compose = inference_transforms(self.preprocessing)
        self._invert = Invertd(
            keys="pred", transform=self.transforms, orig_keys="image", nearest_interp=False
        )

    @property
    def num_channels(self) -> int:
        """Input channels the network takes."""
        return len(self.channel_names)

    @property
    def num_classes(self) -> int:
        """Output channels (see :func:`visprior.data.num_classes_for`)."""
        return num_classes_for(self.labels.values())

    def check_case(self, image_paths: Sequence[str | os.PathLike | DicomSeries], case: str):
        """Check, from the headers alone, that a case's files (or DICOM series) fit the network.

        Raises:
            ValueError: the channel count differs from the checkpoint's, or the channel
                files differ in shape or affine; the message names the case.
            DatasetError: a header is unusable (see
                :func:`visprior.data.volumes.check_volume_header`); the message names
                the case and file.
        """
        if any(isinstance(item, DicomSeries) for item in image_paths):
            self._check_dicom_case(image_paths, case)
            return
        images = [_load_nifti(path, case) for path in image_paths]
        if len(images) > 1 and any(img.ndim != 3 for img in images):
            raise ValueError(f"case {case!r}: channel files must be 3D, one channel each")
        count = sum(img.shape[3] if img.ndim == 4 else 1 for img in images)
        if count != self.num_channels or any(img.ndim not in (3, 4) for img in images):
            raise ValueError(
                f"case {case!r}: {count} input channel(s), the checkpoint ({self.source}) "
                f"expects {self.num_channels} ({', '.join(self.channel_names)})"
            )
        first = images[0]
        for path, img in zip(image_paths[1:], images[1:], strict=True):
            if img.shape[:3] != first.shape[:3] or not np.allclose(
                img.affine, first.affine, atol=_AFFINE_TOLERANCE
            ):
                raise ValueError(
                    f"case {case!r}: {Path(path).name} does not share the grid of "
                    f"{Path(image_paths[0]).name} (shape {img.shape[:3]} vs {first.shape[:3]})"
                )

    def _check_dicom_case(self, series: Sequence[DicomSeries], case: str) -> None:
        if not all(isinstance(item, DicomSeries) for item in series):
            raise ValueError(f"case {case!r}: mixes DICOM series and NIfTI files")
        if len(series) != self.num_channels:
            raise ValueError(
                f"case {case!r}: {len(series)} DICOM series, the checkpoint ({self.source}) "
                f"expects {self.num_channels} ({', '.join(self.channel_names)})"
            )
        check_one_grid(series, case)

    def predict_case(
        self,
        image_paths: Sequence[str | os.PathLike | DicomSeries],
        overlap: float | None = None,
        sw_batch_size: int | None = None,
        case: str | None = None,
        probabilities: bool = True,
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, Any]:
        """Segment one case and return the result in the input's original geometry.

        Args:
            image_paths: the case's channel files in channel order (or one multi-channel file),
                or its DICOM series, one per channel.
            overlap: sliding-window overlap; the predictor's default when ``None``.
            sw_batch_size: windows per forward pass; the predictor's default when ``None``.
            case: the case's name for messages; from the first file name when ``None``.
            probabilities: also return the probabilities; without them the whole-volume
                float32 array is never made (the labels come from a running argmax).

        Returns:
            ``(labels, probabilities, affine, header)``: uint8 labels of the input's spatial
            shape, float32 class probabilities ``(C, *shape)`` (or ``None``), the input's
            affine and its NIfTI header (of the first channel file; for DICOM, one made from
            the series' affine).

        Raises:
            ValueError: the files do not fit the network (see :meth:`check_case`).
            DatasetError: a file cannot be read (a ValueError too); the message names the
                case and file.
        """
        paths = [p if isinstance(p, DicomSeries) else Path(p) for p in image_paths]
        if case is None:
            dicom = isinstance(paths[0], DicomSeries)
            case = paths[0].folder.name if dicom else case_name(paths[0])
        self.check_case(paths, case)
        if isinstance(paths[0], DicomSeries):
            spatial, affine = paths[0].shape, paths[0].affine
            header = nifti_header(affine)
        else:
            reference = _load_nifti(paths[0], case)
            spatial, affine, header = tuple(reference.shape[:3]), reference.affine, reference.header
        files = [_loadable(p) for p in paths] if len(paths) > 1 else _loadable(paths[0])
        image = self.transforms({"image": files, "case": case})["image"]
        grid_probabilities = self._infer(image, overlap, sw_batch_size)
        for member in self.ensemble:  # same preprocessing: the same grid, averaged in place
            grid_probabilities += member._infer(image, overlap, sw_batch_size)
        if self.ensemble:
            grid_probabilities /= 1 + len(self.ensemble)
        labels, kept = invert_probabilities(
            grid_probabilities, image, self._invert, spatial, affine, case, probabilities
        )
        return labels, kept, affine, header

    @torch.no_grad()
    def _infer(self, image: torch.Tensor, overlap: float | None, sw_batch_size: int | None):
        """Softmax probabilities on the preprocessed grid, ``(C, ...)``, on the CPU, in
        ``buffer_dtype``."""
        stitch = self._stitch_device(image.shape[1:])
        flips = [
            [2 + axis for axis in combination]
            for count in range(len(self.mirror_axes) + 1)
            for combination in itertools.combinations(self.mirror_axes, count)
        ]

        def network(window: torch.Tensor) -> torch.Tensor:
            with autocast(self.precision, self.device):
                return self.model(window).float()

        def window_logits(window: torch.Tensor) -> torch.Tensor:
            if not self.mirror_axes:
                return network(window.float()).to(self.buffer_dtype)
            # Mirrored: the windows' mean softmax, each flip undone on the output.
            total = None
            for dims in flips:
                flipped = window.float().flip(dims) if dims else window.float()
                probabilities = torch.softmax(network(flipped), dim=1)
                probabilities = probabilities.flip(dims) if dims else probabilities
                total = probabilities if total is None else total + probabilities
            return (total / len(flips)).to(self.buffer_dtype)

        logits = sliding_window_inference(
            image.as_tensor()[None].to(self.buffer_dtype),  # MONAI's buffers take this type
            roi_size=self.roi_size,
            sw_batch_size=self.sw_batch_size if sw_batch_size is None else sw_batch_size,
            predictor=window_logits,
            overlap=self.overlap if overlap is None else overlap,
            mode="gaussian",
            sw_device=self.device,
            device=stitch,
        )
        probabilities = torch.as_tensor(logits)[0]
        del logits
        if self.mirror_axes:  # the windows gave probabilities already
            return probabilities.cpu()
        # softmax slab by slab, in place: no second whole-volume copy
        for slab in probabilities.split(8, dim=-1):
            slab.copy_(torch.softmax(slab.float(), dim=0))
        return probabilities.cpu()

    def _stitch_device(self, spatial_shape: Sequence[int]) -> torch.device:
        if self.stitch_device is not None:
            return self.stitch_device
        if self.device.type != "cuda":
            return self.device
        voxels = int(np.prod(spatial_shape))
        needed = (self.num_classes + 1) * voxels * torch.finfo(self.buffer_dtype).bits // 8
        free, _ = torch.cuda.mem_get_info(self.device)
        return self.device if needed < free / 2 else torch.device("cpu")


def invert_probabilities(
    probabilities: torch.Tensor,
    image: torch.Tensor,
    invert: Invertd,
    spatial_shape: Sequence[int],
    affine: np.ndarray,
    case: str,
    keep_probabilities: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Undo the preprocessing's spatial steps (bilinear) on the probabilities ``(C, ...)`` of
    the preprocessed ``image``; return the labels (their argmax) and, if asked, the
    probabilities, on the input's grid (``spatial_shape``, ``affine``).

    ``invert`` is ``Invertd(keys="pred", transform=<the preprocessing>, orig_keys="image",
    nearest_interp=False)``. Inverting the foreground crop pads with zeros, and zero
    probabilities everywhere are not a distribution. So the inverse runs on ``probabilities -
    background one-hot``, whose zero is "certainly background": padding and interpolation then
    stay convex combinations of distributions, and adding the one-hot back makes them sum to 1.
    The inverse is linear and the same for every class, so it runs one class at a time: the
    largest whole-volume array is the output itself, or none without probabilities.

    Raises:
        RuntimeError: the inverse did not restore the input's grid (names the case).
    """
    spatial = tuple(int(s) for s in spatial_shape)
    kept = np.empty((len(probabilities), *spatial), np.float32) if keep_probabilities else None
    labels = np.zeros(spatial, np.uint8)
    best = None
    for index in range(len(probabilities)):
        channel = probabilities[index : index + 1].float()  # resampling works in float32
        if index == 0:
            channel -= 1.0
        # Invertd takes the image's applied operations only for a MetaTensor "pred"
        inverted = invert({"pred": MetaTensor(channel), "image": image})["pred"]
        if tuple(inverted.shape[1:]) != spatial or not np.allclose(
            np.asarray(inverted.affine), affine, atol=_AFFINE_TOLERANCE
        ):
            raise RuntimeError(
                f"case {case!r}: inverting the preprocessing did not restore the input's "
                f"grid (shape {tuple(inverted.shape[1:])} vs {spatial}, or a different affine)"
            )
        values = inverted.detach().cpu().as_tensor()[0].float().numpy()
        if index == 0:
            values += 1.0
        np.clip(values, 0.0, 1.0, out=values)
        if kept is not None:
            kept[index] = values
        if best is None:
            best = values.copy()
        else:
            better = values > best
            labels[better] = index
            np.maximum(best, values, out=best)
    return labels, kept


def load_predictor(
    run_or_checkpoint: str | os.PathLike,
    device: str | torch.device = "cpu",
    stitch_device: str | torch.device | None = None,
    buffer_dtype: str | torch.dtype = torch.float32,
    tta: bool = False,
    tta_axes: Sequence[int] | None = None,
    precision: str = "32",
) -> SegmentationPredictor:
    """Build the fused network a run folder or checkpoint describes, ready to predict.

    Args:
        run_or_checkpoint: a run folder (its best checkpoint, else its last) or a ``.pt`` file.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``... or ``"auto"`` (CUDA when available).
        stitch_device, buffer_dtype: see :class:`SegmentationPredictor` (a dtype may be
            named: ``"float32"``, ``"float16"``, ``"bfloat16"``).
        tta: mirror over the axes training flipped (the checkpoint's ``flip_axes``).
        tta_axes: mirror over these axes instead (implies ``tta``).
        precision: the network's autocast (see :class:`SegmentationPredictor`).

    Raises:
        ValueError: ``tta`` for a network trained without flips and no ``tta_axes``: a
            network that tells left from right would be averaged with its mirror image.

    Raises:
        FileNotFoundError: no checkpoint found (see :func:`find_checkpoint`).
        CheckpointError: the checkpoint lacks a segmentation entry or does not fit its network.
    """
    path = find_checkpoint(run_or_checkpoint)
    state = _read_segmentation_checkpoint(path)
    channel_names = [str(name) for name in state["channel_names"]]
    device = resolve_device(device)
    model = build_model_from_checkpoint(state, source=str(path))
    model = reparameterize_model(model).eval().to(device)
    pre = config_from_dict(Preprocessing, state["preprocessing"], source=f"{path}: preprocessing")
    mirror_axes = _mirror_axes(state, path, tta, tta_axes)
    return SegmentationPredictor(
        model=model,
        preprocessing=resolve_intensity(pre, channel_names),
        roi_size=tuple(int(s) for s in state["roi_size"]),
        channel_names=channel_names,
        labels={str(name): int(value) for name, value in state["labels"].items()},
        device=device,
        sw_batch_size=int(state.get("config", {}).get("sw_batch_size", 2)),
        source=str(path),
        model_name=str(state["model"].get("name", "network")),
        stitch_device=None if stitch_device in (None, "auto") else torch.device(stitch_device),
        buffer_dtype=_buffer_dtype(buffer_dtype),
        mirror_axes=mirror_axes,
        precision=precision,
    )


def _mirror_axes(
    state: dict, path: Path, tta: bool, tta_axes: Sequence[int] | None
) -> tuple[int, ...]:
    if tta_axes is not None:
        return _checked_axes(tta_axes, "--tta-axes")
    if not tta:
        return ()
    trained = state.get("config", {}).get("flip_axes", [])
    if not trained:
        raise ValueError(
            f"--tta: {path} was trained without flips (flip_axes is empty); mirroring a "
            "network that tells left from right would average it with its mirror image and "
            "corrupt the labels. Name the axes with --tta-axes to mirror anyway"
        )
    return _checked_axes(trained, f"{path}: flip_axes")


def _checked_axes(axes: Sequence[int], what: str) -> tuple[int, ...]:
    axes = tuple(axes)
    if any(isinstance(a, bool) or not isinstance(a, int) or not 0 <= a <= 2 for a in axes):
        raise ValueError(f"{what}: spatial axes are 0, 1 and 2; got {list(axes)}")
    if len(set(axes)) != len(axes):
        raise ValueError(f"{what}: an axis is named twice: {list(axes)}")
    return tuple(sorted(axes))


def load_ensemble(runs: Sequence[str | os.PathLike], **options: Any) -> SegmentationPredictor:
    """One predictor averaging the probabilities of several runs (folds, seeds, networks);
    ``options`` go to :func:`load_predictor` for each.

    Raises:
        ValueError: the runs disagree on the labels, the channels or a preprocessing setting
            (the setting and both values named): their probabilities could not be averaged.
    """
    if not runs:
        raise ValueError("an ensemble needs at least one run")
    first, *others = [load_predictor(run, **options) for run in runs]
    for run, other in zip(runs[1:], others, strict=True):
        difference = _first_difference(first, other)
        if difference:
            raise ValueError(
                f"cannot ensemble {runs[0]} and {run}: they differ in {difference}; an "
                "ensemble needs runs trained on the same labels and preprocessing"
            )
    first.ensemble = others
    return first


def _first_difference(one: SegmentationPredictor, other: SegmentationPredictor) -> str:
    if one.labels != other.labels:
        return f"labels ({one.labels} vs {other.labels})"
    if one.channel_names != other.channel_names:
        return f"channel_names ({one.channel_names} vs {other.channel_names})"
    mine, theirs = config_to_dict(one.preprocessing), config_to_dict(other.preprocessing)
    for key, value in mine.items():
        if theirs.get(key) != value:
            return f"preprocessing.{key} ({value} vs {theirs.get(key)})"
    return ""


BUFFER_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _buffer_dtype(value: str | torch.dtype) -> torch.dtype:
    if isinstance(value, torch.dtype) and value in BUFFER_DTYPES.values():
        return value
    if value in BUFFER_DTYPES:
        return BUFFER_DTYPES[value]
    raise ValueError(f"buffer dtype must be one of {', '.join(BUFFER_DTYPES)}; got {value!r}")


def _read_segmentation_checkpoint(path: Path) -> dict:
    state = load_checkpoint(path, map_location="cpu")
    missing = [key for key in _REQUIRED_ENTRIES if key not in state]
    if missing:
        raise CheckpointError(f"{path}: not a segmentation checkpoint (no {', '.join(missing)})")
    n_names = len(state["channel_names"])
    in_channels = state["model"].get("kwargs", {}).get("in_channels", n_names)
    if in_channels != n_names:
        raise CheckpointError(
            f"{path}: {n_names} channel name(s) but a network of {in_channels} input channel(s)"
        )
    return state


def case_name(path: str | os.PathLike) -> str:
    """A case's name from a file name: extension and a ``_0000`` channel suffix removed."""
    name = _strip_nifti_suffix(Path(path).name)
    return re.sub(r"_\d{4}$", "", name)


def _strip_nifti_suffix(name: str) -> str:
    stem = nifti_stem(name)
    if stem is None:
        raise ValueError(f"{name}: not a NIfTI file (.nii or .nii.gz)")
    return stem


def collect_cases(
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    num_channels: int,
    channel_names: Sequence[str] | None = None,
) -> dict[str, list[CaseInput]]:
    """Group inputs into cases, each a list of channel files (or DICOM series) in channel order.

    In a folder, ``{case}_{XXXX}.nii(.gz)`` files are one case's channels and must be
    exactly ``0000`` to ``num_channels - 1``; other NIfTI files are one case each. A file
    given by itself is one case. A folder without NIfTI files is read as DICOM (see
    :func:`visprior.data.dicom.dicom_cases`: the folder is one case, or each of its
    subfolders is; a case's series are matched to ``channel_names``, which default to
    ``0000``, ``0001``...).

    Raises:
        FileNotFoundError: an input does not exist.
        ValueError: a channel file is missing or extra, two inputs make the same case, or
            nothing was found; the message names the case.
        DicomSeriesError: a DICOM series is unusable or does not match a channel (a
            ValueError too); the message names the series.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    names = list(channel_names or [f"{c:04d}" for c in range(num_channels)])
    cases: dict[str, list[CaseInput]] = {}
    for item in map(Path, inputs):
        if item.is_dir():
            found = _cases_in_folder(item, num_channels) or dicom_cases(item, names)
        elif item.is_file():
            found = {case_name(item): [item]}
        else:
            raise FileNotFoundError(f"input not found: {item}")
        for case, paths in found.items():
            if case in cases:
                raise ValueError(f"case {case!r} is given twice ({cases[case][0]}, {paths[0]})")
            cases[case] = paths
    if not cases:
        raise ValueError(
            f"no NIfTI images (.nii, .nii.gz) or DICOM series in {', '.join(map(str, inputs))}"
        )
    return cases


def _cases_in_folder(folder: Path, num_channels: int) -> dict[str, list[Path]]:
    channels: dict[str, dict[int, Path]] = {}
    cases: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        match = _CHANNEL_FILE.match(path.name)
        if match:
            channels.setdefault(match["case"], {})[int(match["channel"])] = path
        elif path.name.endswith(NIFTI_SUFFIXES):
            cases[_strip_nifti_suffix(path.name)] = [path]
    for case, files in channels.items():
        if case in cases:
            raise ValueError(
                f"case {case!r}: both {cases[case][0].name} and channel files in {folder}"
            )
        cases[case] = _channel_list(case, files, num_channels, folder)
    return dict(sorted(cases.items()))


def _channel_list(case: str, files: dict[int, Path], num_channels: int, folder: Path):
    missing = [f"{case}_{c:04d}" for c in range(num_channels) if c not in files]
    if missing:
        raise ValueError(
            f"case {case!r}: missing channel file(s) {', '.join(missing)} in {folder} "
            f"(the checkpoint expects {num_channels} channel(s))"
        )
    if len(files) != num_channels:
        raise ValueError(
            f"case {case!r}: {len(files)} channel files in {folder}, "
            f"the checkpoint expects {num_channels}"
        )
    return [files[c] for c in range(num_channels)]


def predict_files(
    predictor: SegmentationPredictor,
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    output_dir: str | os.PathLike,
    overlap: float = 0.5,
    sw_batch_size: int = 2,
    save_probabilities: bool = False,
    overwrite: bool = False,
    largest_component: bool | Sequence[int] = False,
    output_format: str = "nifti",
) -> list[Path]:
    """Segment every case in ``inputs`` and write ``{case}.nii.gz`` (or ``{case}.dcm``) to
    ``output_dir``.

    Every case and output path is checked before the first prediction, so a bad input or
    an existing output fails at once rather than hours in.

    Args:
        predictor: from :func:`load_predictor`.
        inputs: files and/or folders (see :func:`collect_cases`).
        output_dir: created if needed.
        overlap: sliding-window overlap.
        sw_batch_size: windows per forward pass.
        save_probabilities: also write ``{case}_probabilities.nii.gz`` (float32, channels last).
        overwrite: replace existing outputs. An input file is never replaced.
        largest_component: keep only the largest connected component of each class (for
            structures known to be one piece), or of the classes listed (a run's decision,
            see :mod:`visprior.seg.postprocess`); the probabilities are left as predicted.
        output_format: ``"nifti"``, or ``"dicom-seg"``: one DICOM Segmentation per case,
            referring to the series of its first channel (DICOM input only; see
            :func:`visprior.data.dicom_seg.write_segmentation`). Probabilities are NIfTI.

    Returns:
        The label files written, one per case, in case order.

    Raises:
        ValueError: a case does not fit the network, an output would replace an input, or
            ``"dicom-seg"`` for a NIfTI case.
        FileExistsError: an output exists and ``overwrite`` is false.
    """
    if output_format not in OUTPUT_FORMATS:
        choices = ", ".join(OUTPUT_FORMATS)
        raise ValueError(f"output format must be one of {choices}; got {output_format!r}")
    cases = collect_cases(inputs, predictor.num_channels, predictor.channel_names)
    output_dir = Path(output_dir)
    suffix = ".dcm" if output_format == "dicom-seg" else ".nii.gz"
    outputs = {case: _output_paths(output_dir, case, save_probabilities, suffix) for case in cases}
    for case, paths in cases.items():
        if output_format == "dicom-seg" and not isinstance(paths[0], DicomSeries):
            raise ValueError(
                f"case {case!r}: --format dicom-seg needs DICOM input, and {paths[0].name} is "
                "NIfTI: a DICOM Segmentation refers to the DICOM images it segments "
                "(use --format nifti)"
            )
    _check_outputs(cases, outputs, overwrite)
    for case, paths in cases.items():
        predictor.check_case(paths, case)
    written = []
    for case, paths in tqdm(cases.items(), desc="predict", unit="case"):
        labels, probabilities, _, header = predictor.predict_case(
            paths,
            overlap=overlap,
            sw_batch_size=sw_batch_size,
            case=case,
            probabilities=save_probabilities,
        )
        if largest_component is True:
            labels = keep_largest_components(labels, predictor.num_classes)
        elif largest_component:
            labels = keep_largest_components(labels, predictor.num_classes, largest_component)
        label_path, *probability_path = outputs[case]
        if output_format == "dicom-seg":
            write_segmentation(labels, paths[0], predictor.labels, label_path, predictor.model_name)
        else:
            save_nifti(labels, header, label_path)
        if probability_path:
            save_nifti(np.moveaxis(probabilities, 0, -1), header, probability_path[0])
        written.append(label_path)
    return written


def keep_largest_components(
    labels: np.ndarray, num_classes: int, classes: Sequence[int] | None = None
) -> np.ndarray:
    """Per foreground class (or per class of ``classes``), drop every voxel outside its
    largest connected component (to background), with MONAI's
    ``KeepLargestConnectedComponent``."""
    chosen = list(range(1, num_classes)) if classes is None else [int(c) for c in classes]
    if not chosen:
        return labels
    keep = KeepLargestConnectedComponent(applied_labels=chosen)
    kept = keep(torch.from_numpy(labels.astype(np.int64))[None])
    return np.asarray(kept[0]).astype(labels.dtype)


def _output_paths(
    output_dir: Path, case: str, save_probabilities: bool, suffix: str = ".nii.gz"
) -> list[Path]:
    paths = [output_dir / f"{case}{suffix}"]
    if save_probabilities:
        paths.append(output_dir / f"{case}_probabilities.nii.gz")
    return paths


def _check_outputs(
    cases: dict[str, list[CaseInput]], outputs: dict[str, list[Path]], overwrite: bool
) -> None:
    inputs = [
        path
        for items in cases.values()
        for item in items
        for path in (item.files if isinstance(item, DicomSeries) else [item])
    ]
    check_outputs([path for paths in outputs.values() for path in paths], inputs, overwrite)


def save_nifti(data: np.ndarray, header: Any, path: str | os.PathLike) -> Path:
    """Write ``data`` as gzipped NIfTI-1, atomically, on the grid ``header`` describes.

    The reference header's qform and sform (matrices and codes) and units are copied, so
    the output lines up with the input in every viewer.
    """
    img = nib.Nifti1Image(data, None)
    img.header.set_xyzt_units(*header.get_xyzt_units())
    img.set_qform(header.get_qform(), code=int(header["qform_code"]))
    img.set_sform(header.get_sform(), code=int(header["sform_code"]))
    return save_nifti_atomic(img, path)


def nifti_header(affine: np.ndarray) -> nib.Nifti1Header:
    """A NIfTI header for a volume on ``affine`` (RAS, millimetres; qform and sform "scanner")."""
    header = nib.Nifti1Header()
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    header.set_xyzt_units("mm")
    return header


def _loadable(item: CaseInput) -> str | DicomSeries:
    return item if isinstance(item, DicomSeries) else str(item)


def _load_nifti(path: str | os.PathLike, case: str) -> Any:
    """The image with its header checked, its voxels not read (see ``read_volume_header``)."""
    _strip_nifti_suffix(Path(path).name)
    return read_volume_header(path, case)
