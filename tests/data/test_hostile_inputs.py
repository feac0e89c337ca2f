"""Hostile files given to the segmentation readers: each gets a one-line error naming the file,
the case and what is wrong, never a crash, a hang, a huge allocation or a partial output."""

from __future__ import annotations

import gzip
import json
import os
import re
import threading
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.data import CacheDataset
from nibabel.arrayproxy import ArrayProxy
from torch import nn

from tests.data.test_segmentation import (
    SHAPE,
    edit_json,
    image,
    kinds,
    label,
    make_msd,
    make_nnunet,
    save,
    write_json,
)
from visprior.data import DatasetError, check_dataset, format_problems, load_dataset
from visprior.data.dataset import MAX_LABEL_VALUE
from visprior.data.volumes import MAX_VOXELS, check_volume_header, read_volume, verify_headers
from visprior.seg.config import Preprocessing, SegTrainConfig
from visprior.seg.evaluate import evaluate_folder
from visprior.seg.predict import SegmentationPredictor, predict_files
from visprior.seg.transforms import train_transforms, validation_transforms

TR, LB = Path("imagesTr"), Path("labelsTr")


@pytest.fixture
def voxel_reads(monkeypatch) -> list[str]:
    """The files whose voxels are read through nibabel (MONAI's reader included), in order."""
    reads: list[str] = []
    read = ArrayProxy._get_unscaled

    def recorded(proxy, *args, **kwargs):
        reads.append(str(proxy.file_like))
        return read(proxy, *args, **kwargs)

    monkeypatch.setattr(ArrayProxy, "_get_unscaled", recorded)
    return reads


def forged(path: Path, dims: tuple[int, ...], payload: bytes = bytes(64), nifti2=False) -> Path:
    """A NIfTI file whose header declares ``dims`` float32 voxels, followed by ``payload``."""
    header = nib.Nifti2Header() if nifti2 else nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header["dim"] = [len(dims), *dims, *[1] * (7 - len(dims))]
    header["vox_offset"] = len(header.binaryblock) + 4
    content = header.binaryblock + bytes(4) + payload
    path.write_bytes(gzip.compress(content) if path.name.endswith(".gz") else content)
    return path


def cut(path: Path, keep: float = 0.5) -> Path:
    """Keep the first part of a file: the header still reads, the voxels do not."""
    content = path.read_bytes()
    path.write_bytes(content[: int(len(content) * keep)])
    return path


def only_problem(root: Path):
    problems = check_dataset(root)
    assert len(problems) == 1, format_problems(problems)
    return problems[0]


def finishes_within(seconds: float, function):
    """Run ``function`` in a daemon thread; fail the test (rather than hang) if it blocks."""
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = function()
        except BaseException as error:  # handed to the test thread
            outcome["error"] = error

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"{function} did not finish within {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


# --------------------------------------------------------------------------------------------
# Paths and links leaving the dataset folder, files that are not files
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("linked", "case", "what"),
    [
        (TR / "case_b_0001.nii.gz", "case_b", "channel 1 image imagesTr/case_b_0001.nii.gz"),
        (LB / "case_c.nii.gz", "case_c", "label labelsTr/case_c.nii.gz"),
        (Path("imagesTs/case_t_0000.nii.gz"), "case_t", "channel 0 image imagesTs/case_t_0000"),
    ],
    ids=["image", "label", "test-image"],
)
def test_nnunet_symlink_out_of_the_folder_is_refused_not_read(
    tmp_path, voxel_reads, linked, case, what
):
    root = make_nnunet(tmp_path)
    outside = tmp_path / "secret.nii.gz"
    (root / linked).rename(outside)
    (root / linked).symlink_to(outside)
    problem = only_problem(root)
    assert problem.kind == "path-outside-root" and problem.case == case
    assert what in problem.message
    assert f"links to {outside}, outside the dataset folder; it was not read" in problem.message
    with pytest.raises(DatasetError, match="outside the dataset folder") as error:
        load_dataset(root)
    assert [p.kind for p in error.value.problems] == ["path-outside-root"]
    assert voxel_reads and str(outside) not in voxel_reads and str(root / linked) not in voxel_reads


