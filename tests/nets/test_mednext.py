"""MedNeXt and SegResNet under visprior's argument names."""

from __future__ import annotations

import onnxruntime
import pytest
import torch
from monai.networks.nets import MedNeXt, MedNeXtB, SegResNet

from tests.tolerances import assert_close_to_scale
from visprior import export_onnx, export_torchscript, get_model, reparameterize_model
from visprior.layers.conv_algorithm import conv_algorithm
from visprior.layers.depthwise import DepthwiseConv


def test_feature_size_and_kernel_size_map_to_monai():
    model = get_model("mednext_b", in_channels=2, out_channels=4, feature_size=8, kernel_size=5)
    assert model.stem.out_channels == 8
    assert model.enc_stages[0][0].conv1.kernel_size == 5
    assert model.down_blocks[0].conv1.kernel_size == (5, 5, 5)
    # the variant's settings, with the paper's residual blocks
    assert model.enc_stages[2][0].conv2.out_channels == 4 * 32  # expansion 4 at stage 2
    assert model.enc_stages[0][0].do_res and model.down_blocks[0].resample_do_res


def test_mednext_at_32_filters_has_monai_helpers_parameters():
    ours = get_model("mednext_b", in_channels=1, out_channels=3, kernel_size=3)
    theirs = MedNeXtB(in_channels=1, out_channels=3, kernel_size=3)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())


@pytest.mark.parametrize("algorithm", ["direct", "fft"])
def test_routed_depthwise_convs_match_monai(algorithm):
    torch.manual_seed(0)
    ours = get_model("mednext_s", in_channels=1, out_channels=3, feature_size=4, kernel_size=5)
    stage_convs = [m for m in ours.modules() if isinstance(m, DepthwiseConv)]
    assert len(stage_convs) == 18  # 2 per encoder, bottleneck and decoder stage
    settings = {"encoder_expansion_ratio": 2, "decoder_expansion_ratio": 2}
    theirs = MedNeXt(
        init_filters=4, out_channels=3, kernel_size=5, use_residual_connection=True, **settings
    )
    theirs.load_state_dict(ours.state_dict())  # same names and shapes
    x = torch.randn(1, 1, 32, 32, 16)
    with torch.no_grad(), conv_algorithm(algorithm):
        expected, got = theirs(x), ours(x)
    assert_close_to_scale(got, expected, rtol=1e-4)


@pytest.mark.parametrize(
    "name, kwargs", [("mednext_s", {"feature_size": 4, "kernel_size": 7}), ("segresnet", {})]
)
def test_export_torchscript_and_onnx(tmp_path, name, kwargs):
    torch.manual_seed(0)
    model = get_model(name, in_channels=1, out_channels=3, **kwargs).eval()
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        expected = model(x)
    deployed = reparameterize_model(model)  # nothing to fuse: the same network
    export_torchscript(deployed, x, tmp_path / "model.ts")
    with torch.no_grad():
        assert_close_to_scale(torch.jit.load(str(tmp_path / "model.ts"))(x), expected, 1e-4)
    export_onnx(deployed, x, tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    (logits,) = session.run(None, {"image": x.numpy()})
    assert_close_to_scale(torch.from_numpy(logits), expected, 1e-4)


def test_mednext_refusals():
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        get_model("mednext_s", kernel_size=4)
    with pytest.raises(ValueError, match="deep_supervision=True is not supported"):
        get_model("mednext_s", deep_supervision=True)
    with pytest.raises(ValueError, match="feature_size must be a positive int, got 0"):
        get_model("mednext_m", feature_size=0)


def test_segresnet_maps_feature_size_and_refuses_kernel_size():
    model = get_model("segresnet", in_channels=2, out_channels=3, feature_size=16)
    assert isinstance(model, SegResNet) and model.init_filters == 16
    assert model.size_divisibility == 8
    with pytest.raises(ValueError, match=r"'segresnet' takes no kernel_size: .*kernel_size=5"):
        get_model("segresnet", kernel_size=5)
    with pytest.raises(ValueError, match=r"feature_size \(12\) must be a multiple of num_groups"):
        get_model("segresnet", feature_size=12)
