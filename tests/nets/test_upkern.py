"""UpKern: depth-wise kernels resampled to a larger size, across plain and BFR layers."""

from __future__ import annotations

import pytest
import torch

from visprior import get_model
from visprior.nets.upkern import is_depthwise_kernel_pair, resample_kernel, upkern_state_dict
from visprior.seg.train import initialize_from

SMALL = {"in_channels": 1, "out_channels": 3, "feature_size": 8, "hidden_size": 32}


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_constant_kernel_stays_constant(spatial_dims):
    kernel = torch.full((4, 1, *(3,) * spatial_dims), 0.25)
    kernel[1] = -2.0
    resampled = resample_kernel(kernel, 7)
    assert resampled.shape == (4, 1, *(7,) * spatial_dims)
    torch.testing.assert_close(resampled[0], torch.full_like(resampled[0], 0.25))
    torch.testing.assert_close(resampled[1], torch.full_like(resampled[1], -2.0))


def test_same_size_is_the_identity():
    kernel = torch.randn(5, 1, 7, 7, 7)
    assert torch.equal(resample_kernel(kernel, 7), kernel)


def test_resampling_keeps_the_values_unscaled():
    # Half-pixel centres: output tap i samples the source at (i + 0.5) * 3 / 5 - 0.5, clamped
    # at the edges; the values keep their range (not divided by (5/3)^3).
    ramp = torch.tensor([-1.0, 0.0, 1.0]).reshape(1, 1, 3, 1, 1).expand(1, 1, 3, 3, 3)
    out = resample_kernel(ramp.contiguous(), 5)[0, 0, :, 2, 2]
    torch.testing.assert_close(out, torch.tensor([-1.0, -0.6, 0.0, 0.6, 1.0]))


def test_a_non_depthwise_tensor_is_refused():
    with pytest.raises(
        ValueError, match=r"depth-wise kernel of shape \(C, 1, k, ..., k\), got \(4, 2, 3, 3, 3\)"
    ):
        resample_kernel(torch.zeros(4, 2, 3, 3, 3), 5)


def test_depthwise_pairs():
    assert is_depthwise_kernel_pair(torch.zeros(8, 1, 3, 3, 3), torch.zeros(8, 1, 5, 5, 5))
    assert not is_depthwise_kernel_pair(torch.zeros(8, 1, 3, 3, 3), torch.zeros(8, 1, 3, 3, 3))
    assert not is_depthwise_kernel_pair(torch.zeros(8, 1, 3, 3, 3), torch.zeros(16, 1, 5, 5, 5))
    assert not is_depthwise_kernel_pair(torch.zeros(8, 2, 3, 3, 3), torch.zeros(8, 2, 5, 5, 5))
    assert not is_depthwise_kernel_pair(torch.zeros(8, 1, 2, 2, 2), torch.zeros(8, 1, 4, 4, 4))


def test_bfr_7_to_21_carries_the_convolved_kernel(tmp_path):
    torch.manual_seed(0)
    small = get_model("repuxnet", kernel_size=7, **SMALL)
    large = get_model("repuxnet", kernel_size=21, **SMALL)
    loaded, resampled = upkern_state_dict(small.state_dict(), large.state_dict())
    large.load_state_dict(loaded, strict=False)
    # every stage block's kernel, and nothing else
    assert len(resampled) == 8 and all(k.endswith("dwconv.weight") for k in resampled)
    source, target = small.backbone.stages[2][1].dwconv, large.backbone.stages[2][1].dwconv
    expected = resample_kernel(source.weight * source.frequency_map, 21)
    torch.testing.assert_close(target.weight * target.frequency_map, expected)
    # the frequency map is the 21^3 network's own
    assert target.frequency_map.shape == (21, 21, 21)
    # the decoder is copied as it is
    for key in ("decoder5.conv_block.conv1.conv.weight", "out.conv.conv.weight"):
        assert torch.equal(large.state_dict()[key], small.state_dict()[key])


def test_bfr_to_bfr_at_the_same_size_is_the_identity():
    torch.manual_seed(1)
    a = get_model("repuxnet", kernel_size=7, **SMALL)
    b = get_model("repuxnet", kernel_size=7, **SMALL)
    loaded, resampled = upkern_state_dict(a.state_dict(), b.state_dict())
    b.load_state_dict(loaded, strict=False)
    assert resampled == []
    for key, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[key], value, rtol=1e-6, atol=0, msg=key)


def test_plain_to_bfr_sets_w_to_kernel_over_m():
    torch.manual_seed(2)
    plain = get_model("repuxnet_plain", kernel_size=5, **SMALL)
    bfr = get_model("repuxnet", kernel_size=9, **SMALL)
    loaded, _ = upkern_state_dict(plain.state_dict(), bfr.state_dict())
    bfr.load_state_dict(loaded, strict=False)
    source, target = plain.backbone.stages[0][0].dwconv, bfr.backbone.stages[0][0].dwconv
    torch.testing.assert_close(
        target.weight * target.frequency_map, resample_kernel(source.weight, 9)
    )


def test_mednext_k3_to_k5_resamples_every_depthwise_kernel(tmp_path):
    torch.manual_seed(3)
    kwargs = {"in_channels": 1, "out_channels": 3, "feature_size": 4}
    k3 = get_model("mednext_s", kernel_size=3, **kwargs)
    k5 = get_model("mednext_s", kernel_size=5, **kwargs)
    loaded, resampled = upkern_state_dict(k3.state_dict(), k5.state_dict())
    # 18 stage blocks and 8 down/up blocks, each with one depth-wise conv
    assert len(resampled) == 26
    assert set(loaded) == set(k5.state_dict())  # every other weight is copied
    k5.load_state_dict(loaded)
    torch.testing.assert_close(
        k5.enc_stages[1][0].conv1.weight, resample_kernel(k3.enc_stages[1][0].conv1.weight, 5)
    )


def test_initialize_from_a_run_checkpoint(tmp_path):
    from visprior.checkpoint_io import CHECKPOINT_FORMAT

    small = get_model("repuxnet", kernel_size=7, **SMALL)
    path = tmp_path / "best.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "state_dict": small.state_dict()}, path)
    spec = {"name": "repuxnet", "kwargs": {**SMALL, "kernel_size": 21}}

    plain_start = initialize_from(
        get_model("repuxnet", kernel_size=21, **SMALL), path, "repuxnet", spec
    )
    assert len(plain_start.other_kernel_size) == 8 and plain_start.resampled == []
    assert "--upkern resamples them" in plain_start.describe(path)

    large = get_model("repuxnet", kernel_size=21, **SMALL)
    start = initialize_from(large, path, "repuxnet", spec, upkern=True)
    assert start.fresh == [] and len(start.resampled) == 8
    assert "UpKern: 8 depth-wise kernels resampled" in start.describe(path)