def test_symlinks_inside_the_folder_are_followed(tmp_path):
    root = make_nnunet(tmp_path)
    (root / "store").mkdir()
    (root / TR / "case_a_0000.nii.gz").rename(root / "store" / "a.nii.gz")
    (root / TR / "case_a_0000.nii.gz").symlink_to(root / "store" / "a.nii.gz")
    assert [case.name for case in load_dataset(root).training] == ["case_a", "case_b", "case_c"]
    assert check_dataset(root) == []


def test_symlinked_images_folder_outside_the_dataset_is_refused(tmp_path):
    root = make_nnunet(tmp_path)
    (root / "imagesTs").rename(tmp_path / "elsewhere")
    (root / "imagesTs").symlink_to(tmp_path / "elsewhere")
    problems = check_dataset(root)
    assert kinds(problems) == ["path-outside-root"] * 2
    assert {p.case for p in problems} == {"case_t"}


def test_symlink_loop_is_reported(tmp_path):
    root = make_nnunet(tmp_path)
    loop = root / TR / "case_a_0000.nii.gz"
    loop.unlink()
    loop.symlink_to(loop)
    problem = only_problem(root)
    assert problem.kind == "not-a-file" and problem.case == "case_a"
    assert "channel 0 image imagesTr/case_a_0000.nii.gz cannot be opened" in problem.message
    with pytest.raises(DatasetError, match="case_a_0000.nii.gz cannot be opened"):
        load_dataset(root)


@pytest.mark.parametrize("layout", ["nnunet", "msd"])
def test_pipe_or_folder_in_place_of_a_file_is_refused_without_blocking(tmp_path, layout):
    root = make_nnunet(tmp_path) if layout == "nnunet" else make_msd(tmp_path)
    name = "case_a_0000.nii.gz" if layout == "nnunet" else "spleen_1.nii.gz"
    (root / TR / name).unlink()
    os.mkfifo(root / TR / name)  # opening it for reading would block forever
    (root / LB / name.replace("_0000", "")).unlink()
    (root / LB / name.replace("_0000", "")).mkdir()
    problems = finishes_within(20, lambda: check_dataset(root))
    assert kinds(problems) == ["not-a-file", "not-a-file"], format_problems(problems)
    messages = " | ".join(p.message for p in problems)
    assert f"imagesTr/{name} is not a regular file; it was not read" in messages
    assert "labelsTr/" in messages and "is not a regular file" in messages
    with pytest.raises(DatasetError, match="is not a regular file"):
        finishes_within(20, lambda: load_dataset(root))


def test_unlistable_folder_is_reported(tmp_path, monkeypatch):
    root = make_nnunet(tmp_path)
    original = Path.iterdir

    def iterdir(self):
        if self.name == "labelsTr":
            raise PermissionError(13, "Permission denied", str(self))
        return original(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    problems = check_dataset(root)
    assert kinds(problems) == ["unreadable-folder"]
    assert problems[0].message == "folder labelsTr/ cannot be listed: Permission denied"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [("./imagesTr/spleen_1.nii.gz\0.txt", "'./imagesTr/spleen_1.nii.gz\\x00.txt'"), (7, "7")],
    ids=["nul-byte", "not-a-string"],
)
def test_msd_path_that_is_not_a_path(tmp_path, raw, shown):
    root = make_msd(tmp_path)
    meta = json.loads((root / "dataset.json").read_text())
    meta["training"][0]["label"] = raw
    write_json(root / "dataset.json", meta)
    problems = check_dataset(root)
    assert "invalid-value" in kinds(problems), format_problems(problems)
    [problem] = [p for p in problems if p.kind == "invalid-value"]
    assert problem.case == "spleen_1"
    assert f"label path {shown} in dataset.json is not a file path" in problem.message
    with pytest.raises(DatasetError, match="is not a file path"):
        load_dataset(root)


def test_msd_very_long_path_gives_a_short_message(tmp_path):
    root = make_msd(tmp_path)
    meta = json.loads((root / "dataset.json").read_text())
    meta["training"][0]["image"] = "./imagesTr/" + "x" * 5000 + ".nii.gz"
    write_json(root / "dataset.json", meta)
    with pytest.raises(DatasetError, match="File name too long") as error:
        load_dataset(root)
    assert len(str(error.value)) < 600 and "characters)..." in str(error.value)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"[" * 100_000, "RecursionError"),
        (b'{"numTraining": ' + b"9" * 5000 + b"}", "ValueError"),
        (b'{"name": "\xff\xfe"}', "UnicodeDecodeError"),
    ],
    ids=["nested-too-deep", "huge-integer", "invalid-utf8"],
)
def test_dataset_json_that_python_cannot_parse(tmp_path, content, fragment):
    (tmp_path / "dataset.json").write_bytes(content)
    with pytest.raises(DatasetError, match=f"cannot read .*dataset.json: {fragment}") as error:
        load_dataset(tmp_path)
    assert error.value.problems[0].kind == "invalid-json"
    assert "\n" not in str(error.value)


