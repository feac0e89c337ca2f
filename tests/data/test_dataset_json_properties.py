"""Fuzzing the ``dataset.json`` reader: whatever the file holds, ``load_dataset`` returns a dataset
whose every file lies inside its folder or raises DatasetError, and ``check_dataset`` reports
problems without raising."""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st

from visprior.data import (
    DatasetError,
    DatasetProblem,
    ProblemList,
    check_dataset,
    load_dataset,
)

OUTSIDE = "@OUTSIDE@"  # stands for the absolute path of a volume beside the dataset folder


def _volume_bytes(data: np.ndarray) -> bytes:
    return gzip.compress(nib.Nifti1Image(data, np.eye(4)).to_bytes())


IMAGE = _volume_bytes(np.arange(8, dtype=np.float32).reshape(2, 2, 2))
LABEL = _volume_bytes(np.array([0, 1] * 4, dtype=np.uint8).reshape(2, 2, 2))

# Every example's dataset folder holds one valid case of each layout; "link" swaps one of its
# files for a symlink to a volume beside the folder.
FILES = {
    "imagesTr/case_0000.nii.gz": IMAGE,
    "imagesTr/case.nii.gz": IMAGE,
    "labelsTr/case.nii.gz": LABEL,
    "imagesTs/test_0000.nii.gz": IMAGE,
}
LINKS = (None, "imagesTr/case_0000.nii.gz", "labelsTr/case.nii.gz", "imagesTs/test_0000.nii.gz")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)

HOSTILE_PATHS = [
    "./imagesTr/case.nii.gz",
    "imagesTr/case.nii.gz",
    "./labelsTr/case.nii.gz",
    "../outside.nii.gz",
    "./imagesTr/../../outside.nii.gz",
    "imagesTr/./../labelsTr/case.nii.gz",
    OUTSIDE,
    "/etc/passwd",
    "./imagesTr/case.nii.gz\0.png",
    "\ud800.nii.gz",  # a lone surrogate: no file system can encode it
    "",
    ".",
    "imagesTr",
    "./imagesTr/" + "x" * 3000 + ".nii.gz",
    "./missing.nii.gz",
]
paths = st.one_of(st.sampled_from(HOSTILE_PATHS), st.text(max_size=16), json_values)
msd_entries = st.one_of(
    st.fixed_dictionaries({"image": paths, "label": paths}),
    st.fixed_dictionaries({"image": paths}),
    st.fixed_dictionaries({"label": paths}),
    paths,
)

VALID_NNUNET = {
    "channel_names": {"0": "CT"},
    "labels": {"background": 0, "organ": 1},
    "numTraining": 1,
    "file_ending": ".nii.gz",
}
WRONG_NNUNET = {
    "channel_names": st.one_of(st.text(max_size=8), st.lists(st.text(max_size=4)), json_values),
    "labels": st.one_of(
        st.lists(st.integers(-2, 3), max_size=3),
        st.dictionaries(
            st.text(max_size=6),
            st.one_of(st.integers(-2, 5), st.lists(st.integers(0, 3), max_size=3), st.text()),
            max_size=3,
        ),
        json_values,
    ),
    "numTraining": st.one_of(st.integers(), st.just("x"), json_values),
    "file_ending": st.one_of(
        st.sampled_from([".nii", ".", "./../x", ".nii.gz\0", "nii.gz", ".NII.GZ", "/"]),
        st.text(max_size=8),
        json_values,
    ),
}
VALID_MSD = {
    "modality": {"0": "CT"},
    "labels": {"0": "background", "1": "organ"},
    "numTraining": 1,
}
WRONG_MSD = {
    "modality": st.one_of(st.text(max_size=8), json_values),
    "labels": st.one_of(
        st.dictionaries(st.text(max_size=4), st.text(max_size=6), max_size=3), json_values
    ),
    "numTraining": st.one_of(st.integers(), st.just("x"), json_values),
    "training": json_values,
    "test": json_values,
}


@st.composite
def near_valid(draw, valid: dict, wrong: dict[str, st.SearchStrategy]) -> dict:
    """``valid`` with up to two keys given a value of the wrong kind or left out."""
    meta = dict(valid)
    for key in draw(st.sets(st.sampled_from(sorted(wrong)), max_size=2)):
        if draw(st.booleans()):
            meta[key] = draw(wrong[key])
        else:
            meta.pop(key, None)
    return meta


nnunet_datasets = near_valid(VALID_NNUNET, WRONG_NNUNET)
msd_datasets = st.builds(
    lambda meta, training, test: {"training": training, "test": test, **meta},
    near_valid(VALID_MSD, WRONG_MSD),
    st.lists(msd_entries, min_size=1, max_size=4),
    st.lists(msd_entries, max_size=3),
)


def holds_its_promises(content: bytes, link: str | None = None) -> None:
    """Write a dataset folder with ``content`` as its dataset.json (``link``: a file replaced by a
    symlink out of the folder) and check both readers."""
    with tempfile.TemporaryDirectory() as temporary:
        base = Path(temporary)
        root = base / "Dataset001_Fuzz"
        outside = base / "outside.nii.gz"
        outside.write_bytes(IMAGE)
        for name, data in FILES.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            if name == link:
                (root / name).symlink_to(outside)
            else:
                (root / name).write_bytes(data)
        (root / "dataset.json").write_bytes(content.replace(OUTSIDE.encode(), bytes(outside)))

        try:
            dataset = load_dataset(root)
        except DatasetError as error:
            refused = error.problems
            assert refused and all(isinstance(problem, DatasetProblem) for problem in refused)
            assert "\n" not in str(error)
        else:
            refused = []
            real_root = os.path.realpath(root)
            for case in dataset.training + dataset.test:
                for path in (*case.images, *([case.label] if case.label else [])):
                    real = os.path.realpath(path)
                    assert os.path.commonpath([real_root, real]) == real_root, (case, real)

        problems = check_dataset(root)
        assert isinstance(problems, ProblemList)
        assert all("\n" not in problem.message for problem in problems)
        assert {str(problem) for problem in refused} <= {str(problem) for problem in problems}


def as_json(value) -> bytes:
    return json.dumps(value).encode("utf-8", "surrogatepass")


@given(json_values)
def test_any_json_value(value):
    holds_its_promises(as_json(value))


@given(nnunet_datasets, st.sampled_from(LINKS))
@example(VALID_NNUNET, None)
def test_nnunet_keys_with_wrong_values(meta, link):
    holds_its_promises(as_json(meta), link)


@given(msd_datasets, st.sampled_from(LINKS))
@example(
    {**VALID_MSD, "training": [{"image": "imagesTr/case.nii.gz", "label": "labelsTr/case.nii.gz"}]},
    None,
)
def test_msd_entries_with_hostile_paths(meta, link):
    holds_its_promises(as_json(meta), link)


@given(st.one_of(st.binary(max_size=64), st.text(max_size=64).map(str.encode)))
@example(b"\xff\xfe{}")
@example(b'{"channel_names": {"0": "CT"}, "labels": {"a": 1}\xc3\x28}')
@example(b"[" * 50_000)
@example(b'{"numTraining": ' + b"7" * 6000 + b"}")
@example(b'{"labels": NaN, "channel_names": Infinity}')
@example(b"")
def test_bytes_that_are_not_json(content):
    holds_its_promises(content)
