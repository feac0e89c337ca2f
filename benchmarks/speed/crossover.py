"""Direct vs FFT depth-wise conv across kernel sizes: the data behind the 'auto' rule."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from visprior.layers.conv_algorithm import choose_algorithm
from visprior.layers.fft_conv import fft_depthwise_conv

CASES_FULL = [
    (k, c, s) for k in (3, 7, 13, 21) for c, s in ((48, 48), (96, 24), (192, 12), (384, 6))
]
CASES_QUICK = [(7, 8, 16), (21, 8, 16)]


def build_case(method: str, training: bool, k: int, channels: int, size: int):
    x = torch.randn(1, channels, size, size, size, requires_grad=training)
    w = torch.randn(channels, 1, k, k, k, requires_grad=training)

    def conv():
        if method == "fft":
            return fft_depthwise_conv(x, w)
        return F.conv3d(x, w, padding=k // 2, groups=channels)

    def step():
        if training:
            x.grad = w.grad = None
            conv().square().mean().backward()
        else:
            with torch.no_grad():
                conv()

    return step, None


def auto_choice(k: int, size: int, training: bool) -> str:
    return choose_algorithm((size,) * 3, k, needs_grad=training)