def test_dataset_json_pipe_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "dataset.json")
    with pytest.raises(DatasetError, match="dataset.json is not a regular file"):
        finishes_within(20, lambda: load_dataset(tmp_path))


# --------------------------------------------------------------------------------------------
# Headers: judged before any voxel is read
# --------------------------------------------------------------------------------------------

# (file name, dims, NIfTI-2, kind, fragments of the message)
FORGED_HEADERS = {
    "huge-nii": (
        "case_b_0000.nii",
        (100_000, 100_000, 100_000),
        True,
        "truncated",
        ["100000 x 100000 x 100000 float32 voxels (4,000 TB", "the file has 608 bytes"],
    ),
    "huge-nii-gz": (
        "case_b_0000.nii.gz",
        (100_000, 100_000, 100_000),
        True,
        "too-large",
        ["100000 x 100000 x 100000", f"more than the {MAX_VOXELS} (2**31) accepted", "MAX_VOXELS"],
    ),
    "beyond-deflate": (
        "case_b_0000.nii.gz",
        (1000, 1000, 500),
        False,
        "truncated",
        ["1000 x 1000 x 500 float32 voxels (2 GB", "gzip file can hold", "1032-fold"],
    ),
    "zero-size": (
        "case_b_0000.nii.gz",
        (0, 7, 8),
        False,
        "bad-header",
        ["dimension sizes (0, 7, 8); each must be at least 1"],
    ),
    "negative-size": (
        "case_b_0000.nii",
        (6, -7, 8),
        False,
        "bad-header",
        ["dimension sizes (6, -7, 8); each must be at least 1"],
    ),
    "no-dimension": (
        "case_b_0000.nii.gz",
        (),
        False,
        "bad-header",
        ["declares 0 dimensions; 1 to 5 are supported"],
    ),
    "six-dimensions": (
        "case_b_0000.nii.gz",
        (6, 7, 8, 1, 1, 2),
        False,
        "bad-header",
        ["declares 6 dimensions; 1 to 5 are supported"],
    ),
}


def nnunet_with_ending(tmp_path: Path, ending: str) -> Path:
    root = make_nnunet(tmp_path, test_cases=())
    if ending == ".nii.gz":
        return root
    for path in sorted(root.rglob("*.nii.gz")):
        voxels = np.asanyarray(nib.load(path).dataobj)
        save(path.with_name(path.name.replace(".nii.gz", ending)), voxels)
        path.unlink()
    meta = json.loads((root / "dataset.json").read_text())
    write_json(root / "dataset.json", {**meta, "file_ending": ending})
    return root


@pytest.mark.parametrize("forgery", list(FORGED_HEADERS))
def test_forged_header_is_refused_before_any_voxel_is_read(tmp_path, voxel_reads, forgery):
    name, dims, nifti2, kind, fragments = FORGED_HEADERS[forgery]
    root = nnunet_with_ending(tmp_path, ".nii.gz" if name.endswith(".gz") else ".nii")
    path = forged(root / TR / name, dims, nifti2=nifti2)
    text = check_volume_header(path)
    assert all(fragment in text for fragment in fragments), text

    problem = next(p for p in check_dataset(root) if p.path == path)
    assert (problem.kind, problem.case) == (kind, "case_b")
    assert problem.message == f"cannot read imagesTr/{name}: {text}"

    dataset = load_dataset(root)  # reads no header: the listing is fine
    with pytest.raises(DatasetError) as error:
        verify_headers(dataset)
    assert str(error.value) == f"case_b: cannot read imagesTr/{name}: {text} [{kind}]"

    with pytest.raises(DatasetError) as error:
        read_volume(path, "case_b")
    assert str(error.value) == f"case 'case_b': cannot read {path}: {text}"

    data = dataset.data_dicts(["case_b"])[0]
    with pytest.raises(DatasetError) as error:
        validation_transforms(SegTrainConfig(preprocessing=Preprocessing(intensity="none")))(data)
    assert str(error.value) == f"case 'case_b': cannot read {path}: {text}"
    assert voxel_reads and str(path) not in voxel_reads  # the other files were read


