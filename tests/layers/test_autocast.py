"""The FFT large-kernel path under autocast: float32 inside, the caller's dtype outside, and a
whole RepUX-Net training step that runs. The CPU runs it with bf16 CPU autocast; the same tests
run with CUDA autocast wherever a GPU exists."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from visprior.layers import fft_conv
from visprior.layers.fft_conv import fft_depthwise_conv
from visprior.nets import RepUXNet

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_fft_conv_computes_in_float32_under_autocast(device, monkeypatch):
    seen = []
    rfft = torch.fft.rfft

    def recording_rfft(x, *args, **kwargs):
        seen.append(x.dtype)
        return rfft(x, *args, **kwargs)

    monkeypatch.setattr(fft_conv.torch.fft, "rfft", recording_rfft)
    x = torch.randn(2, 3, 9, 8, 10, device=device).bfloat16().requires_grad_(True)
    w = torch.randn(3, 1, 7, 7, 7, device=device, requires_grad=True)
    with torch.autocast(device, dtype=torch.bfloat16):
        y = fft_depthwise_conv(x, w)
        (y.float() * torch.linspace(-1, 1, y.numel(), device=device).view_as(y)).sum().backward()
    assert y.dtype == torch.bfloat16  # cast back to the input's type
    assert seen and set(seen) == {torch.float32}  # forward and backward transforms
    assert x.grad.dtype == torch.bfloat16 and w.grad.dtype == torch.float32

    reference = F.conv3d(x.detach().float(), w.detach(), padding=3, groups=3)
    scale = reference.abs().max().item()
    # bf16 output: 8 bits of mantissa, so agreement to about 1% of the largest value.
    torch.testing.assert_close(y.float(), reference, rtol=1e-2, atol=1e-2 * scale)


@pytest.mark.parametrize("device", DEVICES)
def test_repuxnet_training_step_under_bf16_autocast(device):
    torch.manual_seed(0)
    model = RepUXNet(
        in_channels=1, out_channels=2, feature_size=[4, 8, 16, 32], hidden_size=32, block="bfr"
    ).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    image = torch.randn(1, 1, 32, 32, 32, device=device)
    label = (image > 0).long()[:, 0]
    before = [p.detach().clone() for p in model.parameters()]
    with torch.autocast(device, dtype=torch.bfloat16):
        logits = model(image)
        loss = F.cross_entropy(logits.float(), label)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
