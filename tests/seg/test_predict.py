"""Prediction: outputs on the input's own grid, checkpoint lookup, and safe file handling."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import randomize_batchnorm
from visprior import get_model
from visprior.engine.checkpoint import CheckpointError, save_checkpoint
from visprior.engine.config import config_to_dict
from visprior.seg.config import Preprocessing, SegTrainConfig
from visprior.seg.predict import (
    SegmentationPredictor,
    case_name,
    collect_cases,
    keep_largest_components,
    load_predictor,
    predict_files,
    save_nifti,
)

LABELS = {"background": 0, "liver": 1, "tumour": 2}
ROI = (32, 32, 32)  # RepUX-Net needs >= 32: its bottleneck is 1/32 of the input
SHAPE = (20, 24, 12)
SPACING = (1.2, 0.8, 2.0)


def _oblique_affine() -> np.ndarray:
    """Rotated about two axes, x and z flipped (not RAS), anisotropic voxels."""
    a, b = 0.3, 0.2
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([-SPACING[0], SPACING[1], -SPACING[2]])
    affine[:3, 3] = [12.0, -7.0, 30.0]
    return affine


def _write_checkpoint(
    path: Path,
    channel_names=("CT",),
    intensity: str = "ct",
    spacing=(1.5, 1.5, 1.5),
    roi=ROI,
) -> Path:
    kwargs = {
        "in_channels": len(channel_names),
        "out_channels": len(LABELS),
        "feature_size": 8,
        "hidden_size": 32,
        "kernel_size": 7,
    }
    model = randomize_batchnorm(get_model("repuxnet", **kwargs))
    pre = Preprocessing(intensity=intensity, spacing=spacing, crop_foreground=True)
    cfg = SegTrainConfig(preprocessing=pre, roi_size=roi, model="repuxnet", model_kwargs=kwargs)
    state = {
        "model": {"name": "repuxnet", "kwargs": kwargs},
        "state_dict": model.state_dict(),
        "labels": LABELS,
        "channel_names": list(channel_names),
        "preprocessing": config_to_dict(pre),
        "roi_size": list(roi),
        "config": config_to_dict(cfg),
    }
    return save_checkpoint(path, state)


def _ct_volume(seed: int = 0) -> np.ndarray:
    """A 'body' of soft tissue in air, so the foreground crop has something to cut."""
    rng = np.random.default_rng(seed)
    volume = np.full(SHAPE, -1000.0, np.float32)
    volume[3:17, 4:21, 2:10] = rng.uniform(-100, 250, (14, 17, 8))
    return volume


def _save(path: Path, array: np.ndarray, affine: np.ndarray, qform_code=1, sform_code=2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=qform_code)
    img.set_sform(affine, code=sform_code)
    nib.save(img, path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return _write_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt")


@pytest.fixture(scope="module")
def predictor(checkpoint) -> SegmentationPredictor:
    return load_predictor(checkpoint)


def test_output_has_input_geometry(tmp_path, predictor):
    affine = _oblique_affine()
    source = _save(tmp_path / "in" / "case_0000.nii.gz", _ct_volume(), affine)
    [written] = predict_files(predictor, [source.parent], tmp_path / "out", save_probabilities=True)
    assert written == tmp_path / "out" / "case.nii.gz"

    labels = nib.load(written)
    assert labels.shape == SHAPE
    np.testing.assert_allclose(labels.affine, affine, atol=1e-6)
    assert int(labels.header["qform_code"]) == 1 and int(labels.header["sform_code"]) == 2
    data = np.asanyarray(labels.dataobj)
    assert data.dtype == np.uint8 and data.max() < len(LABELS)

    probabilities = nib.load(tmp_path / "out" / "case_probabilities.nii.gz")
    assert probabilities.shape == (*SHAPE, len(LABELS))
    np.testing.assert_allclose(probabilities.affine, affine, atol=1e-6)
    p = probabilities.get_fdata(dtype=np.float32)
    assert p.min() >= 0.0
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-4)  # outside the crop too
    np.testing.assert_array_equal(p.argmax(-1), data)


def test_predict_case_returns_arrays(tmp_path, predictor):
    source = _save(tmp_path / "lone.nii.gz", _ct_volume(), _oblique_affine())
    labels, probabilities, affine, header = predictor.predict_case([source])
    assert labels.shape == SHAPE and labels.dtype == np.uint8
    assert probabilities.shape == (len(LABELS), *SHAPE) and probabilities.dtype == np.float32
    np.testing.assert_allclose(affine, _oblique_affine(), atol=1e-6)
    assert header.get_data_shape() == SHAPE


class _EchoLabels(nn.Module):
    """'Predicts' the label its input image holds: a confident one-hot of the rounded value."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        labels = x[:, 0].round().clamp(0, len(LABELS) - 1).long()
        return 50.0 * nn.functional.one_hot(labels, len(LABELS)).permute(0, 4, 1, 2, 3).float()