def test_header_just_above_the_voxel_limit_is_refused_below_it_accepted(tmp_path):
    # incompressible voxels, stored uncompressed inside the gzip stream: big enough that the
    # deflate bound does not already refuse the header
    payload = np.random.default_rng(0).bytes(2_200_000)
    header = nib.Nifti1Header()
    header.set_data_dtype(np.uint8)
    header["vox_offset"] = 352
    path = tmp_path / "big.nii.gz"
    for dims, expected in (((1024, 1024, 2049), "too-large"), ((1024, 1024, 2048), None)):
        header["dim"] = [3, *dims, 1, 1, 1, 1]
        content = header.binaryblock + bytes(4) + payload
        path.write_bytes(gzip.compress(content, compresslevel=0))
        text = check_volume_header(path)
        if expected is None:
            assert text is None
        else:
            assert f"({1024 * 1024 * 2049} voxels), more than the {MAX_VOXELS}" in text


def test_verify_headers_lists_every_bad_file_and_passes_a_clean_dataset(tmp_path):
    root = make_nnunet(tmp_path)
    dataset = load_dataset(root)
    assert verify_headers(dataset) is None
    forged(root / TR / "case_a_0001.nii.gz", (0, 1, 1))
    forged(root / LB / "case_c.nii.gz", (5000, 5000, 5000))
    forged(root / "imagesTs" / "case_t_0000.nii.gz", (0, 1, 1))
    with pytest.raises(DatasetError, match=r"^case_a: cannot read imagesTr/case_a_0001") as error:
        verify_headers(dataset)
    assert str(error.value).endswith("(and 1 more file)")
    assert [(p.case, p.kind) for p in error.value.problems] == [
        ("case_a", "bad-header"),
        ("case_c", "too-large"),
    ]
    with pytest.raises(DatasetError, match="case_t: cannot read imagesTs/case_t_0000"):
        verify_headers(dataset, ["case_t"])


# --------------------------------------------------------------------------------------------
# Voxels: cut short or corrupt
# --------------------------------------------------------------------------------------------


def big_image(path: Path) -> Path:
    """Random voxels: a compressed file large enough to cut in half with the header intact."""
    save(path, image(7, (20, 20, 20)), np.eye(4))
    return path


def corrupt_middle(path: Path) -> Path:
    """Zero 64 bytes mid-stream: it still decompresses, to wrong voxels; only the CRC tells."""
    content = bytearray(path.read_bytes())
    middle = len(content) // 2
    content[middle : middle + 64] = bytes(64)
    path.write_bytes(bytes(content))
    return path


def invalid_data_block(path: Path) -> Path:
    """Recompress with the voxels in a deflate block of its own, then mark that block with the
    invalid type 3: the header still decompresses, the voxels do not."""
    content = gzip.decompress(path.read_bytes())
    compressor = zlib.compressobj(wbits=31)  # gzip container
    head = compressor.compress(content[:352]) + compressor.flush(zlib.Z_FULL_FLUSH)
    rest = compressor.compress(content[352:]) + compressor.flush()
    path.write_bytes(head + bytes([rest[0] | 0b110]) + rest[1:])
    return path


# (damage(root) -> path, kind, fragment of the message after "cannot read <file>: ")
DAMAGED = {
    "gz-cut-in-half": (
        lambda root: cut(big_image(root / TR / "case_b_0001.nii.gz")),
        "unreadable",
        "EOFError: Compressed file ended before the end-of-stream marker was reached",
    ),
    "gz-corrupt-stream": (
        lambda root: invalid_data_block(big_image(root / TR / "case_b_0001.nii.gz")),
        "unreadable",
        "zlib.error: Error -3 while decompressing data: invalid block type",
    ),
    "random-bytes-gz": (
        lambda root: _random_bytes(root / TR / "case_b_0001.nii.gz"),
        "unreadable",
        "ImageFileError: File",
    ),
    "nii-data-short": (
        lambda root: cut(root / TR / "case_b_0001.nii", keep=0.8),
        "truncated",
        "header declares 6 x 7 x 8 float32 voxels (1.7 kB with the header), but the file has",
    ),
}


