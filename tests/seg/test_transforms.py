"""The recipe's MONAI pipelines: intensity presets, channel stacking, orientation, crops."""

from __future__ import annotations

import dataclasses
import pickle
import warnings

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import RandomizableTrait

from visprior.seg.config import Preprocessing, SegTrainConfig
from visprior.seg.transforms import (
    ClassLocationsd,
    PosNegCropd,
    inference_transforms,
    preprocessing_transforms,
    resolve_intensity,
    train_transforms,
    validation_transforms,
)

SHAPE = (16, 18, 20)


def _save(path, array, affine=None):
    nib.save(nib.Nifti1Image(np.asarray(array), np.eye(4) if affine is None else affine), path)
    return str(path)


def _pre(**changes) -> Preprocessing:
    return dataclasses.replace(Preprocessing(intensity="none", crop_foreground=False), **changes)


def _cfg(pre: Preprocessing, **changes) -> SegTrainConfig:
    return dataclasses.replace(
        SegTrainConfig(preprocessing=pre, roi_size=(8, 8, 8), crops_per_volume=3), **changes
    )


def test_resolve_intensity():
    auto = Preprocessing(intensity="auto")
    assert resolve_intensity(auto, "CT").intensity == "ct"
    assert resolve_intensity(auto, "MRI").intensity == "mri"
    assert resolve_intensity(auto, ["T2", "ADC"]).intensity == "mri"
    assert resolve_intensity(auto, "PET").intensity == "none"
    assert resolve_intensity(auto, ["CT", "PET"]).intensity == "none"
    assert resolve_intensity(Preprocessing(intensity="mri"), "CT").intensity == "mri"
    assert auto.intensity == "auto"  # a copy, not changed in place


def test_auto_intensity_must_be_resolved():
    with pytest.raises(ValueError, match="resolve"):
        preprocessing_transforms(Preprocessing(intensity="auto"))


def test_ct_window_maps_to_unit_range_and_clips(tmp_path):
    image = np.full(SHAPE, -125.0, dtype=np.float32)
    image[1], image[2], image[3], image[4] = 275.0, 75.0, -1000.0, 3000.0
    path = _save(tmp_path / "ct.nii.gz", image)
    out = inference_transforms(_pre(intensity="ct"))({"image": path})["image"].numpy()
    assert out.shape == (1, *SHAPE)
    np.testing.assert_allclose(out[0, [0, 1, 2, 3, 4], 0, 0], [0.0, 1.0, 0.5, 0.0, 1.0], atol=1e-6)


def test_mri_normalises_nonzero_voxels_per_channel(tmp_path):
    rng = np.random.default_rng(0)
    channels = []
    for c, (mean, std) in enumerate([(100.0, 20.0), (5.0, 2.0)]):
        image = rng.normal(mean, std, SHAPE).astype(np.float32)
        image[:4] = 0.0
        channels.append(_save(tmp_path / f"mr_{c:04d}.nii.gz", image))
    out = inference_transforms(_pre(intensity="mri"))({"image": channels})["image"].numpy()
    assert out.shape == (2, *SHAPE)
    for channel in out:
        inside = channel[4:]
        assert abs(inside.mean()) < 1e-4 and abs(inside.std() - 1.0) < 1e-3
        assert np.all(channel[:4] == 0.0)


def test_channel_files_are_stacked_channel_first(tmp_path):
    files = [_save(tmp_path / f"c_{i:04d}.nii.gz", np.full(SHAPE, i, np.float32)) for i in range(3)]
    out = inference_transforms(_pre())({"image": files})["image"]
    assert out.shape == (3, *SHAPE)
    assert [float(out[i].mean()) for i in range(3)] == [0.0, 1.0, 2.0]


def test_four_dimensional_file_is_channel_first(tmp_path):
    path = _save(
        tmp_path / "msd.nii.gz", np.stack([np.full(SHAPE, i, np.float32) for i in (3, 4)], -1)
    )
    out = inference_transforms(_pre())({"image": path})["image"]
    assert out.shape == (2, *SHAPE)
    assert float(out[1].mean()) == 4.0


