"""``visprior export bundle``: a MONAI bundle that MONAI's own runner executes, giving the labels
``seg predict`` gives; and ``visprior export torchscript | onnx``."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, verify_net_in_out
from monai.bundle.utils import DEFAULT_METADATA
from monai.data import load_net_with_metadata

import visprior
from tests.seg.test_pipeline import train_toy_run
from visprior.cli import main
from visprior.deploy.bundle import deployed_network_def, preprocessing_config
from visprior.nets.build import ModelSpec
from visprior.reparam import reparameterize_model
from visprior.seg.config import Preprocessing
from visprior.seg.transforms import inference_transforms

TRAIN = [
    "--model", "unet", "--roi", "32", "32", "32", "--iterations", "3",
    "--set", "model_kwargs={feature_size: 4, num_res_units: 1}",
    "--set", "val_every=3", "--set", "num_workers=0", "--set", "folds=3", "--set", "lr=1e-2",
]  # fmt: skip

# The keys of MONAI's bundle specification for metadata.json, beyond DEFAULT_METADATA's.
SPEC_KEYS = {"version", "changelog", "monai_version", "pytorch_version", "numpy_version"}
SPEC_KEYS |= {"required_packages_version", "task", "description", "authors", "copyright"}
SPEC_KEYS |= {"network_data_format"}
TENSOR_KEYS = {"type", "format", "num_channels", "spatial_shape", "dtype", "value_range"}
TENSOR_KEYS |= {"is_patch_data", "channel_def"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    dataset, run = train_toy_run(root, TRAIN)
    bundle = root / "bundle"
    assert main(["export", "bundle", str(run), "-o", str(bundle), "--zip"]) == 0
    return dataset, run, bundle


def _configs(bundle):
    return [
        json.loads((bundle / "configs" / f"{n}.json").read_text())
        for n in ("metadata", "inference")
    ]


@pytest.mark.slow
def test_monai_runs_the_bundle_to_the_labels_of_seg_predict(trained, tmp_path):
    dataset, run, bundle = trained
    images = dataset / "imagesTr"
    expected = tmp_path / "seg-predict"
    assert main(["seg", "predict", str(run), str(images), "-o", str(expected)]) == 0
    got = tmp_path / "bundle-out"
    command = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", str(bundle / "configs" / "inference.json"),
        "--meta_file", str(bundle / "configs" / "metadata.json"),
        "--bundle_root", str(bundle),
        "--dataset_dir", str(images),
        "--output_dir", str(got),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for case in ("a", "b", "c"):
        ours, theirs = nib.load(expected / f"{case}.nii.gz"), nib.load(got / f"{case}.nii.gz")
        source = nib.load(images / f"{case}_0000.nii.gz")
        assert theirs.shape == source.shape
        np.testing.assert_allclose(theirs.affine, source.affine, atol=1e-4)
        np.testing.assert_array_equal(np.asarray(theirs.dataobj), np.asarray(ours.dataobj))
        assert np.asarray(theirs.dataobj).dtype == np.uint8


def test_metadata_holds_the_specification_and_the_run_labels(trained):
    _, _, bundle = trained
    metadata, inference = _configs(bundle)
    assert set(DEFAULT_METADATA) | SPEC_KEYS <= set(metadata)
    data_format = metadata["network_data_format"]
    image, pred = data_format["inputs"]["image"], data_format["outputs"]["pred"]
    assert set(image) >= TENSOR_KEYS and set(pred) >= TENSOR_KEYS
    assert image["num_channels"] == 1 and image["channel_def"] == {"0": "MRI"}
    assert image["modality"] == "MR" and image["spatial_shape"] == ["16*n"] * 3
    assert pred["channel_def"] == {"0": "background", "1": "cube", "2": "ball"}
    assert metadata["monai_version"] and metadata["required_packages_version"]["visprior"]
    assert inference["network_def"] == {
        "_target_": "visprior.get_model",
        "name": "unet",
        "in_channels": 1,
        "out_channels": 3,
        "feature_size": 4,
        "num_res_units": 1,
    }
    assert inference["inferer"]["roi_size"] == [32, 32, 32]
    assert inference["inferer"]["overlap"] == 0.5  # seg predict's default
    targets = [step["_target_"] for step in inference["preprocessing"]["transforms"]]
    assert targets == [
        "visprior.seg.transforms.LoadVolumesd",
        "Orientationd",  # the toy run keeps its spacing: no Spacingd
        "visprior.seg.transforms.CropToForegroundd",
        "NormalizeIntensityd",
        "EnsureTyped",
    ]
    readme = (bundle / "docs" / "README.md").read_text()
    assert "| 2 | ball |" in readme and "Validation mean foreground Dice" in readme


def test_monai_verifies_the_network_against_the_metadata(trained):
    _, _, bundle = trained
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(bundle / "configs" / "inference.json"),
        device="cpu",
        n=2,
    )


def test_torchscript_carries_the_configs_and_the_fused_network(trained):
    _, run, bundle = trained
    module, metadata, extra = load_net_with_metadata(
        str(bundle / "models" / "model.ts"), more_extra_files=("inference.json",)
    )
    assert metadata["network_data_format"] == _configs(bundle)[0]["network_data_format"]
    assert json.loads(extra["inference.json"])["network_def"]["name"] == "unet"
    network = visprior.get_model("unet", in_channels=1, out_channels=3, feature_size=4,
                                 num_res_units=1)  # fmt: skip
    network.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(module(x), network.eval()(x), rtol=1e-4, atol=1e-4)


def test_zip_and_refusal_to_replace(trained, capsys):
    _, run, bundle = trained
    with zipfile.ZipFile(bundle.with_suffix(".zip")) as archive:
        assert "bundle/configs/inference.json" in archive.namelist()
    assert main(["export", "bundle", str(run), "-o", str(bundle)]) == 2
    assert f"{bundle} exists; pass --force to replace it" in capsys.readouterr().err


def test_torchscript_and_onnx_commands(trained, tmp_path):
    import onnxruntime

    _, run, _ = trained
    script, onnx_file = tmp_path / "net.ts", tmp_path / "net.onnx"
    assert main(["export", "torchscript", str(run), "-o", str(script)]) == 0
    assert main(["export", "onnx", str(run), "-o", str(onnx_file)]) == 0
    x = torch.randn(1, 1, 32, 32, 32)
    expected = torch.jit.load(str(script))(x).detach().numpy()
    session = onnxruntime.InferenceSession(str(onnx_file))
    (got,) = session.run(None, {"image": x.numpy()})
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)
    assert main(["export", "onnx", str(run), "-o", str(onnx_file)]) == 2  # no --force


@pytest.mark.parametrize("name", ["repuxnet", "repuxnet_sr", "uxnet", "mednext_s"])
def test_network_def_builds_the_deployed_form(name):
    kwargs = {"in_channels": 1, "out_channels": 2, "feature_size": 4}
    if name != "mednext_s":
        kwargs.update(hidden_size=16, kernel_size=5)
    model = visprior.get_model(name, **kwargs).eval()
    fused = reparameterize_model(model).eval()
    network_def, network = deployed_network_def(
        ModelSpec(name, kwargs), SimpleNamespace(model=fused)
    )
    assert network_def.pop("_target_") == "visprior.get_model"
    assert network_def.get("inference_mode", False) == name.startswith("repuxnet")
    rebuilt = visprior.get_model(**network_def)
    rebuilt.load_state_dict(network.state_dict())
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), model(x), rtol=1e-4, atol=1e-4)


PLANNED_CT = [{"scheme": "ct", "clip": (-100.0, 200.0), "mean": 10.0, "std": 50.0}]


@pytest.mark.parametrize(
    "pre",
    [
        Preprocessing(intensity="ct", spacing=(2.0, 2.0, 2.5)),
        Preprocessing(intensity="planned", channel_normalization=PLANNED_CT, orientation="LPS"),
        Preprocessing(intensity="mri"),
        Preprocessing(intensity="none", crop_foreground=False),
    ],
    ids=["ct", "planned", "mri", "none"],
)
def test_the_config_preprocessing_is_seg_predicts(pre, tmp_path):
    rng = np.random.default_rng(0)
    volume = np.zeros((20, 18, 12), np.float32)
    volume[3:17, 2:15, 2:10] = rng.normal(50, 80, (14, 13, 8))
    path = tmp_path / "case_0000.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.diag([1.2, 0.9, 2.0, 1.0])), path)
    config = json.loads(json.dumps({"preprocessing": preprocessing_config(pre)}))  # as on disk
    from_config = ConfigParser(config).get_parsed_content("preprocessing")
    expected = inference_transforms(pre)({"image": str(path)})["image"]
    got = from_config({"image": str(path)})["image"]
    torch.testing.assert_close(got.as_tensor(), expected.as_tensor())
    np.testing.assert_allclose(np.asarray(got.affine), np.asarray(expected.affine), atol=1e-6)