def _random_bytes(path: Path) -> Path:
    path.write_bytes(np.random.default_rng(3).bytes(2000))
    return path


def damaged_dataset(tmp_path: Path, damage: str) -> tuple[Path, Path]:
    damage_fn, *_ = DAMAGED[damage]
    ending = ".nii" if damage.startswith("nii") else ".nii.gz"
    root = nnunet_with_ending(tmp_path, ending)
    if damage.startswith("gz"):
        big_image(root / TR / "case_b_0000.nii.gz")  # the channels keep one shape
        save(root / LB / "case_b.nii.gz", label(1, (20, 20, 20)), np.eye(4))
    return root, damage_fn(root)


def test_damage_that_still_decompresses_is_found_by_its_checksum(tmp_path):
    root = make_nnunet(tmp_path, test_cases=())
    big_image(root / TR / "case_b_0000.nii.gz")
    save(root / LB / "case_b.nii.gz", label(1, (20, 20, 20)), np.eye(4))
    path = corrupt_middle(big_image(root / TR / "case_b_0001.nii.gz"))
    _, voxels = read_volume(path)  # without the checksum: wrong voxels, silently
    assert not np.array_equal(voxels, image(7, (20, 20, 20)))
    problem = only_problem(root)
    assert (problem.kind, problem.case) == ("unreadable", "case_b")
    assert problem.message.startswith(
        "cannot read imagesTr/case_b_0001.nii.gz: BadGzipFile: CRC check failed"
    )
    with pytest.raises(DatasetError, match="BadGzipFile: CRC check failed"):
        read_volume(path, "case_b", verify_checksum=True)


@pytest.mark.parametrize("damage", list(DAMAGED))
def test_damaged_volume_is_reported_by_check_dataset(tmp_path, damage):
    root, path = damaged_dataset(tmp_path, damage)
    _, kind, fragment = DAMAGED[damage]
    problem = only_problem(root)
    assert (problem.kind, problem.case, problem.path) == (kind, "case_b", path)
    assert problem.message.startswith(f"cannot read imagesTr/{path.name}: ")
    assert fragment in problem.message and "\n" not in problem.message


@pytest.mark.parametrize("damage", list(DAMAGED))
def test_damaged_volume_fails_training_data_loading_with_the_case_and_file(tmp_path, damage):
    """What ``seg train`` builds: CacheDataset over the validation and training pipelines."""
    root, path = damaged_dataset(tmp_path, damage)
    _, _, fragment = DAMAGED[damage]
    data = load_dataset(root).data_dicts()
    config = SegTrainConfig(preprocessing=Preprocessing(intensity="none"), roi_size=(8, 8, 8))
    for transforms in (validation_transforms(config, 3), train_transforms(config, 3)):
        with pytest.raises(DatasetError) as error:
            CacheDataset(data, transforms, cache_rate=1.0, num_workers=0, progress=False)
        message = str(error.value)
        assert message.startswith(f"case 'case_b': cannot read {path}: "), message
        assert fragment in message and "\n" not in message


def test_damaged_label_is_named_not_its_image(tmp_path):
    root = make_nnunet(tmp_path)
    path = root / LB / "case_a.nii.gz"
    save(path, label(3, (20, 20, 20)))  # large enough to keep its header when cut
    cut(path)
    data = load_dataset(root).data_dicts(["case_a"])[0]
    with pytest.raises(
        DatasetError, match=f"^case 'case_a': cannot read {re.escape(str(path))}: EOF"
    ):
        validation_transforms(SegTrainConfig(preprocessing=Preprocessing(intensity="none")))(data)


# --------------------------------------------------------------------------------------------
# Label values
# --------------------------------------------------------------------------------------------


def with_label_values(values) -> np.ndarray:
    data = label(1).astype(np.float32)
    data.flat[5 : 5 + len(values)] = values
    return data