def _label_volume() -> np.ndarray:
    """Two nested spheres: 1 around 2, off-centre so that a flip would show."""
    grid = np.stack(np.meshgrid(*map(np.arange, SHAPE), indexing="ij"), -1) * SPACING
    distance = np.linalg.norm(grid - [10.0, 9.0, 11.0], axis=-1)
    return np.select([distance < 4.0, distance < 8.0], [2, 1], 0).astype(np.float32)


def _echo_predictor(predictor, spacing) -> SegmentationPredictor:
    pre = dataclasses.replace(predictor.preprocessing, intensity="none", spacing=spacing)
    return dataclasses.replace(predictor, model=_EchoLabels(), preprocessing=pre)


def test_inversion_restores_labels_exactly_without_resampling(tmp_path, predictor):
    label = _label_volume()
    source = _save(tmp_path / "seg.nii.gz", label, _oblique_affine())
    predicted, *_ = _echo_predictor(predictor, spacing=None).predict_case([source])
    np.testing.assert_array_equal(predicted, label)


def test_inversion_with_resampling_differs_only_at_boundaries(tmp_path, predictor):
    label = _label_volume()
    source = _save(tmp_path / "seg.nii.gz", label, _oblique_affine())
    predicted, *_ = _echo_predictor(predictor, spacing=(1.5, 1.5, 1.5)).predict_case([source])
    wrong = predicted != label
    assert wrong.mean() < 0.05
    # every disagreement is next to a boundary of the true labels
    padded = np.pad(label, 1, mode="edge")
    near_boundary = np.zeros(SHAPE, bool)
    for offset in np.ndindex(3, 3, 3):
        window = padded[tuple(slice(o, o + s) for o, s in zip(offset, SHAPE, strict=True))]
        near_boundary |= window != label
    assert not np.any(wrong & ~near_boundary)


def test_run_folder_prefers_best_then_last(tmp_path):
    run = tmp_path / "run"
    last = _write_checkpoint(run / "checkpoints" / "last.pt")
    assert load_predictor(run).source == str(last)
    best = _write_checkpoint(run / "checkpoints" / "best.pt", roi=(48, 48, 48))
    predictor = load_predictor(run)
    assert predictor.source == str(best) and predictor.roi_size == (48, 48, 48)
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="empty_run"):
        load_predictor(empty)


def test_never_overwrites_an_input(tmp_path, predictor):
    source = _save(tmp_path / "case.nii.gz", _ct_volume(), np.eye(4))
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="case.nii.gz would replace the input"):
            predict_files(predictor, [source], tmp_path, overwrite=overwrite)
    assert nib.load(source).get_fdata().min() == -1000.0


def test_existing_output_needs_overwrite(tmp_path, predictor):
    source = _save(tmp_path / "in" / "case_0000.nii.gz", _ct_volume(), np.eye(4))
    output = tmp_path / "out" / "case.nii.gz"
    output.parent.mkdir()
    output.write_text("stale")
    with pytest.raises(FileExistsError, match="case.nii.gz"):
        predict_files(predictor, [source], output.parent)
    assert output.read_text() == "stale"
    predict_files(predictor, [source], output.parent, overwrite=True)
    assert nib.load(output).shape == SHAPE
    assert not [p for p in output.parent.iterdir() if p.name.startswith(".")]  # no temp files


@pytest.fixture(scope="module")
def two_channel_predictor(tmp_path_factory) -> SegmentationPredictor:
    path = tmp_path_factory.mktemp("ckpt2") / "model.pt"
    return load_predictor(_write_checkpoint(path, channel_names=("T2", "ADC"), intensity="mri"))


def test_channel_files_are_grouped_per_case(tmp_path, two_channel_predictor):
    folder = tmp_path / "in"
    for case in ("a", "b"):
        for channel in range(2):
            _save(folder / f"{case}_{channel:04d}.nii.gz", _ct_volume(channel) + 1000, np.eye(4))
    cases = collect_cases(folder, num_channels=2)
    assert list(cases) == ["a", "b"]
    assert [p.name for p in cases["a"]] == ["a_0000.nii.gz", "a_0001.nii.gz"]
    written = predict_files(two_channel_predictor, folder, tmp_path / "out")
    assert [p.name for p in written] == ["a.nii.gz", "b.nii.gz"]


