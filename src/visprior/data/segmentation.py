"""Read, check and split 3D segmentation datasets stored in the nnU-Net v2 or MSD layout.

Two on-disk layouts are understood, told apart by the keys of ``dataset.json``:

* **nnU-Net v2 raw** (``channel_names``): ``imagesTr/{case}_{XXXX}{file_ending}`` (one file per
  channel), ``labelsTr/{case}{file_ending}``, optional ``imagesTs/``.
* **Medical Segmentation Decathlon** (``training``): a list of image/label paths; a multi-channel
  image is a single 4D NIfTI with the channels on the last axis.

``load_dataset`` reads only ``dataset.json`` and the folder listing and raises
:class:`DatasetError` on the first problem that makes the dataset unusable. ``check_dataset``
also opens every image and label and reports every problem it finds. ``kfold_split`` makes a
deterministic case-wise cross-validation split; ``save_split``/``load_split`` store it as JSON.

Every file is treated as untrusted: a path or symlink leaving the dataset folder is refused, not
read; a volume's header is checked against its file size before any voxel array is allocated
(``check_volume_header``, ``read_volume_header``, ``verify_headers``); ``read_volume`` turns any
reading failure into a :class:`DatasetError` naming the case and file.

Example:
    >>> dataset = load_dataset("nnUNet_raw/Dataset004_Hippocampus")
    >>> print(format_problems(check_dataset(dataset.root)))
    >>> split = kfold_split([case.name for case in dataset.training], folds=5)
    >>> train_files = dataset.data_dicts(split[0]["train"])
"""

from __future__ import annotations

import errno
import gzip
import json
import math
import os
import posixpath
import random
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import nibabel as nib
import numpy as np

from visprior.engine.errors import brief, error_text
from visprior.fileio import atomic_path

__all__ = [
    "MAX_VOXELS",
    "DatasetError",
    "DatasetProblem",
    "ProblemList",
    "SegmentationCase",
    "SegmentationDataset",
    "check_dataset",
    "check_volume_header",
    "format_problems",
    "kfold_split",
    "load_dataset",
    "load_split",
    "read_volume",
    "read_volume_header",
    "save_split",
    "verify_headers",
]

# The most voxels accepted from a compressed volume's header. A compressed file's size does not
# bound its voxel count tightly, so without a limit a forged header could make a reader allocate
# terabytes. 2**31 voxels are 8 GiB as float32: four times a 512 x 512 x 2000-slice CT.
MAX_VOXELS = 2**31

# The largest label value accepted: a network gets one output per value up to the largest, so
# a stray 65535 would make a head of 65536 channels. Whole-body sets have about 120 classes.
MAX_LABEL_VALUE = 1000

# Problems that make ``load_dataset`` fail; the others (stray files, ...) are only reported.
_BLOCKING = frozenset(
    {
        "missing-folder",
        "missing-dataset-json",
        "invalid-json",
        "missing-key",
        "invalid-value",
        "unsupported-labels",
        "no-cases",
        "duplicate-case",
        "missing-file",
        "path-outside-root",
        "not-a-file",
        "unreadable-folder",
        "case-count-mismatch",
    }
)
# Deflate never expands data more than 1032-fold, so a gzip file of n bytes holds at most
# 1032 * n bytes: a header asking for more is forged or the file was cut short.
_MAX_DEFLATE_RATIO = 1032
_MAX_DIMENSIONS = 5  # x, y, z, time and one more (ITK's vector axis); NIfTI allows 7
_GZIP_MAGIC = b"\x1f\x8b"
_OTHER_COMPRESSION_MAGICS = (b"BZh", b"\x28\xb5\x2f\xfd")  # bzip2, zstandard
_CHECKSUM_CHUNK = 16 * 2**20  # bytes decompressed at a time to reach a gzip file's CRC
_MAX_DATASET_JSON_BYTES = 64 * 2**20  # MSD's longest dataset.json is well under 1 MiB
_MAX_SHOWN_PATH = 200  # characters of a path shown in a message
_CHANNEL_RE = re.compile(r"(?P<case>.+)_(?P<channel>\d{4})")
_MRI_NAMES = frozenset({"MR", "MRI", "FLAIR", "ADC", "DWI", "PD", "PDW", "SWI", "DCE", "DIFFUSION"})
_AFFINE_ATOL = 1e-3