@pytest.mark.parametrize(
    ("values", "num_classes", "fragment"),
    [
        ([0.5, 1.25], 3, "has non-integer values: 0.5, 1.25"),
        ([np.nan], None, "has non-integer values: nan"),
        ([-1, -3], 3, "has negative values: -3, -1"),
        ([7, 3], 3, "has values above 2, the largest label value declared: 3, 7"),
    ],
    ids=["fraction", "nan", "negative", "too-large"],
)
def test_label_values_one_hot_would_garble_stop_the_pipelines(
    tmp_path, values, num_classes, fragment
):
    root = make_nnunet(tmp_path)
    path = root / LB / "case_c.nii.gz"
    save(path, with_label_values(values))
    data = load_dataset(root).data_dicts(["case_c"])[0]
    config = SegTrainConfig(preprocessing=Preprocessing(intensity="none"), roi_size=(4, 4, 4))
    for transforms in (
        validation_transforms(config, num_classes),
        train_transforms(config, num_classes),
    ):
        with pytest.raises(DatasetError) as error:
            transforms(data)
        assert str(error.value) == f"case 'case_c': label {path} {fragment}"


def test_declared_label_values_pass_and_range_is_checked_only_when_known(tmp_path):
    root = make_nnunet(tmp_path)
    save(root / LB / "case_c.nii.gz", with_label_values([7]))
    data = load_dataset(root).data_dicts(["case_c"])[0]
    config = SegTrainConfig(preprocessing=Preprocessing(intensity="none"))
    assert float(validation_transforms(config)(data)["label"].max()) == 7.0
    data = load_dataset(root).data_dicts(["case_a"])[0]
    assert float(validation_transforms(config, 3)(data)["label"].max()) == 2.0


@pytest.mark.parametrize(
    ("values", "kind", "fragment"),
    [
        ([-1], "undeclared-label", "values not declared in dataset.json labels: -1"),
        ([1.25, np.nan], "non-integer-label", "non-integer values: 1.25, nan"),
    ],
    ids=["negative", "fraction-and-nan"],
)
def test_check_dataset_reports_negative_and_float_label_values(tmp_path, values, kind, fragment):
    root = make_nnunet(tmp_path)
    save(root / LB / "case_b.nii.gz", with_label_values(values))
    problem = only_problem(root)
    assert (problem.kind, problem.case) == (kind, "case_b")
    assert problem.message == f"label labelsTr/case_b.nii.gz has {fragment}"


def test_check_dataset_reports_a_label_of_colours(tmp_path):
    root = make_nnunet(tmp_path)
    colours = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    save(root / LB / "case_a.nii.gz", colours)
    problem = only_problem(root)
    assert (problem.kind, problem.case) == ("non-integer-label", "case_a")
    assert problem.message.startswith("label labelsTr/case_a.nii.gz has voxels of type [(")
    assert problem.message.endswith("not numbers")


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def evaluation_folders(tmp_path: Path) -> tuple[Path, Path]:
    predictions, labels = tmp_path / "pred", tmp_path / "labels"
    predictions.mkdir()
    labels.mkdir()
    for seed, case in enumerate(("a", "b")):
        save(predictions / f"{case}.nii.gz", label(seed).astype(np.uint8), np.eye(4))
        save(labels / f"{case}.nii.gz", label(seed + 5).astype(np.uint8), np.eye(4))
    return predictions, labels


CLASSES = {"background": 0, "liver": 1, "tumour": 2}


@pytest.mark.parametrize(
    ("role", "values", "fragment"),
    [
        ("label", [7, 9], "holds values not among the classes evaluated (1, 2): 7, 9"),
        ("prediction", [3], "holds values not among the classes evaluated (1, 2): 3"),
        ("label", [-1], "holds negative values: -1"),
        ("label", [0.5], "holds non-integer values: 0.5"),
    ],
    ids=["undeclared-label", "undeclared-prediction", "negative", "fraction"],
)
def test_evaluation_refuses_label_values_it_would_score_as_background(
    tmp_path, role, values, fragment
):
    predictions, labels = evaluation_folders(tmp_path)
    path = (labels if role == "label" else predictions) / "b.nii.gz"
    save(path, with_label_values(values), np.eye(4))
    with pytest.raises(ValueError) as error:
        evaluate_folder(predictions, labels, classes=CLASSES)
    assert str(error.value) == f"case 'b': the {role} {path} {fragment}"


