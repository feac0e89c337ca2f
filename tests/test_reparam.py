"""Deploy: fusing a whole network is exact, idempotent, and exports to TorchScript and ONNX."""

from __future__ import annotations

import onnxruntime
import pytest
import torch

from tests.conftest import randomize_batchnorm
from tests.tolerances import assert_close_to_scale
from visprior import export_onnx, export_torchscript, get_model, reparameterize_model
from visprior.layers import BFRDepthwiseConv, DepthwiseConv, StructuralReparamConv
from visprior.nets import RepUXNet

KINDS = {
    "repuxnet": BFRDepthwiseConv,
    "repuxnet_sr": StructuralReparamConv,
    "repuxnet_plain": DepthwiseConv,
}
CONFIG = {"in_channels": 1, "out_channels": 3, "feature_size": 8, "hidden_size": 32}
# fp32 sums over 21^3 taps; the fused kernel is rounded once, the training forward twice.
# Relative to each value and to the largest one (ONNX Runtime sums in its own order too).
TOLERANCE = 1e-4


def _trained_like(name: str, kernel_size: int = 21) -> torch.nn.Module:
    model = get_model(name, kernel_size=kernel_size, **CONFIG)
    return randomize_batchnorm(model).eval()


@pytest.mark.parametrize("name", ["repuxnet", "repuxnet_sr", "repuxnet_plain"])
def test_fused_model_equals_training_model(name):
    model = _trained_like(name)
    fused = reparameterize_model(model)
    assert fused is not model
    assert not any(
        isinstance(m, (BFRDepthwiseConv, StructuralReparamConv)) for m in fused.modules()
    )
    assert sum(isinstance(m, DepthwiseConv) for m in fused.modules()) == 8
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert_close_to_scale(fused(x), model(x), TOLERANCE)

    # The original is untouched; fusing again changes nothing.
    assert type(model.backbone.stages[0][0].dwconv) is KINDS[name]
    again = reparameterize_model(fused)
    for (k1, v1), (k2, v2) in zip(
        fused.state_dict().items(), again.state_dict().items(), strict=True
    ):
        assert k1 == k2 and torch.equal(v1, v2)

    # The fused state dict loads into a model built in inference mode.
    deployed = RepUXNet(**CONFIG, kernel_size=21, inference_mode=True).eval()
    deployed.load_state_dict(fused.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(deployed(x), fused(x), rtol=0, atol=0)


def test_inplace_fuses_the_given_model():
    model = _trained_like("repuxnet", kernel_size=5)
    assert reparameterize_model(model, inplace=True) is model
    assert not any(isinstance(m, BFRDepthwiseConv) for m in model.modules())


def test_fusing_a_single_layer():
    layer = BFRDepthwiseConv(2, 5, spatial_dims=2)
    assert type(reparameterize_model(layer)) is DepthwiseConv


def test_training_checkpoint_does_not_load_into_a_deployed_model():
    trained = get_model("repuxnet", kernel_size=5, **CONFIG)
    deployed = RepUXNet(**CONFIG, kernel_size=5, inference_mode=True)
    with pytest.raises(RuntimeError, match="frequency_map"):
        deployed.load_state_dict(trained.state_dict())


@pytest.mark.parametrize("name", ["repuxnet", "repuxnet_sr"])
def test_export_torchscript_and_onnx(tmp_path, name):
    model = _trained_like(name, kernel_size=9)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        expected = model(x)

    export_torchscript(model, x, tmp_path / "model.ts")
    loaded = torch.jit.load(str(tmp_path / "model.ts"))
    with torch.no_grad():
        assert_close_to_scale(loaded(x), expected, TOLERANCE)

    export_onnx(model, x, tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    (logits,) = session.run(None, {"image": x.numpy()})
    assert_close_to_scale(torch.from_numpy(logits), expected, TOLERANCE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.ts"]
