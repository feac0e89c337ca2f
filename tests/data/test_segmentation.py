"""Reading, checking and splitting nnU-Net v2 and MSD segmentation datasets."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from visprior.data import (
    DatasetError,
    DatasetProblem,
    SegmentationDataset,
    check_dataset,
    format_problems,
    kfold_split,
    load_dataset,
    load_split,
    save_split,
)

SHAPE = (6, 7, 8)
AFFINE = np.array(
    [[0.8, 0.0, 0.0, -10.0], [0.0, 0.9, 0.0, 5.0], [0.0, 0.0, 1.5, 2.0], [0.0, 0.0, 0.0, 1.0]]
)
NNUNET_LABELS = {"background": 0, "liver": 1, "tumour": 2}
NNUNET_CASES = ("case_a", "case_b", "case_c")
MSD_CASES = ("spleen_1", "spleen_2", "spleen_3")


def save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> None:
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))


def image(seed: int, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def label(seed: int, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """Values 0, 1 and 2, each present."""
    values = np.random.default_rng(seed).integers(0, 3, size=shape, dtype=np.uint8)
    values.flat[:3] = (0, 1, 2)
    return values


def write_json(path: Path, content: dict) -> None:
    path.write_text(json.dumps(content, indent=2))


def edit_json(root: Path, **changes) -> None:
    meta = json.loads((root / "dataset.json").read_text())
    meta.update(changes)
    write_json(root / "dataset.json", meta)


def make_nnunet(tmp_path: Path, cases=NNUNET_CASES, test_cases=("case_t",)) -> Path:
    """Tiny nnU-Net v2 dataset: 2 channels (T1, T2), labels 0..2, one test case."""
    root = tmp_path / "Dataset001_Toy"
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (root / folder).mkdir(parents=True)
    for seed, name in enumerate(cases):
        for channel in range(2):
            save(root / "imagesTr" / f"{name}_{channel:04d}.nii.gz", image(10 * seed + channel))
        save(root / "labelsTr" / f"{name}.nii.gz", label(seed))
    for name in test_cases:
        for channel in range(2):
            save(root / "imagesTs" / f"{name}_{channel:04d}.nii.gz", image(99 + channel))
    meta = {
        "channel_names": {"0": "T1", "1": "T2"},
        "labels": NNUNET_LABELS,
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
        "name": "Toy",
    }
    write_json(root / "dataset.json", meta)
    return root


def make_msd(tmp_path: Path, channels=("CT",), cases=MSD_CASES) -> Path:
    """Tiny MSD dataset; several channels go in one 4D image, channels last."""
    root = tmp_path / "Task09_Spleen"
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (root / folder).mkdir(parents=True)
    shape = SHAPE if len(channels) == 1 else (*SHAPE, len(channels))
    for seed, name in enumerate(cases):
        save(root / "imagesTr" / f"{name}.nii.gz", image(seed, shape))
        save(root / "labelsTr" / f"{name}.nii.gz", label(seed))
    save(root / "imagesTs" / "spleen_9.nii.gz", image(9, shape))
    meta = {
        "name": "Spleen",
        "modality": {str(index): name for index, name in enumerate(channels)},
        "labels": {"0": "background", "1": "spleen", "2": "vessel"},
        "numTraining": len(cases),
        "numTest": 1,
        "training": [
            {"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"}
            for name in cases
        ],
        "test": ["./imagesTs/spleen_9.nii.gz"],
    }
    write_json(root / "dataset.json", meta)
    return root


def kinds(problems) -> list[str]:
    return sorted(problem.kind for problem in problems)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def test_load_nnunet(tmp_path):
    root = make_nnunet(tmp_path)
    dataset = load_dataset(root)
    assert dataset.layout == "nnunet"
    assert [case.name for case in dataset.training] == list(NNUNET_CASES)
    assert [case.name for case in dataset.test] == ["case_t"]
    assert dataset.channel_names == ("T1", "T2")
    assert dataset.num_channels == 2
    assert dataset.labels == NNUNET_LABELS
    assert dataset.num_classes == 3
    assert dataset.foreground_labels == ("liver", "tumour")
    assert dataset.modality == "MRI"
    assert dataset.file_ending == ".nii.gz"
    case_b = dataset.training[1]
    assert case_b.images == (
        root / "imagesTr" / "case_b_0000.nii.gz",
        root / "imagesTr" / "case_b_0001.nii.gz",
    )
    assert case_b.label == root / "labelsTr" / "case_b.nii.gz"
    assert dataset.test[0].label is None


def test_nnunet_data_dicts(tmp_path):
    root = make_nnunet(tmp_path)
    dataset = load_dataset(root)
    dicts = dataset.data_dicts()
    assert [entry["case"] for entry in dicts] == list(NNUNET_CASES)
    assert dicts[0] == {
        "image": [
            str(root / "imagesTr/case_a_0000.nii.gz"),
            str(root / "imagesTr/case_a_0001.nii.gz"),
        ],
        "label": str(root / "labelsTr/case_a.nii.gz"),
        "case": "case_a",
    }
    assert [entry["case"] for entry in dataset.data_dicts(["case_c", "case_a"])] == [
        "case_c",
        "case_a",
    ]
    test_entry = dataset.data_dicts(dataset.test)[0]
    assert "label" not in test_entry and len(test_entry["image"]) == 2
    with pytest.raises(DatasetError, match="'case_x'"):
        dataset.data_dicts(["case_x"])


def test_load_msd(tmp_path):
    root = make_msd(tmp_path)
    dataset = load_dataset(root)
    assert dataset.layout == "msd"
    assert [case.name for case in dataset.training] == list(MSD_CASES)
    assert [case.name for case in dataset.test] == ["spleen_9"]
    assert dataset.channel_names == ("CT",)
    assert dataset.modality == "CT"
    assert dataset.labels == {"background": 0, "spleen": 1, "vessel": 2}
    assert dataset.foreground_labels == ("spleen", "vessel")
    assert dataset.file_ending == ".nii.gz"
    assert dataset.data_dicts()[1] == {
        "image": str(root / "imagesTr/spleen_2.nii.gz"),
        "label": str(root / "labelsTr/spleen_2.nii.gz"),
        "case": "spleen_2",
    }
    assert dataset.data_dicts(["spleen_9"]) == [
        {"image": str(root / "imagesTs/spleen_9.nii.gz"), "case": "spleen_9"}
    ]


def test_msd_multichannel_is_one_4d_file(tmp_path):
    root = make_msd(tmp_path, channels=("FLAIR", "T1w"))
    dataset = load_dataset(root)
    assert dataset.num_channels == 2 and dataset.modality == "MRI"
    assert all(len(case.images) == 1 for case in dataset.training)
    assert check_dataset(root) == []


@pytest.mark.parametrize(
    ("make", "layout"), [(make_nnunet, "nnunet"), (make_msd, "msd")], ids=["nnunet", "msd"]
)
def test_layout_detected_from_dataset_json_keys(tmp_path, make, layout):
    root = make(tmp_path)
    assert load_dataset(root).layout == layout
    meta = json.loads((root / "dataset.json").read_text())
    meta.pop("channel_names" if layout == "nnunet" else "training")
    write_json(root / "dataset.json", meta)
    with pytest.raises(DatasetError, match="'channel_names'.*'training'"):
        load_dataset(root)


@pytest.mark.parametrize(
    ("channels", "modality"),
    [
        (("CT",), "CT"),
        (("ct", "CT"), "CT"),
        (("T1", "T2"), "MRI"),
        (("CT", "FLAIR"), "MRI"),
        (("t1gd",), "MRI"),
        (("ADC",), "MRI"),
        (("PET",), "other"),
        (("noNorm", "rescale_to_0_1"), "other"),
    ],
)
def test_modality(tmp_path, channels, modality):
    dataset = SegmentationDataset(
        tmp_path, "nnunet", channels, {"bg": 0, "a": 1, "b": 4}, ".nii", []
    )
    assert dataset.modality == modality
    assert dataset.num_classes == 5


def test_load_errors_missing_folder_and_dataset_json(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no dataset.json in .*empty"):
        load_dataset(tmp_path / "empty")


def test_load_error_invalid_json_names_the_line(tmp_path):
    root = make_nnunet(tmp_path)
    (root / "dataset.json").write_text('{\n  "channel_names": {"0": "CT"},\n  "labels": {,\n}\n')
    with pytest.raises(DatasetError, match=r"dataset.json is not valid JSON.*line 3") as err:
        load_dataset(root)
    assert err.value.problems[0].kind == "invalid-json"


def test_load_error_region_based_labels(tmp_path):
    root = make_nnunet(tmp_path)
    edit_json(root, labels={"background": 0, "whole_tumour": [1, 2, 3], "core": [2, 3]})
    with pytest.raises(DatasetError, match="'whole_tumour'.*region-based"):
        load_dataset(root)


@pytest.mark.parametrize(
    "labels",
    [{"liver": 1}, {"background": 0, "a": 1, "b": 1}, {"background": 0, "a": "one"}],
    ids=["no-background", "duplicate-value", "not-an-int"],
)
def test_load_error_bad_labels(tmp_path, labels):
    root = make_nnunet(tmp_path)
    edit_json(root, labels=labels)
    with pytest.raises(DatasetError, match="'labels'"):
        load_dataset(root)


@pytest.mark.parametrize("key", ["labels", "file_ending", "numTraining"])
def test_load_error_missing_key(tmp_path, key):
    root = make_nnunet(tmp_path)
    meta = json.loads((root / "dataset.json").read_text())
    del meta[key]
    write_json(root / "dataset.json", meta)
    with pytest.raises(DatasetError, match=f"no '{key}' key"):
        load_dataset(root)


def test_load_error_no_cases(tmp_path):
    root = make_nnunet(tmp_path, cases=(), test_cases=())
    with pytest.raises(DatasetError, match="no training cases"):
        load_dataset(root)


def test_load_fails_on_missing_file_but_not_on_stray_file(tmp_path):
    root = make_nnunet(tmp_path)
    save(root / "labelsTr" / "ghost.nii.gz", label(5))
    assert len(load_dataset(root).training) == 3
    (root / "labelsTr" / "case_b.nii.gz").unlink()
    with pytest.raises(DatasetError, match="labelsTr/case_b.nii.gz is missing") as err:
        load_dataset(root)
    assert [problem.kind for problem in err.value.problems] == ["missing-file"]


# --------------------------------------------------------------------------------------------
# Checking
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [make_nnunet, make_msd], ids=["nnunet", "msd"])
def test_clean_dataset_has_no_problems(tmp_path, make):
    problems = check_dataset(make(tmp_path))
    assert problems == []
    assert format_problems(problems) == "no problems found in 4 cases"


def test_small_affine_differences_and_float_labels_are_fine(tmp_path):
    root = make_nnunet(tmp_path)
    save(root / "labelsTr" / "case_a.nii.gz", label(0).astype(np.float32), AFFINE + 5e-4)
    assert check_dataset(root) == []


def shifted(affine: np.ndarray) -> np.ndarray:
    moved = affine.copy()
    moved[0, 3] += 0.5
    return moved


def with_values(values) -> np.ndarray:
    data = label(1).astype(np.float32)
    data.flat[3 : 3 + len(values)] = values
    return data


def with_non_finite(nan: int, inf: int) -> np.ndarray:
    data = image(0)
    data.flat[:nan] = np.nan
    data.flat[nan : nan + inf] = np.inf
    return data


def write_bytes(path: Path, content: bytes) -> None:
    path.write_bytes(content)


def truncate(path: Path) -> None:
    """Cut the end of the gzip stream: the header still reads, the voxels do not."""
    path.write_bytes(path.read_bytes()[:-100])


TR, LB = Path("imagesTr"), Path("labelsTr")

# (corrupt(root), kind, case, fragments the message must contain)
NNUNET_PROBLEMS = {
    "missing-label": (
        lambda r: (r / LB / "case_b.nii.gz").unlink(),
        "missing-file",
        "case_b",
        ["label labelsTr/case_b.nii.gz"],
    ),
    "missing-channel": (
        lambda r: (r / TR / "case_a_0001.nii.gz").unlink(),
        "missing-file",
        "case_a",
        ["channel 1", "imagesTr/case_a_0001.nii.gz"],
    ),
    "shape-mismatch": (
        lambda r: save(r / LB / "case_b.nii.gz", label(1, (6, 7, 9))),
        "shape-mismatch",
        "case_b",
        ["labelsTr/case_b.nii.gz", "(6, 7, 9)", "imagesTr/case_b_0000.nii.gz", "(6, 7, 8)"],
    ),
    "affine-mismatch": (
        lambda r: save(r / LB / "case_c.nii.gz", label(2), shifted(AFFINE)),
        "affine-mismatch",
        "case_c",
        ["labelsTr/case_c.nii.gz", "imagesTr/case_c_0000.nii.gz", "0.5"],
    ),
    "undeclared-label": (
        lambda r: save(r / LB / "case_b.nii.gz", with_values([7, 9])),
        "undeclared-label",
        "case_b",
        ["labelsTr/case_b.nii.gz", "7, 9"],
    ),
    "non-integer-label": (
        lambda r: save(r / LB / "case_b.nii.gz", with_values([0.5])),
        "non-integer-label",
        "case_b",
        ["labelsTr/case_b.nii.gz", "0.5"],
    ),
    "empty-label": (
        lambda r: save(r / LB / "case_a.nii.gz", np.zeros(SHAPE, np.uint8)),
        "empty-label",
        "case_a",
        ["labelsTr/case_a.nii.gz", "only background"],
    ),
    "nan-voxels": (
        lambda r: save(r / TR / "case_a_0001.nii.gz", with_non_finite(3, 0)),
        "non-finite",
        "case_a",
        ["imagesTr/case_a_0001.nii.gz", "3 NaN and 0 Inf"],
    ),
    "inf-voxels": (
        lambda r: save(r / TR / "case_c_0000.nii.gz", with_non_finite(0, 2)),
        "non-finite",
        "case_c",
        ["imagesTr/case_c_0000.nii.gz", "0 NaN and 2 Inf"],
    ),
    "garbage-bytes": (
        lambda r: write_bytes(r / TR / "case_b_0000.nii.gz", b"not a nifti file at all" * 20),
        "unreadable",
        "case_b",
        ["cannot read imagesTr/case_b_0000.nii.gz"],
    ),
    "garbage-gzip": (
        lambda r: write_bytes(r / LB / "case_b.nii.gz", gzip.compress(b"\x00garbage" * 100)),
        "unreadable",
        "case_b",
        ["cannot read labelsTr/case_b.nii.gz"],
    ),
    "truncated": (
        lambda r: truncate(r / TR / "case_c_0001.nii.gz"),
        "unreadable",
        "case_c",
        ["cannot read imagesTr/case_c_0001.nii.gz", "EOFError"],
    ),
    "channel-shape": (
        lambda r: save(r / TR / "case_a_0001.nii.gz", image(1, (6, 7, 9))),
        "channel-mismatch",
        "case_a",
        ["imagesTr/case_a_0001.nii.gz", "(6, 7, 9)", "imagesTr/case_a_0000.nii.gz"],
    ),
    "channel-affine": (
        lambda r: save(r / TR / "case_a_0001.nii.gz", image(1), shifted(AFFINE)),
        "channel-mismatch",
        "case_a",
        ["imagesTr/case_a_0001.nii.gz", "imagesTr/case_a_0000.nii.gz", "affine"],
    ),
    "orphan-label": (
        lambda r: save(r / LB / "ghost.nii.gz", label(4)),
        "orphan-file",
        None,
        ["labelsTr/ghost.nii.gz"],
    ),
    "channel-out-of-range": (
        lambda r: save(r / TR / "case_a_0002.nii.gz", image(2)),
        "bad-channel-suffix",
        None,
        ["imagesTr/case_a_0002.nii.gz", "0000 to 0001"],
    ),
    "no-channel-suffix": (
        lambda r: save(r / TR / "case_z.nii.gz", image(2)),
        "bad-channel-suffix",
        None,
        ["imagesTr/case_z.nii.gz"],
    ),
    "wrong-file-ending": (
        lambda r: write_bytes(r / TR / "notes.txt", b"hello"),
        "stray-file",
        None,
        ["imagesTr/notes.txt", ".nii.gz"],
    ),
    "num-training": (
        lambda r: edit_json(r, numTraining=5),
        "case-count-mismatch",
        None,
        ["numTraining is 5", "3 training cases"],
    ),
}


@pytest.mark.parametrize("problem", list(NNUNET_PROBLEMS))
def test_nnunet_problem_is_reported(tmp_path, problem):
    corrupt, kind, case, fragments = NNUNET_PROBLEMS[problem]
    root = make_nnunet(tmp_path)
    corrupt(root)
    problems = check_dataset(root)
    assert kinds(problems) == [kind], format_problems(problems)
    assert problems[0].case == case
    for fragment in fragments:
        assert fragment in problems[0].message
    assert problems[0].message in format_problems(problems)


def escape_with_dotdot(root: Path) -> None:
    (root / TR / "spleen_1.nii.gz").rename(root.parent / "spleen_1.nii.gz")
    meta = json.loads((root / "dataset.json").read_text())
    meta["training"][0]["image"] = "../spleen_1.nii.gz"
    write_json(root / "dataset.json", meta)


def escape_with_absolute_path(root: Path) -> None:
    (root / TR / "spleen_1.nii.gz").rename(root.parent / "spleen_1.nii.gz")
    meta = json.loads((root / "dataset.json").read_text())
    meta["training"][0]["image"] = str(root.parent / "spleen_1.nii.gz")
    write_json(root / "dataset.json", meta)


def escape_with_symlink(root: Path) -> None:
    (root / TR / "spleen_1.nii.gz").rename(root.parent / "spleen_1.nii.gz")
    (root / TR / "spleen_1.nii.gz").symlink_to(root.parent / "spleen_1.nii.gz")


@pytest.mark.parametrize(
    ("escape", "fragment"),
    [
        (escape_with_dotdot, "'../spleen_1.nii.gz' in dataset.json leaves the dataset folder"),
        (escape_with_absolute_path, "/spleen_1.nii.gz' in dataset.json leaves the dataset"),
        (escape_with_symlink, "'./imagesTr/spleen_1.nii.gz' in dataset.json resolves to"),
    ],
    ids=["dotdot", "absolute", "symlink"],
)
def test_msd_path_leaving_the_folder_is_reported_and_never_read(tmp_path, escape, fragment):
    root = make_msd(tmp_path)
    escape(root)
    (root.parent / "spleen_1.nii.gz").write_bytes(b"would be unreadable if it were read")
    problems = check_dataset(root)
    assert kinds(problems) == ["path-outside-root"], format_problems(problems)
    assert problems[0].case == "spleen_1"
    assert fragment in problems[0].message and "not read" in problems[0].message
    with pytest.raises(DatasetError, match="leaves the dataset folder|outside the dataset folder"):
        load_dataset(root)


def test_msd_missing_label_and_wrong_channel_count(tmp_path):
    root = make_msd(tmp_path, channels=("T2", "ADC"))
    (root / LB / "spleen_2.nii.gz").unlink()
    save(root / TR / "spleen_3.nii.gz", image(3, (*SHAPE, 3)))
    problems = check_dataset(root)
    assert kinds(problems) == ["channel-mismatch", "missing-file"], format_problems(problems)
    by_kind = {problem.kind: problem for problem in problems}
    assert by_kind["missing-file"].case == "spleen_2"
    assert "labelsTr/spleen_2.nii.gz" in by_kind["missing-file"].message
    assert by_kind["channel-mismatch"].case == "spleen_3"
    assert "imagesTr/spleen_3.nii.gz has shape (6, 7, 8, 3)" in by_kind["channel-mismatch"].message
    assert "2 channels" in by_kind["channel-mismatch"].message


def test_msd_file_named_by_no_entry(tmp_path):
    root = make_msd(tmp_path)
    save(root / TR / "spleen_42.nii.gz", image(42))
    problems = check_dataset(root)
    assert kinds(problems) == ["orphan-file"]
    assert "imagesTr/spleen_42.nii.gz" in problems[0].message


def test_several_problems_are_all_reported(tmp_path):
    root = make_nnunet(tmp_path)
    (root / LB / "case_a.nii.gz").unlink()
    save(root / TR / "case_b_0001.nii.gz", with_non_finite(4, 1))
    save(root / LB / "case_c.nii.gz", with_values([5]))
    save(root / LB / "ghost.nii.gz", label(4))
    edit_json(root, numTraining=9)
    problems = check_dataset(root)
    assert kinds(problems) == [
        "case-count-mismatch",
        "missing-file",
        "non-finite",
        "orphan-file",
        "undeclared-label",
    ]
    assert {problem.case for problem in problems} == {None, "case_a", "case_b", "case_c"}
    report = format_problems(problems).splitlines()
    assert report[0] == "dataset:"
    assert {"case_a:", "case_b:", "case_c:"} <= set(report)
    assert "  label labelsTr/case_b.nii.gz" not in report
    assert any("imagesTr/case_b_0001.nii.gz has 4 NaN and 1 Inf" in line for line in report)
    assert report[-1] == "5 problems: 3 in 3 cases, 2 dataset-wide"


@pytest.mark.parametrize(
    ("content", "kind", "fragment"),
    [(None, "missing-dataset-json", "no dataset.json"), ("[1, 2", "invalid-json", "line 1")],
)
def test_check_reports_unusable_dataset_json(tmp_path, content, kind, fragment):
    if content is not None:
        (tmp_path / "dataset.json").write_text(content)
    problems = check_dataset(tmp_path)
    assert kinds(problems) == [kind] and fragment in problems[0].message
    assert format_problems(problems).splitlines()[-1] == "1 problem, dataset-wide"


def test_problem_str_and_count_line():
    problem = DatasetProblem("missing-file", "label labelsTr/a.nii.gz is missing", "a")
    assert str(problem) == "a: label labelsTr/a.nii.gz is missing [missing-file]"
    other = DatasetProblem("empty-label", "label labelsTr/b.nii.gz contains only background", "b")
    report = format_problems([problem, other, problem])
    assert report.splitlines() == [
        "a:",
        "  label labelsTr/a.nii.gz is missing [missing-file]",
        "  label labelsTr/a.nii.gz is missing [missing-file]",
        "b:",
        "  label labelsTr/b.nii.gz contains only background [empty-label]",
        "3 problems in 2 cases",
    ]
    assert format_problems([], num_cases=1) == "no problems found in 1 case"


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------

NAMES = [f"case_{index:02d}" for index in range(10)]


def test_kfold_val_folds_are_disjoint_and_cover_every_case():
    split = kfold_split(NAMES[::-1], folds=3, seed=0)
    assert len(split) == 3
    assert sorted(len(fold["val"]) for fold in split) == [3, 3, 4]
    assert sorted(name for fold in split for name in fold["val"]) == NAMES
    for fold in split:
        assert fold["val"] == sorted(fold["val"]) and fold["train"] == sorted(fold["train"])
        assert fold["train"] == sorted(set(NAMES) - set(fold["val"]))


def test_kfold_is_deterministic_per_seed_and_ignores_input_order():
    assert kfold_split(NAMES, 5, seed=3) == kfold_split(NAMES[::-1], 5, seed=3)
    assert kfold_split(NAMES, 5, seed=0) != kfold_split(NAMES, 5, seed=1)


@pytest.mark.parametrize("folds", [1, 0, -2, 11, 2.5, True])
def test_kfold_bad_folds(folds):
    with pytest.raises(ValueError, match="folds must be an integer from 2 to 10"):
        kfold_split(NAMES, folds=folds)


def test_kfold_leave_one_out_and_duplicate_names():
    split = kfold_split(NAMES[:3], folds=3)
    assert sorted(fold["val"] for fold in split) == [[name] for name in NAMES[:3]]
    with pytest.raises(ValueError, match="unique.*case_01"):
        kfold_split(["case_01", "case_02", "case_01"], folds=2)


def test_split_round_trip(tmp_path):
    split = kfold_split(NAMES, folds=5, seed=2)
    path = tmp_path / "splits" / "splits_final.json"
    save_split(split, path)
    assert load_split(path) == split
    assert [entry.name for entry in path.parent.iterdir()] == ["splits_final.json"]


@pytest.mark.parametrize(
    "content", [None, "{not json", '{"train": []}', '[{"train": ["a"], "val": [1]}]']
)
def test_load_split_errors_name_the_file(tmp_path, content):
    path = tmp_path / "split.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DatasetError, match="split.json"):
        load_split(path)