def test_evaluation_refuses_a_label_of_colours(tmp_path):
    predictions, labels = evaluation_folders(tmp_path)
    path = labels / "a.nii.gz"
    save(path, np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")]), np.eye(4))
    with pytest.raises(ValueError) as error:
        evaluate_folder(predictions, labels)
    assert str(error.value).startswith(f"case 'a': the label {path} holds voxels of type [(")


@pytest.mark.parametrize("classes", [CLASSES, None], ids=["classes-given", "classes-found"])
def test_evaluation_names_an_unreadable_label(tmp_path, classes):
    predictions, labels = evaluation_folders(tmp_path)
    path = _random_bytes(labels / "b.nii.gz")
    with pytest.raises(DatasetError) as error:
        evaluate_folder(predictions, labels, classes=classes, out_dir=tmp_path / "out")
    assert str(error.value) == (
        f"case 'b': cannot read {path}: ImageFileError: File {path} is not a gzip file"
    )
    assert not (tmp_path / "out").exists()


def test_evaluation_refuses_a_forged_prediction_header(tmp_path, voxel_reads):
    predictions, labels = evaluation_folders(tmp_path)
    path = forged(predictions / "a.nii.gz", (30000, 30000, 30000))
    with pytest.raises(DatasetError) as error:
        evaluate_folder(predictions, labels, classes=CLASSES)
    assert str(error.value) == f"case 'a': cannot read {path}: {check_volume_header(path)}"
    assert str(path) not in voxel_reads


# --------------------------------------------------------------------------------------------
# Prediction
# --------------------------------------------------------------------------------------------


def tiny_predictor() -> SegmentationPredictor:
    return SegmentationPredictor(
        model=nn.Conv3d(1, 2, kernel_size=1),
        preprocessing=Preprocessing(intensity="none", spacing=None, crop_foreground=False),
        roi_size=(8, 8, 8),
        channel_names=["CT"],
        labels={"background": 0, "organ": 1},
    )


def prediction_inputs(tmp_path: Path) -> Path:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for case in ("a", "b", "c"):
        big_image(inputs / f"{case}.nii.gz")
    return inputs


def test_corrupt_second_case_keeps_the_first_output_and_leaves_no_partial_file(tmp_path):
    inputs, out = prediction_inputs(tmp_path), tmp_path / "out"
    path = cut(inputs / "b.nii.gz")
    with pytest.raises(DatasetError) as error:
        predict_files(tiny_predictor(), [inputs], out)
    assert str(error.value) == (
        f"case 'b': cannot read {path}: EOFError: Compressed file ended before the "
        "end-of-stream marker was reached"
    )
    assert sorted(entry.name for entry in out.iterdir()) == ["a.nii.gz"]
    assert nib.load(out / "a.nii.gz").shape == (20, 20, 20)


def test_forged_header_stops_prediction_before_any_output(tmp_path, voxel_reads):
    inputs, out = prediction_inputs(tmp_path), tmp_path / "out"
    path = forged(inputs / "c.nii.gz", (20, 20, 30000))
    with pytest.raises(DatasetError) as error:
        predict_files(tiny_predictor(), [inputs], out)
    assert str(error.value) == f"case 'c': cannot read {path}: {check_volume_header(path)}"
    assert not out.exists() or list(out.iterdir()) == []
    assert voxel_reads == []


def test_readers_accept_a_clean_file(tmp_path):
    path = big_image(tmp_path / "x.nii.gz")
    volume, voxels = read_volume(path)
    assert voxels.shape == (20, 20, 20) and volume.shape == (20, 20, 20)
    np.testing.assert_array_equal(voxels, image(7, (20, 20, 20)))
    assert check_volume_header(path) is None


def test_channels_that_cannot_be_stacked_name_the_case_and_files(tmp_path):
    root = make_nnunet(tmp_path)
    save(root / TR / "case_a_0001.nii.gz", image(1, (6, 7, 9)))
    data = load_dataset(root).data_dicts(["case_a"])[0]
    with pytest.raises(DatasetError) as error:
        validation_transforms(SegTrainConfig(preprocessing=Preprocessing(intensity="none")))(data)
    first, second = data["image"]
    assert str(error.value).startswith(f"case 'case_a': cannot load {first}, {second}, ")
    assert "\n" not in str(error.value)


def test_a_huge_label_value_is_refused_before_any_network_is_built(tmp_path):
    root = make_nnunet(tmp_path)
    edit_json(root, labels={"background": 0, "liver": 1, "stray": 65535})
    with pytest.raises(DatasetError, match=r"label 'stray' in dataset.json has the value 65535"):
        load_dataset(root)
    edit_json(root, labels={"background": 0, "liver": 1, "tumour": MAX_LABEL_VALUE})
    assert load_dataset(root).num_classes == MAX_LABEL_VALUE + 1  # gaps are allowed
