"""The model registry, and MONAI-style shape tests over every registered network."""

from __future__ import annotations

import pytest
import torch

import visprior
from visprior.nets.registry import register_model

EXPECTED = {
    "repuxnet",
    "repuxnet_plain",
    "repuxnet_sr",
    "uxnet",
    "swinunetr",
    "unetr",
    "unet",
    "mednext_s",
    "mednext_b",
    "mednext_m",
    "mednext_l",
    "segresnet",
}

# Small, fast configurations per network; every one uses the shared argument names.
SMALL = {
    "repuxnet": {"feature_size": 8, "hidden_size": 32, "kernel_size": 7},
    "repuxnet_plain": {"feature_size": 8, "hidden_size": 32, "kernel_size": 7},
    "repuxnet_sr": {"feature_size": 8, "hidden_size": 32, "kernel_size": 7},
    "uxnet": {"feature_size": 8, "hidden_size": 32},
    "swinunetr": {"feature_size": 12},
    "unet": {"feature_size": 4, "num_res_units": 1},
    "unetr": {"feature_size": 8, "hidden_size": 48, "img_size": 32, "num_heads": 4, "mlp_dim": 96},
    "mednext_s": {"feature_size": 4, "kernel_size": 5},
    "mednext_b": {"feature_size": 4},
    "mednext_m": {"feature_size": 4},
    "mednext_l": {"feature_size": 2},
    "segresnet": {"feature_size": 8},
}


def test_list_models():
    names = visprior.list_models()
    assert set(names) >= EXPECTED
    assert names == sorted(names)
    assert visprior.list_models("repuxnet*") == ["repuxnet", "repuxnet_plain", "repuxnet_sr"]
    assert visprior.list_models("nothing*") == []


# the 2D CXR networks, tested in tests/cxr/
CXR_MODELS = {"ggcam_resnet18", "ggcam_resnet50", "ggcam_efficientnet_v2_s", "mtunet"}


def test_every_registered_model_has_a_test_configuration():
    assert set(visprior.list_models()) == set(SMALL) | CXR_MODELS


def test_get_model_selects_the_variant():
    assert visprior.get_model("repuxnet", **SMALL["repuxnet"]).block == "bfr"
    assert visprior.get_model("repuxnet_plain", **SMALL["repuxnet"]).block == "plain"
    assert visprior.get_model("repuxnet_sr", **SMALL["repuxnet"]).block == "sr"


def test_unknown_name():
    with pytest.raises(
        ValueError,
        match=r"unknown model name 'repuxnet3'; registered models: "
        r"ggcam_efficientnet_v2_s, .*, repuxnet, repuxnet_plain",
    ):
        visprior.get_model("repuxnet3")


def test_unknown_argument_names_the_model():
    with pytest.raises(ValueError, match=r"model 'swinunetr' got a bad argument: .*'kernel_size'"):
        visprior.get_model("swinunetr", kernel_size=7)


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="'uxnet' is already registered"):
        register_model("uxnet")(lambda **kw: torch.nn.Identity())


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_shape(name, spatial_dims):
    model = visprior.get_model(
        name, in_channels=2, out_channels=3, spatial_dims=spatial_dims, **SMALL[name]
    ).eval()
    size = (32,) * spatial_dims if name == "unetr" else (32, 64, 32)[:spatial_dims]
    assert all(s % model.size_divisibility == 0 for s in size)
    with torch.no_grad():
        y = model(torch.randn(2, 2, *size))
    assert y.shape == (2, 3, *size)


def test_unet_widths_follow_feature_size():
    model = visprior.get_model("unet", in_channels=1, out_channels=10, feature_size=8)
    assert sum(p.numel() for p in model.parameters()) == 1_208_857  # MONAI UNet, 2 res units