def test_lps_volume_is_reoriented_to_ras(tmp_path):
    image = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    out = inference_transforms(_pre())({"image": _save(tmp_path / "lps.nii.gz", image, lps)})
    out = out["image"]
    np.testing.assert_array_equal(out[0].numpy(), image[::-1, ::-1, :])
    assert np.all(np.diag(out.affine.numpy())[:3] > 0)
    np.testing.assert_allclose(out.affine.numpy() @ [0, 0, 0, 1], lps @ [15, 17, 0, 1])


def test_foreground_crop_and_resampling(tmp_path):
    image = np.zeros(SHAPE, np.float32)
    image[4:10, 5:11, 6:12] = 1.0
    label = (image > 0).astype(np.uint8)
    data = {
        "image": _save(tmp_path / "i.nii.gz", image),
        "label": _save(tmp_path / "l.nii.gz", label),
    }
    out = validation_transforms(_cfg(_pre(crop_foreground=True)))(data)
    assert out["image"].shape == out["label"].shape == (1, 6, 6, 6)
    out = validation_transforms(_cfg(_pre(spacing=(2.0, 2.0, 2.0))))(data)
    assert out["image"].shape == out["label"].shape
    assert all(abs(n - s / 2) <= 1 for n, s in zip(out["image"].shape[1:], SHAPE, strict=True))
    assert set(np.unique(out["label"].numpy())) <= {0.0, 1.0}  # nearest neighbour


def test_empty_image_is_not_cropped_to_nothing(tmp_path):
    path = _save(tmp_path / "empty.nii.gz", np.zeros(SHAPE, np.float32))
    out = inference_transforms(_pre(crop_foreground=True))({"image": path})["image"]
    assert out.shape == (1, *SHAPE)


def _train_case(tmp_path, label, shape=SHAPE):
    rng = np.random.default_rng(1)
    image = rng.uniform(-200, 400, shape).astype(np.float32)
    return {
        "image": [_save(tmp_path / "case_0000.nii.gz", image)],
        "label": _save(tmp_path / "case.nii.gz", label.astype(np.uint8)),
    }


def test_train_crops_have_roi_size(tmp_path):
    label = np.zeros(SHAPE, np.uint8)
    label[5:9, 5:9, 5:9] = 2
    cfg = _cfg(_pre(intensity="ct", crop_foreground=True), flip_axes=(0, 1, 2))
    transforms = train_transforms(cfg)
    transforms.set_random_state(seed=0)
    crops = transforms(_train_case(tmp_path, label))
    assert len(crops) == cfg.crops_per_volume
    for crop in crops:
        assert set(crop) == {"image", "label"}
        assert crop["image"].shape == crop["label"].shape == (1, 8, 8, 8)
        assert set(np.unique(crop["label"].numpy())) <= {0.0, 2.0}
        assert crop["image"].dtype == torch.float32


def test_small_volume_is_padded_to_roi(tmp_path):
    label = np.zeros(SHAPE, np.uint8)
    label[2:4, 2:4, 2:4] = 1
    crops = train_transforms(_cfg(_pre(), roi_size=(24, 24, 24)))(_train_case(tmp_path, label))
    assert all(c["image"].shape == (1, 24, 24, 24) for c in crops)


def test_all_background_label_does_not_crash(tmp_path):
    data = _train_case(tmp_path, np.zeros(SHAPE, np.uint8))
    with pytest.warns(UserWarning, match="case.nii.gz: label has no foreground"):
        crops = train_transforms(_cfg(_pre()))(data)
    assert len(crops) == 3 and all(c["image"].shape == (1, 8, 8, 8) for c in crops)
    with pytest.warns(UserWarning, match="case 'liver_3': label has no foreground"):
        crops = train_transforms(_cfg(_pre()))({**data, "case": "liver_3"})
    assert [c["case"] for c in crops] == ["liver_3"] * 3