class DatasetError(ValueError):
    """A dataset, or a split file, cannot be used; the message names the file, case or key.

    Attributes:
        problems: the blocking problems found (empty when the error is not about a dataset).
    """

    def __init__(self, message: str, problems: Iterable[DatasetProblem] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


@dataclass(frozen=True)
class DatasetProblem:
    """One problem found in a dataset.

    Attributes:
        kind: short slug such as ``"missing-file"`` or ``"shape-mismatch"``.
        message: human-readable sentence naming the file, case or key at fault.
        case: the case concerned, or None for a dataset-wide problem.
        path: the file concerned, or None.
    """

    kind: str
    message: str
    case: str | None = None
    path: Path | None = None

    def __str__(self) -> str:
        where = f"{_printable(self.case)}: " if self.case else ""
        return f"{where}{self.message} [{self.kind}]"


class ProblemList(list):
    """A list of :class:`DatasetProblem` that also knows how many cases were checked."""

    def __init__(self, problems: Iterable[DatasetProblem] = (), num_cases: int | None = None):
        super().__init__(problems)
        self.num_cases = num_cases


@dataclass(frozen=True)
class SegmentationCase:
    """One case: its image file(s) and, for training cases, its label file.

    Attributes:
        name: case identifier (nnU-Net: the file prefix; MSD: the image file name without ending).
        images: nnU-Net: one file per channel, in channel order; MSD: one (maybe 4D) file.
        label: the label map, or None for test cases.
    """

    name: str
    images: tuple[Path, ...]
    label: Path | None


@dataclass
class SegmentationDataset:
    """A dataset as described by its ``dataset.json`` and folder listing.

    Attributes:
        root: the dataset folder (the one holding ``dataset.json``).
        layout: ``"nnunet"`` or ``"msd"``.
        channel_names: one name per input channel, in channel order.
        labels: label name -> value, background (0) included, sorted by value.
        file_ending: file ending of every image and label, e.g. ``".nii.gz"``.
        training: labelled cases, sorted by name for nnU-Net, in ``dataset.json`` order for MSD.
        test: unlabelled cases (``imagesTs``), possibly empty.
    """

    root: Path
    layout: str
    channel_names: tuple[str, ...]
    labels: dict[str, int]
    file_ending: str
    training: list[SegmentationCase]
    test: list[SegmentationCase] = field(default_factory=list)

    @property
    def num_channels(self) -> int:
        """Number of input channels."""
        return len(self.channel_names)

    @property
    def num_classes(self) -> int:
        """Number of output classes of a network: the largest label value plus one."""
        return max(self.labels.values()) + 1

    @property
    def foreground_labels(self) -> tuple[str, ...]:
        """Names of the non-background labels, sorted by value."""
        return tuple(name for name, value in self.labels.items() if value != 0)

    @property
    def modality(self) -> str:
        """``"CT"`` if every channel is CT, ``"MRI"`` if any is an MR sequence, else ``"other"``."""
        if all(name.strip().upper() == "CT" for name in self.channel_names):
            return "CT"
        return "MRI" if any(_is_mri(name) for name in self.channel_names) else "other"

    def data_dicts(self, cases: Iterable[str | SegmentationCase] | None = None) -> list[dict]:
        """MONAI-style dictionaries, e.g. for ``monai.data.Dataset``.

        Args:
            cases: case names or cases to include (training or test); default every training case.

        Returns:
            One ``{"image": str or [str, ...], "label": str, "case": name}`` per case; ``image``
            is a list when a case has one file per channel, ``label`` is left out for test cases.

        Raises:
            DatasetError: a case name is not in this dataset.
        """
        by_name = {case.name: case for case in self.test + self.training}
        chosen = self.training if cases is None else [_find_case(by_name, c) for c in cases]
        return [_data_dict(case) for case in chosen]


def _brief(value: Any) -> str:
    """A repr of a ``dataset.json`` value short enough for a one-line message."""
    return brief(value, width=80, depth=2)


def _printable(text: str) -> str:
    """A path or name fit for a one-line message: control characters (and the surrogates of an
    undecodable file name) escaped, the middle of a very long one left out."""
    if not text.isprintable():
        text = text.encode("unicode_escape").decode("ascii")
    if len(text) > _MAX_SHOWN_PATH:
        half = _MAX_SHOWN_PATH // 2
        text = f"{text[:half]}...({len(text) - 2 * half} characters)...{text[-half:]}"
    return text


def _is_mri(channel_name: str) -> bool:
    key = re.sub(r"[^A-Z0-9]", "", channel_name.upper())
    return key in _MRI_NAMES or key.startswith(("MR", "T1", "T2"))


def _find_case(by_name: dict[str, SegmentationCase], case: str | SegmentationCase):
    name = case.name if isinstance(case, SegmentationCase) else case
    if name not in by_name:
        raise DatasetError(f"no case named {name!r} in this dataset")
    return by_name[name]


def _data_dict(case: SegmentationCase) -> dict[str, Any]:
    images = [str(path) for path in case.images]
    entry: dict[str, Any] = {"image": images[0] if len(images) == 1 else images}
    if case.label is not None:
        entry["label"] = str(case.label)
    entry["case"] = case.name
    return entry


class _Problems(ProblemList):
    """Collects problems; paths in messages are shown relative to the dataset folder."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def add(self, kind: str, message: str, case: str | None = None, path: Path | None = None):
        self.append(DatasetProblem(kind, message, case, path))

    def rel(self, path: Path) -> str:
        try:
            return _printable(path.relative_to(self.root).as_posix())
        except ValueError:
            return _printable(str(path))

    def require(self, meta: dict, keys: Iterable[str]) -> bool:
        missing = [key for key in keys if key not in meta]
        for key in missing:
            self.add(
                "missing-key", f"dataset.json has no {key!r} key", path=self.root / "dataset.json"
            )
        return not missing


# ---------------------------------------------------------------------------------------------
# Structure: dataset.json and the folder listing
# ---------------------------------------------------------------------------------------------


def load_dataset(root: str | os.PathLike) -> SegmentationDataset:
    """Read a dataset's ``dataset.json`` and list its files, without opening any image.

    Args:
        root: the dataset folder, e.g. ``nnUNet_raw/Dataset004_Hippocampus`` or ``Task09_Spleen``.

    Returns:
        The dataset, with the layout detected from the keys of ``dataset.json``.

    Raises:
        DatasetError: on the first structural problem: no ``dataset.json``, invalid JSON, a missing
            key or bad value, region-based labels, no cases, a missing file, a path leaving the
            folder, or ``numTraining`` not matching the cases. Stray files are not an error here;
            ``check_dataset`` reports them.
    """
    dataset, problems = _scan(Path(root))
    blocking = [problem for problem in problems if problem.kind in _BLOCKING]
    if blocking:
        more = f" (and {_plural(len(blocking) - 1, 'more problem')})" if blocking[1:] else ""
        raise DatasetError(f"{blocking[0]}{more}", blocking)
    assert dataset is not None
    return dataset


def _scan(root: Path) -> tuple[SegmentationDataset | None, _Problems]:
    """Build the dataset from dataset.json and the listing, collecting every structural problem."""
    problems = _Problems(root)
    meta = _read_meta(root, problems)
    if meta is None:
        return None, problems
    if "channel_names" in meta:
        dataset = _scan_nnunet(root, meta, problems)
    elif "training" in meta:
        dataset = _scan_msd(root, meta, problems)
    else:
        message = "dataset.json has neither 'channel_names' (nnU-Net v2) nor 'training' (MSD)"
        problems.add("missing-key", message, path=root / "dataset.json")
        return None, problems
    if dataset is not None and not dataset.training:
        problems.add("no-cases", f"no training cases found in {root}", path=root)
    return dataset, problems


def _read_meta(root: Path, problems: _Problems) -> dict | None:
    path = root / "dataset.json"
    if not root.is_dir():
        problems.add("missing-folder", f"dataset folder {root} does not exist", path=root)
    elif not path.exists():
        problems.add("missing-dataset-json", f"no dataset.json in {root}", path=path)
    elif not path.is_file():  # a folder, a pipe (which would block) or a device
        problems.add("invalid-json", f"{path} is not a regular file", path=path)
    elif (size := path.stat().st_size) > _MAX_DATASET_JSON_BYTES:
        message = f"{path} is {size} bytes, too large for a dataset description"
        problems.add("invalid-json", f"{message} (limit {_MAX_DATASET_JSON_BYTES})", path=path)
    else:
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            message = f"{path} is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}"
            problems.add("invalid-json", message, path=path)
            return None
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
            # ValueError: an integer too long to convert; RecursionError: arrays nested too deep
            message = f"cannot read {path}: {type(err).__name__}: {error_text(err)}"
            problems.add("invalid-json", message, path=path)
            return None
        if isinstance(meta, dict):
            return meta
        problems.add("invalid-json", f"{path} must hold a JSON object", path=path)
    return None


def _parse_channels(meta: dict, key: str, problems: _Problems) -> tuple[str, ...] | None:
    """Channel names from ``{"0": "T1", "1": "T2"}``; keys must be 0..n-1."""
    mapping = meta[key]
    try:
        by_index = {int(index): str(name) for index, name in mapping.items()}
    except (AttributeError, TypeError, ValueError):
        by_index = {}
    if not by_index or sorted(by_index) != list(range(len(by_index))):
        message = (
            f"dataset.json {key!r} must map '0', '1', ... to channel names, got {_brief(mapping)}"
        )
        problems.add("invalid-value", message, path=problems.root / "dataset.json")
        return None
    return tuple(by_index[index] for index in range(len(by_index)))


def _parse_labels(meta: dict, layout: str, problems: _Problems) -> dict[str, int] | None:
    """Label name -> value; nnU-Net stores name -> value, MSD value -> name."""
    raw, labels, path = meta["labels"], {}, problems.root / "dataset.json"
    raw = raw if isinstance(raw, dict) else {}
    pairs = raw.items()
    if layout == "msd":
        pairs = [(name, _as_int(value)) for value, name in pairs]
    for name, value in pairs:
        if isinstance(value, (list, tuple)):
            message = (
                f"label {_brief(name)} in dataset.json is region-based ({_brief(value)}); "
                "region-based labels are not supported"
            )
            problems.add("unsupported-labels", message, path=path)
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            labels[str(name)] = value
    values = list(labels.values())
    if values and max(values) > MAX_LABEL_VALUE:
        name = max(labels, key=labels.__getitem__)
        message = (
            f"label {_brief(name)} in dataset.json has the value {_brief(labels[name])}; values "
            f"above {MAX_LABEL_VALUE} are refused (the network would get one output per value "
            "up to the largest): renumber the labels"
        )
        problems.add("invalid-value", message, path=path)
        return None
    if len(labels) != len(raw) or len(set(values)) != len(values) or 0 not in values:
        message = (
            "dataset.json 'labels' must give each label its own integer >= 0, with background 0;"
            f" got {_brief(meta['labels'])}"
        )
        problems.add("invalid-value", message, path=path)
        return None
    return dict(sorted(labels.items(), key=lambda item: item[1]))


def _as_int(text: Any) -> int | None:
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def _check_count(meta: dict, found: int, problems: _Problems) -> None:
    expected = meta.get("numTraining")
    if expected is not None and expected != found:
        message = (
            f"dataset.json says numTraining is {_brief(expected)} but {found} training cases "
            "were found"
        )
        problems.add("case-count-mismatch", message, path=problems.root / "dataset.json")


def _scan_nnunet(root: Path, meta: dict, problems: _Problems) -> SegmentationDataset | None:
    if not problems.require(meta, ("channel_names", "labels", "numTraining", "file_ending")):
        return None
    channels = _parse_channels(meta, "channel_names", problems)
    labels = _parse_labels(meta, "nnunet", problems)
    ending = meta["file_ending"]
    if not (isinstance(ending, str) and ending.startswith(".")):
        message = f"dataset.json 'file_ending' must look like '.nii.gz', got {_brief(ending)}"
        problems.add("invalid-value", message, path=root / "dataset.json")
        return None
    if channels is None or labels is None:
        return None
    training, listed = _list_nnunet(root, "imagesTr", "labelsTr", len(channels), ending, problems)
    test = []
    if (root / "imagesTs").is_dir():
        test, _ = _list_nnunet(root, "imagesTs", None, len(channels), ending, problems)
    _check_count(meta, listed, problems)
    return SegmentationDataset(root, "nnunet", channels, labels, ending, training, test)


def _list_nnunet(
    root: Path,
    image_dir: str,
    label_dir: str | None,
    channels: int,
    ending: str,
    problems: _Problems,
) -> tuple[list[SegmentationCase], int]:
    """Cases of one nnU-Net image folder: every case prefix seen there, with its expected files.

    Returns:
        The cases, without those having a file that links out of the dataset folder or is not a
        regular file (such a file is reported, never read), and the number of case prefixes seen.
    """
    found = _group_channel_files(root / image_dir, channels, ending, problems)
    cases = []
    for name in sorted(found):
        images = tuple(
            root / image_dir / f"{name}_{index:04d}{ending}" for index in range(channels)
        )
        label = root / label_dir / f"{name}{ending}" if label_dir else None
        usable = True
        for index, path in enumerate(images):
            if index in found[name]:
                usable &= _usable_file(path, f"channel {index} image", name, problems)
            else:
                message = f"channel {index} image {problems.rel(path)} is missing"
                problems.add("missing-file", message, name, path)
        if label is not None:
            usable &= _usable_file(label, "label", name, problems)
        if usable:
            cases.append(SegmentationCase(name, images, label))
    if label_dir:
        _report_orphan_labels(root / label_dir, set(found), ending, problems)
    return cases, len(found)


def _usable_file(path: Path, what: str, case: str, problems: _Problems) -> bool:
    """Whether ``path`` may be read: a regular file inside the dataset folder. A missing file is
    reported but usable (the case stays, its check skips the file); a file linking out of the
    folder, or a folder, pipe or device (reading a pipe blocks forever), is reported and not."""
    resolved = _resolved(path)
    if not resolved.is_relative_to(_resolved(problems.root)):
        message = (
            f"{what} {problems.rel(path)} links to {_printable(str(resolved))}, outside the "
            "dataset folder; it was not read"
        )
        problems.add("path-outside-root", message, case, path)
        return False
    try:
        mode = path.stat().st_mode
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            problems.add("missing-file", f"{what} {problems.rel(path)} is missing", case, path)
            return True
        message = f"{what} {problems.rel(path)} cannot be opened: {error.strerror}"
        problems.add("not-a-file", message, case, path)
        return False
    if not stat.S_ISREG(mode):
        message = f"{what} {problems.rel(path)} is not a regular file; it was not read"
        problems.add("not-a-file", message, case, path)
        return False
    return True


def _resolved(path: Path) -> Path:
    """``path`` with every symlink followed; unlike ``Path.resolve``, a symlink loop does not
    raise (the loop is then reported when the file is opened)."""
    return Path(os.path.realpath(path))


def _listing(folder: Path, problems: _Problems) -> list[Path]:
    """Files of a folder, hidden ones (``.DS_Store``, ``._x.nii.gz``) left out."""
    if not folder.is_dir():
        return []
    try:
        return sorted(path for path in folder.iterdir() if not path.name.startswith("."))
    except OSError as error:
        message = f"folder {problems.rel(folder)}/ cannot be listed: {error.strerror}"
        problems.add("unreadable-folder", message, path=folder)
        return []


def _group_channel_files(folder: Path, channels: int, ending: str, problems: _Problems) -> dict:
    """Case name -> channel indices present, from names like ``case_0001.nii.gz``."""
    if not folder.is_dir():
        problems.add("missing-file", f"folder {problems.rel(folder)}/ is missing", path=folder)
    groups: dict[str, set[int]] = {}
    for path in _listing(folder, problems):
        if not path.name.endswith(ending):
            message = f"{problems.rel(path)} does not end with file_ending {_brief(ending)}"
            problems.add("stray-file", message, path=path)
            continue
        match = _CHANNEL_RE.fullmatch(path.name[: -len(ending)])
        if match is None or int(match["channel"]) >= channels:
            message = (
                f"{problems.rel(path)} has no valid channel suffix: expected CASE_XXXX{ending} "
                f"with XXXX from 0000 to {channels - 1:04d}"
            )
            problems.add("bad-channel-suffix", message, path=path)
        else:
            groups.setdefault(match["case"], set()).add(int(match["channel"]))
    return groups


def _report_orphan_labels(folder: Path, cases: set[str], ending: str, problems: _Problems):
    for path in _listing(folder, problems):
        if not path.name.endswith(ending):
            message = f"{problems.rel(path)} does not end with file_ending {_brief(ending)}"
            problems.add("stray-file", message, path=path)
        elif path.name[: -len(ending)] not in cases:
            message = f"{problems.rel(path)} belongs to no case (no matching image in imagesTr)"
            problems.add("orphan-file", message, path=path)


def _scan_msd(root: Path, meta: dict, problems: _Problems) -> SegmentationDataset | None:
    if not problems.require(meta, ("modality", "labels", "training")):
        return None
    channels = _parse_channels(meta, "modality", problems)
    labels = _parse_labels(meta, "msd", problems)
    entries = {"training": meta["training"], "test": meta.get("test", [])}
    for key, value in entries.items():
        if not isinstance(value, list):
            message = f"dataset.json {key!r} must be a list, got {type(value).__name__}"
            problems.add("invalid-value", message, path=root / "dataset.json")
            return None
    if channels is None or labels is None:
        return None
    training = _msd_cases(root, entries["training"], "training", problems)
    test = _msd_cases(root, entries["test"], "test", problems)
    _check_duplicates(training + test, problems)
    _report_unreferenced(root, entries, problems)
    _check_count(meta, len(entries["training"]), problems)
    ending = _file_ending(training[0].images[0].name) if training else ".nii.gz"
    return SegmentationDataset(root, "msd", channels, labels, ending, training, test)


def _msd_cases(root: Path, entries: list, key: str, problems: _Problems) -> list:
    cases = []
    for number, entry in enumerate(entries):
        if isinstance(entry, str) and key == "test":
            entry = {"image": entry}
        if not (
            isinstance(entry, dict) and "image" in entry and (key == "test" or "label" in entry)
        ):
            shape = "a path or {'image': ...}" if key == "test" else "{'image': ..., 'label': ...}"
            message = f"dataset.json {key!r} entry #{number} must be {shape}, got {_brief(entry)}"
            problems.add("invalid-value", message, path=root / "dataset.json")
            continue
        case = _msd_case(root, entry, problems)
        if case is not None:
            cases.append(case)
    return cases


def _msd_case(root: Path, entry: dict, problems: _Problems) -> SegmentationCase | None:
    """One MSD case; None when a path is unusable or leaves the dataset folder (it is then never
    read)."""
    name = _strip_ending(PurePosixPath(str(entry["image"])).name)
    image = _inside(root, entry["image"], "image", name, problems)
    label = _inside(root, entry["label"], "label", name, problems) if "label" in entry else None
    if image is None or ("label" in entry and label is None):
        return None
    usable = _usable_file(image, "image", name, problems)
    if label is not None:
        usable &= _usable_file(label, "label", name, problems)
    return SegmentationCase(name, (image,), label) if usable else None


def _inside(root: Path, raw: Any, what: str, case: str, problems: _Problems) -> Path | None:
    """``root / raw`` if it stays inside ``root`` (no absolute path, no ``..``, no symlink out)."""
    if not isinstance(raw, str) or not raw or "\0" in raw or not _encodable(raw):
        message = f"{what} path {_brief(raw)} in dataset.json is not a file path; it was not read"
        problems.add("invalid-value", message, case)
        return None
    relative = PurePosixPath(raw)
    if relative.is_absolute() or ".." in relative.parts:
        message = f"path {_brief(raw)} in dataset.json leaves the dataset folder; it was not read"
        problems.add("path-outside-root", message, case)
        return None
    path = root / relative
    resolved = _resolved(path)
    if not resolved.is_relative_to(_resolved(root)):
        message = (
            f"path {_brief(raw)} in dataset.json resolves to {_printable(str(resolved))}, "
            "outside the dataset folder; it was not read"
        )
        problems.add("path-outside-root", message, case, path)
        return None
    return path


def _encodable(text: str) -> bool:
    """Whether the file system can take ``text`` as a path (a lone surrogate cannot be)."""
    try:
        os.fsencode(text)
    except UnicodeEncodeError:
        return False
    return True


def _strip_ending(file_name: str) -> str:
    return file_name[: -len(_file_ending(file_name))] if "." in file_name else file_name


def _file_ending(file_name: str) -> str:
    return ".nii.gz" if file_name.endswith(".nii.gz") else PurePosixPath(file_name).suffix


def _check_duplicates(cases: list[SegmentationCase], problems: _Problems) -> None:
    seen: set[str] = set()
    for case in cases:
        if case.name in seen:
            message = f"case name {_brief(case.name)} is used by more than one dataset.json entry"
            problems.add("duplicate-case", message, case.name, case.images[0])
        seen.add(case.name)


def _report_unreferenced(root: Path, entries: dict[str, list], problems: _Problems) -> None:
    """Files in imagesTr/labelsTr/imagesTs that no dataset.json entry names."""
    named = set()
    for entry in entries["training"] + entries["test"]:
        values = entry.values() if isinstance(entry, dict) else [entry]
        named.update(posixpath.normpath(value) for value in values if isinstance(value, str))
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        for path in _listing(root / folder, problems):
            if path.relative_to(root).as_posix() not in named:
                message = f"{problems.rel(path)} belongs to no case (not named in dataset.json)"
                problems.add("orphan-file", message, path=path)


# ---------------------------------------------------------------------------------------------
# Volumes: the header first, then the voxels
# ---------------------------------------------------------------------------------------------


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
            "compressed file (visprior.data.segmentation.MAX_VOXELS)"
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


# ---------------------------------------------------------------------------------------------
# Content: every image and label is opened
# ---------------------------------------------------------------------------------------------


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


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


# ---------------------------------------------------------------------------------------------
# Cross-validation splits
# ---------------------------------------------------------------------------------------------


def kfold_split(case_names: Iterable[str], folds: int = 5, seed: int = 0) -> list[dict]:
    """Case-wise k-fold cross-validation split, deterministic for a given seed.

    The names are sorted, shuffled with ``random.Random(seed)`` and dealt round-robin into
    ``folds`` validation sets, so the result does not depend on the input order and fold sizes
    differ by at most one.

    Args:
        case_names: unique case names.
        folds: number of folds, from 2 to the number of cases.
        seed: shuffling seed.

    Returns:
        One ``{"train": [...], "val": [...]}`` per fold, both sorted; every case is in exactly
        one validation set.

    Raises:
        ValueError: duplicate names, or ``folds`` not an integer in ``[2, number of cases]``.
    """
    names = sorted(case_names)
    if len(set(names)) != len(names):
        duplicates = sorted({name for name in names if names.count(name) > 1})
        raise ValueError(f"case names must be unique; repeated: {duplicates}")
    if isinstance(folds, bool) or not isinstance(folds, int) or not 2 <= folds <= len(names):
        raise ValueError(f"folds must be an integer from 2 to {len(names)} (cases), got {folds!r}")
    order = names.copy()
    random.Random(seed).shuffle(order)
    split = []
    for fold in range(folds):
        val = set(order[fold::folds])
        split.append({"train": [n for n in names if n not in val], "val": sorted(val)})
    return split


def save_split(split: list[dict], path: str | os.PathLike) -> None:
    """Write a split as JSON, atomically (a reader never sees a half-written file)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(split, indent=2) + "\n", encoding="utf-8")


def load_split(path: str | os.PathLike) -> list[dict[str, list[str]]]:
    """Read a split written by :func:`save_split`.

    Raises:
        DatasetError: the file is missing, is not JSON, or is not a list of
            ``{"train": [...], "val": [...]}``; the message names the file.
    """
    try:
        split = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"cannot read split file {path}: {err}") from err
    if not isinstance(split, list) or not all(_is_fold(fold) for fold in split):
        raise DatasetError(
            f"split file {path} must hold a list of {{'train': [...], 'val': [...]}}"
        )
    return split


def _is_fold(fold: Any) -> bool:
    return (
        isinstance(fold, dict)
        and {"train", "val"} <= fold.keys()
        and all(isinstance(fold[key], list) for key in ("train", "val"))
        and all(isinstance(name, str) for name in fold["train"] + fold["val"])
    )
