"""3D segmentation datasets in the nnU-Net v2 or MSD layout: the dataset and case classes, and
the reading of ``dataset.json`` and the folder listing.

Two on-disk layouts are understood, told apart by the keys of ``dataset.json``:

* **nnU-Net v2 raw** (``channel_names``): ``imagesTr/{case}_{XXXX}{file_ending}`` (one file per
  channel), ``labelsTr/{case}{file_ending}``, optional ``imagesTs/``.
* **Medical Segmentation Decathlon** (``training``): a list of image/label paths; a multi-channel
  image is a single 4D NIfTI with the channels on the last axis.

``load_dataset`` reads only ``dataset.json`` and the folder listing and raises
:class:`DatasetError` on the first problem that makes the dataset unusable. A path or symlink
leaving the dataset folder is refused, not read.
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from visprior.errors import brief, error_text

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
_MAX_DATASET_JSON_BYTES = 64 * 2**20  # MSD's longest dataset.json is well under 1 MiB
_MAX_SHOWN_PATH = 200  # characters of a path shown in a message
_CHANNEL_RE = re.compile(r"(?P<case>.+)_(?P<channel>\d{4})")
_MRI_NAMES = frozenset({"MR", "MRI", "FLAIR", "ADC", "DWI", "PD", "PDW", "SWI", "DCE", "DIFFUSION"})


def num_classes_for(label_values: Iterable[int]) -> int:
    """The outputs a network needs for these label values: the largest value plus one (every
    value up to it gets a channel, declared or not, as in nnU-Net)."""
    return max(label_values) + 1


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
        """Number of output classes of a network (see :func:`num_classes_for`)."""
        return num_classes_for(self.labels.values())

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


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


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