def test_no_sampling_location_at_all_falls_back_to_random_crops(tmp_path):
    data = {
        "image": _save(tmp_path / "zero.nii.gz", np.zeros(SHAPE, np.float32)),
        "label": _save(tmp_path / "zero_label.nii.gz", np.zeros(SHAPE, np.uint8)),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        crops = train_transforms(_cfg(_pre()))(data)
    assert len(crops) == 3


def test_train_transforms_pickle():
    """DataLoader workers under spawn pickle the pipeline."""
    pickle.dumps(train_transforms(_cfg(_pre(intensity="ct", crop_foreground=True))))


def test_positive_crops_contain_foreground_and_are_not_cached(tmp_path):
    label = np.zeros(SHAPE, np.uint8)
    label[12:14, 2:4, 15:17] = 1
    cfg = _cfg(_pre(), positive_weight=1.0, negative_weight=0.0, affine_prob=0.0)
    transforms = train_transforms(cfg)
    crops = transforms(_train_case(tmp_path, label))
    assert all(float(c["label"].sum()) > 0 for c in crops)
    cropper = next(t for t in transforms.transforms if isinstance(t, PosNegCropd))
    assert isinstance(cropper, RandomizableTrait)  # CacheDataset stops caching before it


def _crops_holding(crops, value) -> int:
    return sum(bool((c["label"] == value).any()) for c in crops)


def test_class_balanced_crops_reach_a_small_class_as_often_as_a_large_one(tmp_path):
    """A 1-voxel class far from a large one: centred on it in about a third of the crops."""
    shape = (40, 40, 40)
    label = np.zeros(shape, np.uint8)
    label[:20] = 1
    label[35, 35, 35] = 2
    case = _train_case(tmp_path, label, shape)
    counts = {}
    for sampling in ("pos_neg", "classes"):
        cfg = _cfg(_pre(), crop_sampling=sampling, crops_per_volume=60, affine_prob=0.0)
        transforms = train_transforms(cfg, num_classes=3)
        transforms.set_random_state(seed=0)
        counts[sampling] = _crops_holding(transforms(case), 2)
    # binomial(60, >= 1/3): at least 10 with probability > 0.99
    assert counts["classes"] >= 10
    # foreground-centred crops hit the lone voxel only by chance (one in ~8000 foreground)
    assert counts["pos_neg"] < counts["classes"]


def test_class_balanced_crops_need_the_class_count():
    with pytest.raises(ValueError, match="num_classes=None"):
        train_transforms(_cfg(_pre(), crop_sampling="classes"))


def test_class_locations_are_a_fixed_sample_of_each_class_and_do_not_go_on_with_the_crops(
    tmp_path,
):
    """nnU-Net's way: a sample of each class's voxels, kept with the cached preprocessing, so
    that a class-balanced crop costs no pass over the volume."""
    from monai.data import list_data_collate

    shape = (40, 40, 40)
    label = np.zeros(shape, np.uint8)
    label[:20] = 1  # 32,000 voxels
    label[35, 35, 30:35] = 2  # 5 voxels
    locate = ClassLocationsd("label", num_classes=3, per_class=1000)
    assert not isinstance(locate, RandomizableTrait)  # CacheDataset caches it
    data = {"label": torch.as_tensor(label[None])}
    pools = locate(data)["_class_indices"]
    again = locate(data)["_class_indices"]
    assert [len(p) for p in pools] == [1000, 1000, 5]
    assert all(np.array_equal(a, b) for a, b in zip(pools, again, strict=True))
    flat = label.reshape(-1)
    assert all((flat[pool] == value).all() for value, pool in enumerate(pools))
    assert np.array_equal(pools[2], np.flatnonzero(flat == 2))
    cfg = _cfg(_pre(), crop_sampling="classes", crops_per_volume=30, affine_prob=0.0)
    transforms = train_transforms(cfg, num_classes=3)
    transforms.set_random_state(seed=0)
    crops = transforms(_train_case(tmp_path, label, shape))
    assert all("_class_indices" not in crop for crop in crops)
    assert list_data_collate([crops])["image"].shape[0] == 30
    assert _crops_holding(crops, 2) >= 4  # binomial(30, 1/3): at least 4 with p > 0.99
