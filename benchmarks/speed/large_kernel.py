"""(a) One 21^3 depth-wise conv, forward + backward, at each RepUX-Net stage of a 96^3 crop."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from visprior.layers.fft_conv import fft_depthwise_conv

STAGES_FULL = [(48, 48), (96, 24), (192, 12), (384, 6)]
STAGES_QUICK = [(8, 16), (16, 8)]
KERNEL = 21


def direct(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return F.conv3d(x, w, padding=w.shape[-1] // 2, groups=w.shape[0])


def naive_fft(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Linear convolution by zero-padding to S + k - 1, rfftn / irfftn, autograd backward."""
    k = w.shape[-1]
    p = k // 2
    sizes = [s + k - 1 for s in x.shape[2:]]
    x_hat = torch.fft.rfftn(x, s=sizes, dim=(2, 3, 4))
    w_hat = torch.fft.rfftn(w[:, 0].flip((1, 2, 3)), s=sizes, dim=(1, 2, 3))
    y = torch.fft.irfftn(x_hat * w_hat, s=sizes, dim=(2, 3, 4))
    return y[:, :, p : p + x.shape[2], p : p + x.shape[3], p : p + x.shape[4]]


METHODS = {"F.conv3d": direct, "naive FFT": naive_fft, "visprior FFT": fft_depthwise_conv}


def build_case(method: str, channels: int, size: int):
    """Step: forward + backward of one depth-wise conv (gradients for input and kernel)."""
    fn = METHODS[method]
    x = torch.randn(1, channels, size, size, size, requires_grad=True)
    w = (torch.randn(channels, 1, KERNEL, KERNEL, KERNEL) * 0.01).requires_grad_(True)

    def step():
        x.grad = w.grad = None
        fn(x, w).square().mean().backward()

    return step, None
