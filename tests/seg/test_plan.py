"""``seg plan`` on generated datasets whose right answer is known: the fingerprint, nnU-Net's
spacing rule for a coarse axis, normalisation, patch and batch within the budget, crop
sampling for a rare class, and bad inputs reported all at once."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from visprior.cli import main
from visprior.data import DatasetError, load_dataset
from visprior.seg.plan import extract_fingerprint, make_plan, target_spacing

SMALL_UNET = {"feature_size": 4, "num_res_units": 1}


def write_dataset(
    root: Path,
    spacings,
    shape=(40, 40, 24),
    channels=("CT",),
    rare_class=False,
    name="Dataset010_Plan",
) -> Path:
    """One case per spacing: a body (intensity by channel) holding a cube of label 1 (and a
    single-voxel label 2 when ``rare_class``), on zero air."""
    folder = root / name
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    for index, spacing in enumerate(spacings):
        label = np.zeros(shape, np.uint8)
        label[10:30, 10:30, 6:18] = 1
        if rare_class:
            label[20, 20, 12] = 2
        body = np.zeros(shape, bool)
        body[4:-4, 4:-4, 2:-2] = True
        affine = np.diag([*spacing, 1.0])
        for channel, _ in enumerate(channels):
            image = np.where(body, rng.normal(100.0 * (channel + 1), 10.0, shape), 0.0)
            image[label > 0] += 200.0
            path = folder / "imagesTr" / f"case{index}_{channel:04d}.nii.gz"
            nib.save(nib.Nifti1Image(image.astype(np.float32), affine), path)
        nib.save(nib.Nifti1Image(label, affine), folder / "labelsTr" / f"case{index}.nii.gz")
    labels = {"background": 0, "organ": 1, **({"speck": 2} if rare_class else {})}
    meta = {
        "channel_names": {str(i): c for i, c in enumerate(channels)},
        "labels": labels,
        "numTraining": len(spacings),
        "file_ending": ".nii.gz",
    }
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


def test_fingerprint_of_a_known_dataset(tmp_path):
    folder = write_dataset(tmp_path, [(1.0, 1.0, 2.0), (0.8, 0.8, 2.5)])
    fingerprint = extract_fingerprint(load_dataset(folder))
    first, second = fingerprint.cases
    assert first.spacing == (1.0, 1.0, 2.0) and second.spacing == pytest.approx((0.8, 0.8, 2.5))
    assert first.shape == (40, 40, 24)
    assert first.cropped_shape == (32, 32, 20)  # the body, not the air around it
    assert first.class_voxels == {0: 40 * 40 * 24 - 20 * 20 * 12, 1: 20 * 20 * 12}
    (ct,) = fingerprint.channels
    assert ct.mean == pytest.approx(300.0, rel=0.01)  # foreground: body 100 + organ 200
    assert ct.percentile_00_5 < 300.0 < ct.percentile_99_5


def test_spacing_axes_follow_the_ras_orientation(tmp_path):
    folder = write_dataset(tmp_path, [(1.0, 1.0, 1.0)])
    image = folder / "imagesTr" / "case0_0000.nii.gz"
    original = nib.load(image)
    # Stored with the axes swapped (z first): the fingerprint still speaks in RAS order.
    swapped = np.transpose(np.asarray(original.dataobj), (2, 0, 1))
    affine = np.array([[0, 1.0, 0, 0], [0, 0, 1.0, 0], [3.0, 0, 0, 0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(swapped, affine), image)
    label = folder / "labelsTr" / "case0.nii.gz"
    swapped_label = np.transpose(np.asarray(nib.load(label).dataobj), (2, 0, 1))
    nib.save(nib.Nifti1Image(swapped_label, affine), label)
    (case,) = extract_fingerprint(load_dataset(folder)).cases
    assert case.spacing == (1.0, 1.0, 3.0) and case.shape == (40, 40, 24)


def test_median_spacing_for_an_isotropic_set(tmp_path):
    folder = write_dataset(tmp_path, [(1.0, 1.0, 1.0), (1.2, 1.2, 1.2), (1.6, 1.6, 1.6)])
    spacing, note = target_spacing(extract_fingerprint(load_dataset(folder)))
    assert spacing == pytest.approx((1.2, 1.2, 1.2)) and note == "median spacing per axis"


def test_a_coarse_axis_takes_its_10th_percentile(tmp_path):
    """0.7 x 0.7 x 5 mm with few slices: nnU-Net's rule plans the z axis at the 10th percentile
    of its spacings (4.0 .. 6.0 mm here), not at the median."""
    z = [4.0, 4.5, 5.0, 5.5, 6.0]
    folder = write_dataset(tmp_path, [(0.7, 0.7, s) for s in z], shape=(60, 60, 8))
    spacing, note = target_spacing(extract_fingerprint(load_dataset(folder)))
    assert spacing[:2] == pytest.approx((0.7, 0.7))
    assert spacing[2] == pytest.approx(np.percentile(z, 10), abs=1e-4)  # 4.2, not 5.0
    assert "10th percentile" in note


def test_plan_normalisation_patch_and_batch(tmp_path):
    folder = write_dataset(tmp_path, [(1.0, 1.0, 1.0), (1.0, 1.0, 1.0)], channels=("CT", "T2"))
    dataset = load_dataset(folder)
    fingerprint = extract_fingerprint(dataset)
    plan = make_plan(fingerprint, dataset, "unet", SMALL_UNET, memory_gb=8)
    ct, mri = plan.normalization
    assert ct["scheme"] == "ct" and mri == {"channel": "T2", "scheme": "zscore"}
    assert ct["clip"] == [
        fingerprint.channels[0].percentile_00_5,
        fingerprint.channels[0].percentile_99_5,
    ]
    assert plan.stride == 16
    assert all(p % 16 == 0 for p in plan.roi_size)
    # No larger than the median shape (32 x 32 x 20 after cropping), rounded to the stride.
    assert plan.roi_size == (32, 32, 16)
    assert plan.batch_size >= 2 and plan.estimated_memory_gb <= 8
    assert plan.crop_sampling == "pos_neg"


def test_a_small_budget_shrinks_the_patch_and_the_batch(tmp_path):
    folder = write_dataset(tmp_path, [(1.0, 1.0, 1.0)], shape=(140, 140, 120))
    dataset = load_dataset(folder)
    fingerprint = extract_fingerprint(dataset)
    large = make_plan(fingerprint, dataset, "unet", SMALL_UNET, memory_gb=64)
    small = make_plan(fingerprint, dataset, "unet", SMALL_UNET, memory_gb=0.05)
    assert np.prod(small.roi_size) < np.prod(large.roi_size)
    assert small.batch_size <= large.batch_size
    assert small.estimated_memory_gb <= 0.05 or small.roi_size == (16, 16, 16)


def test_a_rare_class_gets_class_balanced_crops(tmp_path):
    folder = write_dataset(tmp_path, [(1.0, 1.0, 1.0)], rare_class=True)
    dataset = load_dataset(folder)
    plan = make_plan(extract_fingerprint(dataset), dataset, "unet", SMALL_UNET, memory_gb=8)
    assert plan.crop_sampling == "classes"


def test_every_bad_case_is_reported_at_once(tmp_path):
    folder = write_dataset(tmp_path, [(1.0, 1.0, 1.0)] * 3)
    zero = folder / "imagesTr" / "case0_0000.nii.gz"
    flat = nib.Nifti1Image(np.asarray(nib.load(zero).dataobj), None)
    flat.set_sform(np.diag([1.0, 0.0, 1.0, 1.0]), code=1)  # a y axis of no extent
    flat.set_qform(None, code=0)
    nib.save(flat, zero)
    (folder / "imagesTr" / "case2_0000.nii.gz").write_bytes(b"not a volume")
    with pytest.raises(DatasetError) as caught:
        extract_fingerprint(load_dataset(folder))
    message = str(caught.value)
    assert "case0" in message and "spacing" in message
    assert "case2" in message and "case2_0000.nii.gz" in message
    assert "case1" not in message.replace("case1_", "")


def test_plan_command_writes_the_plan_and_refuses_to_replace_it(tmp_path, capsys):
    folder = write_dataset(tmp_path, [(1.0, 1.0, 1.0)])
    args = ["seg", "plan", str(folder), "--model", "unet", "--gpu-memory-gb", "8"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "patch (roi_size)" in out and "spacing (mm)" in out
    saved = json.loads((folder / "visprior_plans.json").read_text())
    assert saved["plan"]["model"] == "unet" and len(saved["fingerprint"]["cases"]) == 1
    assert main(args) == 2
    assert "visprior_plans.json exists; pass --force" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0


@pytest.mark.parametrize(
    ("model", "kwargs", "stride"),
    [
        ("repuxnet", {"feature_size": 8, "hidden_size": 32, "kernel_size": 7}, 16),
        ("swinunetr", {"feature_size": 12}, 32),
    ],
)
def test_the_patch_is_a_multiple_of_the_network_stride(tmp_path, model, kwargs, stride):
    folder = write_dataset(tmp_path, [(1.0, 1.0, 1.0)], shape=(80, 80, 60))
    dataset = load_dataset(folder)
    plan = make_plan(extract_fingerprint(dataset), dataset, model, kwargs, memory_gb=8)
    assert plan.stride == stride
    assert all(p % stride == 0 for p in plan.roi_size)
    assert all(p <= max(m, stride) for p, m in zip(plan.roi_size, plan.median_shape, strict=True))


TINY_TRAINING = [
    "--model", "unet", "--iterations", "2", "--fold", "-1",
    "--set", "model_kwargs={feature_size: 4, num_res_units: 1}",
    "--set", "val_every=2", "--set", "num_workers=0",
]  # fmt: skip


def test_seg_train_takes_the_plan_and_says_which_values_came_from_it(tmp_path, capsys):
    import yaml

    folder = write_dataset(tmp_path, [(1.0, 1.0, 1.0), (1.0, 1.0, 1.0)])
    plan_args = ["seg", "plan", str(folder), "--model", "unet", "--gpu-memory-gb", "8"]
    assert main(plan_args) == 0
    plan = json.loads((folder / "visprior_plans.json").read_text())["plan"]
    run = tmp_path / "run"
    args = ["seg", "train", str(folder), "-o", str(run), *TINY_TRAINING]
    assert main([*args, "--set", "batch_size=1"]) == 0
    out = capsys.readouterr().out
    assert "from the plan" in out and "post-processing: none chosen: no held-out case" in out
    # fold -1 validates on the training cases: no held-out case, so nothing is predicted for
    # the choice and nothing chosen
    assert not (run / "validation").exists()
    decision = json.loads((run / "postprocessing.json").read_text())
    assert decision["held_out"] is False and decision["largest_component"] == []
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["roi_size"] == plan["roi_size"]
    assert config["preprocessing"]["intensity"] == "planned"
    assert config["preprocessing"]["spacing"] == plan["spacing"]
    assert config["batch_size"] == 1  # --set wins over the plan ...
    assert "batch_size" not in config["from_plan"]  # ... and is not reported as planned
    assert {"roi_size", "preprocessing.intensity", "preprocessing.spacing"} <= set(
        config["from_plan"]
    )
    assert config["plan_file"] == str(folder / "visprior_plans.json")

    # The checkpoint carries the planned normalisation: prediction uses it unchanged.
    image = folder / "imagesTr" / "case0_0000.nii.gz"
    assert main(["seg", "predict", str(run), str(image), "-o", str(tmp_path / "out")]) == 0
    predicted = nib.load(tmp_path / "out" / "case0.nii.gz")
    assert predicted.shape == nib.load(image).shape

    plain = tmp_path / "plain"
    assert main(["seg", "train", str(folder), "-o", str(plain), "--no-plan", *TINY_TRAINING,
                 "--roi", "32", "32", "16"]) == 0  # fmt: skip
    config = yaml.safe_load((plain / "config.yaml").read_text())
    assert config["from_plan"] == [] and config["preprocessing"]["intensity"] == "ct"


def test_planned_ct_normalisation_clips_and_scales(tmp_path):
    import torch

    from visprior.seg.transforms import PlannedNormalized

    schemes = [
        {"scheme": "ct", "clip": [-100.0, 300.0], "mean": 100.0, "std": 50.0},
        {"scheme": "zscore"},
    ]
    image = torch.tensor([[[[-1000.0, 0.0, 200.0, 900.0]]], [[[0.0, 1.0, 2.0, 3.0]]]])
    out = PlannedNormalized("image", schemes)({"image": image})["image"]
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([-4.0, -2.0, 2.0, 4.0]))
    inside = torch.tensor([1.0, 2.0, 3.0])
    expected = (inside - inside.mean()) / inside.std()
    torch.testing.assert_close(out[1, 0, 0], torch.cat([torch.zeros(1), expected]))  # 0 stays
    with pytest.raises(ValueError, match=r"channel_normalization\[0\]: a 'ct' scheme needs"):
        PlannedNormalized("image", [{"scheme": "ct", "clip": [0, 1]}])
    with pytest.raises(ValueError, match="2 channel"):
        PlannedNormalized("image", schemes[:1])({"image": image})


def test_a_plan_file_that_is_not_one_is_named(tmp_path, capsys):
    folder = write_dataset(tmp_path, [(1.0, 1.0, 1.0)])
    bogus = tmp_path / "bogus.json"
    bogus.write_text('{"plan": 3}')
    args = ["seg", "train", str(folder), "-o", str(tmp_path / "run"), "--plan", str(bogus)]
    assert main([*args, *TINY_TRAINING]) == 2
    assert f"{bogus}: not a plan written by `visprior seg plan`" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_training_a_3d_lowres_the_plan_did_not_make_is_refused_naming_the_plan(tmp_path, capsys):
    folder = write_dataset(tmp_path, [(1.0, 1.0, 1.0)])
    assert main(["seg", "plan", str(folder), "--model", "unet", "--gpu-memory-gb", "8"]) == 0
    args = ["seg", "train", str(folder), "-o", str(tmp_path / "run"), *TINY_TRAINING]
    assert main([*args, "--configuration", "3d_lowres"]) == 2
    error = capsys.readouterr().err
    assert f"{folder / 'visprior_plans.json'}: the plan has no 3d_lowres configuration" in error
    assert not (tmp_path / "run").exists()


def test_lowres_spacing_follows_nnunets_steps_on_a_known_case():
    """A patch capped at 64^3 voxels in a 200^3 median image covers 3.3%: the isotropic
    spacing grows by 1.03x a step until the image holds at most 4 patches, 200 / 1.03^n <=
    101.6, first at n = 23; the image is then 8x smaller, so the configuration is kept."""
    from visprior.seg.plan import lowres_spacings

    def capped(_spacing, shape):
        return min(64**3, int(np.prod(shape)))

    low = lowres_spacings((1.0, 1.0, 1.0), (200, 200, 200), capped)
    assert low == pytest.approx((1.03**23,) * 3, rel=1e-9)
    # only the axes finer than half the coarsest grow first: the 3 mm axis stays, and the image
    # is under 2x smaller when the patch reaches a quarter of it (1.03^10 squared = 1.81): dropped
    assert lowres_spacings((1.0, 1.0, 3.0), (300, 300, 20), capped) is None
    # a patch that covers a quarter of the image already: no 3d_lowres
    assert lowres_spacings((1.0, 1.0, 1.0), (100, 100, 100), capped) is None


def test_a_patch_far_below_the_image_gets_a_3d_lowres_configuration(tmp_path):
    folder = write_dataset(tmp_path, [(1.0, 1.0, 1.0)], shape=(140, 140, 120))
    dataset = load_dataset(folder)
    fingerprint = extract_fingerprint(dataset)
    small = make_plan(fingerprint, dataset, "unet", SMALL_UNET, memory_gb=0.05)
    low = small.lowres
    assert low is not None and "3d_lowres at" in " ".join(small.notes)
    assert all(s > 1.0 for s in low["spacing"]) and len(set(low["spacing"])) == 1
    assert np.prod(low["median_shape"]) * 2 <= np.prod(small.median_shape)
    assert np.prod(low["roi_size"]) >= 0.25 * np.prod(low["median_shape"])
    assert all(p % 16 == 0 for p in low["roi_size"])

    from visprior.seg.plan import plan_values

    plan = json.loads(json.dumps(dataclasses.asdict(small)))
    values, _ = plan_values(plan, "unet", "3d_lowres")
    assert values["preprocessing"]["spacing"] == low["spacing"]
    assert values["roi_size"] == low["roi_size"] and values["batch_size"] == low["batch_size"]
    full, _ = plan_values(plan, "unet")
    assert full["preprocessing"]["spacing"] == list(small.spacing)

    large = make_plan(fingerprint, dataset, "unet", SMALL_UNET, memory_gb=64)
    assert large.lowres is None  # its patch holds over a quarter of the image
    with pytest.raises(ValueError, match="the plan has no 3d_lowres configuration"):
        plan_values(json.loads(json.dumps(dataclasses.asdict(large))), "unet", "3d_lowres")
    with pytest.raises(ValueError, match="configuration '2d': choose one of auto, 3d_fullres, "):
        plan_values(plan, "unet", "2d")
