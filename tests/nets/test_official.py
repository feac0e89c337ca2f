"""The authors' checkpoints: outputs reproduced, and clear errors for anything else."""

from __future__ import annotations

import pytest
import torch

from tests.tolerances import assert_close_to_scale
from visprior import load_official_checkpoint
from visprior.layers import BFRDepthwiseConv, DepthwiseConv
from visprior.nets import RepUXNet, UXNet
from visprior.nets.official import convert_official_state_dict, infer_official_config

FAMILIES = {"repuxnet": RepUXNet, "uxnet": UXNet}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def reference(request, reference_dir):
    path = reference_dir / f"official_{request.param}_small.pt"
    return request.param, path, torch.load(path, weights_only=True)


def test_config_is_inferred_from_the_state_dict(reference):
    family, _, ref = reference
    config = infer_official_config(ref["state_dict"])
    assert config == {
        "family": family,
        "in_channels": 1,
        "out_channels": 3,
        "feature_size": [8, 16, 32, 64],
        "depths": [2, 2, 2, 2],
        "kernel_size": 21 if family == "repuxnet" else 7,
        "spatial_dims": 3,
        "hidden_size": 128,
        "res_block": True,
    }


def test_outputs_are_reproduced(reference):
    family, path, ref = reference
    model = load_official_checkpoint(path).eval()  # from the file, weights_only=True
    assert type(model) is FAMILIES[family]
    with torch.no_grad():
        # The authors' outputs were summed on another CPU: float32 rounding of the largest value.
        assert_close_to_scale(model(ref["input"]), ref["output"], rtol=1e-4)
        assert_close_to_scale(model(ref["input_64"]), ref["output_64"], rtol=1e-4)
        # In float64 the only difference left is summation order.
        model = model.double()
        torch.testing.assert_close(
            model(ref["input"].double()), ref["output_float64"], rtol=1e-9, atol=1e-9
        )


def test_authors_kernels_load_as_deployed_kernels(reference_dir):
    ref = torch.load(reference_dir / "official_repuxnet_small.pt", weights_only=True)
    model = load_official_checkpoint(ref)
    assert all(type(m.dwconv) is DepthwiseConv for s in model.backbone.stages for m in s)
    torch.testing.assert_close(
        model.backbone.stages[0][0].dwconv.weight,
        ref["state_dict"]["repuxnet_3d.stages.0.0.dwconv.weight"],
        rtol=0,
        atol=0,
    )


def test_bfr_model_continues_from_the_authors_kernels(reference_dir):
    ref = torch.load(reference_dir / "official_repuxnet_small.pt", weights_only=True)
    config = infer_official_config(ref["state_dict"])
    del config["family"]
    model = load_official_checkpoint(ref, model=RepUXNet(block="bfr", **config)).eval()
    x = ref["input"]
    with torch.no_grad():
        assert_close_to_scale(model(x), ref["output"], rtol=1e-4)
        # The authors' deploy=False forward multiplies the stored kernel by M once more.
        # Setting W to the stored kernel reproduces that first forward.
        for layer in model.modules():
            if isinstance(layer, BFRDepthwiseConv):
                layer.weight.mul_(layer.frequency_map)
        assert_close_to_scale(model(x), ref["output_deploy_false_first_forward"], rtol=1e-4)


def test_wrapped_and_ddp_prefixed_checkpoints(reference_dir):
    ref = torch.load(reference_dir / "official_uxnet_small.pt", weights_only=True)
    prefixed = {f"module.{k}": v for k, v in ref["state_dict"].items()}
    for checkpoint in (ref["state_dict"], prefixed, {"model": prefixed}):
        model = load_official_checkpoint(checkpoint).eval()
        with torch.no_grad():
            assert_close_to_scale(model(ref["input"]), ref["output"], rtol=1e-4)


def test_not_an_authors_checkpoint():
    visprior_state = UXNet(feature_size=8, hidden_size=16).state_dict()
    with pytest.raises(
        ValueError,
        match=r"not an authors' RepUX-Net or 3D UX-Net checkpoint.*"
        r"got keys backbone\.",
    ):
        load_official_checkpoint(visprior_state)
    with pytest.raises(ValueError, match="not a state dict, these entries are not tensors: epoch"):
        load_official_checkpoint({"epoch": 3, "out.conv.conv.weight": torch.zeros(1)})


def test_missing_and_unexpected_keys_are_listed(reference_dir):
    ref = torch.load(reference_dir / "official_repuxnet_small.pt", weights_only=True)
    state = dict(ref["state_dict"])
    del state["decoder1.layer.conv2.conv.weight"]
    state["decoder9.weight"] = torch.zeros(1)
    with pytest.raises(
        ValueError,
        match=r"Missing keys \(1\): decoder1\.layer\.conv2\.conv\.weight"
        r"\. Unexpected keys \(1\): decoder9\.weight",
    ):
        load_official_checkpoint(state)


def test_wrong_family_or_shape(reference_dir):
    ref = torch.load(reference_dir / "official_uxnet_small.pt", weights_only=True)
    config = infer_official_config(ref["state_dict"])
    del config["family"]
    with pytest.raises(ValueError, match=r"does not fit RepUXNet.*Unexpected keys.*pwconv1"):
        load_official_checkpoint(ref, model=RepUXNet(**config, inference_mode=True))
    with pytest.raises(
        ValueError,
        match=r"shape mismatch: out\.conv\.conv\.weight: checkpoint "
        r"\(3, 8, 1, 1, 1\) vs model \(5, 8, 1, 1, 1\)",
    ):
        load_official_checkpoint(ref, model=UXNet(**{**config, "out_channels": 5}))


def test_structural_reparam_target_gets_a_hint(reference_dir):
    ref = torch.load(reference_dir / "official_repuxnet_small.pt", weights_only=True)
    config = infer_official_config(ref["state_dict"])
    del config["family"]
    with pytest.raises(ValueError, match="build the model with inference_mode=True"):
        convert_official_state_dict(ref["state_dict"], RepUXNet(block="sr", **config))


def test_files_are_loaded_without_running_code(tmp_path, capsys):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pth"
    torch.save({"repuxnet_3d.x": Payload()}, path)
    with pytest.raises(ValueError, match=r"evil\.pth: refused to load"):
        load_official_checkpoint(path)
    assert "must never run" not in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="checkpoint file not found"):
        load_official_checkpoint(tmp_path / "absent.pth")


def _state_dict_from_listing(path):
    """A state dict of the shapes and dtypes in an authors' key listing, filled with zeros."""
    state = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, dtype, _ = line.split("\t")
        dims = [int(d) for d in shape.strip("()").split(",") if d.strip()]
        state[key] = torch.zeros(dims, dtype=getattr(torch, dtype))
    return state


@pytest.mark.slow
@pytest.mark.parametrize("family, parameters", [("repuxnet", 65_827_829), ("uxnet", 53_006_069)])
def test_paper_size_checkpoint_layout_loads(reference_dir, family, parameters):
    state = _state_dict_from_listing(reference_dir / f"official_{family}_default_out5.keys.txt")
    assert infer_official_config(state)["feature_size"] == [48, 96, 192, 384]
    model = load_official_checkpoint(state)
    assert sum(p.numel() for p in model.parameters()) == parameters