def test_missing_channel_file_names_the_case(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    _save(folder / "liver_7_0000.nii.gz", _ct_volume(), np.eye(4))
    with pytest.raises(ValueError, match="'liver_7'.*liver_7_0001"):
        collect_cases(folder, num_channels=2)


def test_wrong_channel_count_names_case_and_counts(tmp_path, two_channel_predictor):
    source = _save(tmp_path / "single_0000.nii.gz", _ct_volume(), np.eye(4))
    with pytest.raises(ValueError, match=r"'single': 1 input channel\(s\).*expects 2"):
        predict_files(two_channel_predictor, [source], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_case_name():
    assert case_name("x/liver_12_0000.nii.gz") == "liver_12"
    assert case_name("brain.nii") == "brain"
    with pytest.raises(ValueError, match="not a NIfTI"):
        case_name("scan.mha")


def test_a_file_and_channel_files_of_one_case_are_refused(tmp_path):
    _save(tmp_path / "a_0000.nii.gz", _ct_volume(), np.eye(4))
    _save(tmp_path / "a.nii.gz", _ct_volume(), np.eye(4))
    with pytest.raises(ValueError, match="case 'a': both a.nii.gz and channel files"):
        collect_cases(tmp_path, num_channels=1)


@pytest.mark.parametrize("codes", [(1, 2), (0, 0), (2, 0), (0, 1)])
def test_save_nifti_keeps_the_reference_geometry(tmp_path, codes):
    reference = nib.load(_save(tmp_path / "ref.nii.gz", _ct_volume(), _oblique_affine(), *codes))
    out = nib.load(save_nifti(np.ones(SHAPE, np.uint8), reference.header, tmp_path / "o.nii.gz"))
    assert (int(out.header["qform_code"]), int(out.header["sform_code"])) == codes
    np.testing.assert_allclose(out.affine, reference.affine, atol=1e-6)
    assert out.get_data_dtype() == np.uint8


def test_checkpoint_without_segmentation_entries_is_refused(tmp_path):
    kwargs = {"in_channels": 1, "out_channels": 2, "feature_size": 8, "hidden_size": 32}
    model = get_model("repuxnet", **kwargs)
    path = save_checkpoint(
        tmp_path / "bare.pt",
        {"model": {"name": "repuxnet", "kwargs": kwargs}, "state_dict": model.state_dict()},
    )
    with pytest.raises(CheckpointError, match="bare.pt: not a segmentation checkpoint"):
        load_predictor(path)


def test_keep_largest_components_drops_islands_per_class():
    labels = np.zeros((12, 12, 12), dtype=np.uint8)
    labels[1:5, 1:5, 1:5] = 1  # 64 voxels
    labels[9, 9, 9] = 1  # an island of class 1
    labels[7:9, 1:3, 1:3] = 2  # 8 voxels: class 2's only component stays
    kept = keep_largest_components(labels, num_classes=3)
    assert kept.dtype == np.uint8
    assert kept[9, 9, 9] == 0
    assert (kept == 1).sum() == 64 and (kept == 2).sum() == 8


@pytest.mark.parametrize(("dtype", "tolerance"), [("float16", 2e-3), ("bfloat16", 2e-2)])
def test_half_size_buffers_give_the_float32_result(tmp_path, checkpoint, dtype, tolerance):
    """Whole-volume buffers in 16 bits: probabilities within the type's rounding (float16
    2e-3, bfloat16 2e-2 absolute), labels equal wherever float32 is not near a tie."""
    source = _save(tmp_path / "ct.nii.gz", _ct_volume(), _oblique_affine())
    reference = load_predictor(checkpoint)
    halved = load_predictor(checkpoint, stitch_device="cpu", buffer_dtype=dtype)
    assert halved.buffer_dtype == getattr(torch, dtype)
    labels, probabilities, _, _ = reference.predict_case([source])
    half_labels, half_probabilities, _, _ = halved.predict_case([source])
    assert half_probabilities.dtype == np.float32
    np.testing.assert_allclose(half_probabilities, probabilities, atol=tolerance)
    ordered = np.sort(probabilities, axis=0)
    clear = ordered[-1] - ordered[-2] > 2 * tolerance
    np.testing.assert_array_equal(half_labels[clear], labels[clear])


def test_unknown_buffer_dtype_is_named(checkpoint):
    with pytest.raises(ValueError, match="float32, float16, bfloat16; got 'int8'"):
        load_predictor(checkpoint, buffer_dtype="int8")


def test_labels_without_probabilities_are_the_same(tmp_path, predictor):
    """Without probabilities the labels come from a running argmax over the inverted classes."""
    source = _save(tmp_path / "ct.nii.gz", _ct_volume(), _oblique_affine())
    labels, probabilities, _, _ = predictor.predict_case([source])
    alone, nothing, _, _ = predictor.predict_case([source], probabilities=False)
    assert nothing is None
    np.testing.assert_array_equal(alone, labels)
    np.testing.assert_array_equal(probabilities.argmax(0), labels)
