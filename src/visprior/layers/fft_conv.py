"""Depth-wise 'same' convolution through real FFTs, with a backward that reuses the forward's
spectra. Written by hand because neither PyTorch nor MONAI offers one.

What makes it faster than zero-padding to ``S + k - 1`` and letting autograd differentiate
``torch.fft``:

* **Short circular size.** With the kernel centred on index 0 (wrapping around), a 'same'
  conv needs a circular length of only ``L >= S + k // 2`` per axis, rounded up to a size
  whose prime factors are 2, 3, 5 and 7 (48^3 with a 21^3 kernel: 60^3 instead of 68^3).
  The outputs, and the input gradient, are then the window ``[0, S)``: no shifts.
* **Kernel transforms as small matrix products.** A 21^3 kernel fills a tiny corner of the
  ``L^3`` grid, so its spectrum (forward) and its gradient (backward, only ``k^3`` outputs
  wanted) are computed one axis at a time as products with DFT matrices restricted to the
  ``k`` kernel positions, instead of full-size FFTs.
* **Shared spectra.** The forward keeps the input and kernel spectra; the backward transforms
  the output gradient once and gets both gradients from it. The kernel gradient is summed
  over the batch in the frequency domain, so only one (small) inverse per channel is needed.
* **Pruned inverse.** The inverse runs one axis at a time and drops the cropped rows before
  the next axis.
* **Channel chunks.** Channels are independent in a depth-wise conv, so the work runs over
  chunks of channels small enough for the temporary spectra to stay in cache.

Notation: ``h[j] = w[p - j]`` for ``j`` in ``[-p, p]`` (``p = k // 2``) is the kernel centred
on index 0; ``y = x (*) h`` circularly, ``dL/dx = g (*) reverse(h)`` = ``IFFT(G conj(H))`` and
``dL/dh[j] = IFFT(G conj(X))[j]``, all read where they are needed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

__all__ = ["PROFILER_LABELS", "fft_depthwise_conv", "fft_size"]

# torch.profiler ranges around the forward and the backward, so that a profile can tell this
# path's FFTs and products from the rest of a network (benchmarks/speed's step split)
PROFILER_LABELS = ("visprior::fft_depthwise_conv", "visprior::fft_depthwise_conv_backward")

# Grid points (N * C * L^d) per channel chunk. On a CPU, chunks whose spectra stay within
# a few MiB run about twice as fast as one large chunk (cache-resident temporaries, and
# no fresh pages from the allocator on every call); measured at 48 ch @ 48^3 with a 21^3
# kernel, forward + backward: 0.21 s as one chunk, 0.08 s in chunks of 2**19 points. A GPU
# prefers few large launches.
_CHUNK_ELEMENTS = {"cpu": 2**19}
_CHUNK_ELEMENTS_OTHER = 2**25


@functools.cache
def fft_size(minimum: int, even: bool = False) -> int:
    """Smallest integer >= ``minimum`` with no prime factor above 7 (even if ``even``)."""
    n = max(int(minimum), 1)
    while True:
        m = n
        for prime in (2, 3, 5, 7):
            while m % prime == 0:
                m //= prime
        if m == 1 and (not even or n % 2 == 0):
            return n
        n += 1


def circular_sizes(spatial: Sequence[int], kernel_size: int) -> tuple[int, ...]:
    """Circular FFT lengths for a 'same' conv of ``spatial`` with an odd ``kernel_size``."""
    last = len(spatial) - 1
    return tuple(
        fft_size(s + kernel_size // 2, even=(axis == last)) for axis, s in enumerate(spatial)
    )


@functools.lru_cache(maxsize=64)
def _dft_matrices(
    size: int, kernel_size: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, ...]:
    """DFT matrices between the ``k`` kernel positions ``p - t`` and the ``size`` frequencies.

    Returns ``(forward, inverse, half_cos, half_sin, inverse_half_cos, inverse_half_sin)``:
    complex ``(size, k)`` and ``(k, size)`` for full axes, and real matrices for the last
    (half-spectrum) axis.
    """
    p = kernel_size // 2
    positions = p - torch.arange(kernel_size, dtype=torch.float64)
    freqs = torch.arange(size, dtype=torch.float64)
    angle = 2 * math.pi * torch.outer(freqs, positions) / size  # (size, k)
    complex_dtype = torch.complex64 if dtype == torch.float32 else torch.complex128
    forward = torch.polar(torch.ones_like(angle), -angle).to(complex_dtype)
    inverse = (torch.polar(torch.ones_like(angle), angle) / size).T.to(complex_dtype)
    half = angle[: size // 2 + 1]
    # irfft weights: the bins other than 0 and size/2 stand for two conjugate bins.
    weights = torch.full((half.shape[0], 1), 2.0, dtype=torch.float64)
    weights[0] = 1.0
    if size % 2 == 0:
        weights[-1] = 1.0
    matrices = (
        forward,
        inverse,
        torch.cos(half).T,  # (k, F): real kernel @ this -> real part of the spectrum
        -torch.sin(half).T,
        (weights * torch.cos(half) / size),  # (F, k): Re(Z) @ this
        (-weights * torch.sin(half) / size),
    )
    return tuple(
        m.to(device=device, dtype=m.dtype if m.is_complex() else dtype).contiguous()
        for m in matrices
    )


def _contract_axis(z: torch.Tensor, dim: int, matrix: torch.Tensor) -> torch.Tensor:
    """Apply ``matrix`` (out, in) along axis ``dim`` of ``z`` without moving axes."""
    shape = z.shape
    if dim == z.ndim - 1:  # one large GEMM rather than many matrix-vector products
        return (z.reshape(-1, shape[-1]) @ matrix.T).reshape(*shape[:-1], matrix.shape[0])
    z = z.reshape(math.prod(shape[:dim]), shape[dim], math.prod(shape[dim + 1 :]))
    out = torch.matmul(matrix, z)
    return out.reshape(*shape[:dim], matrix.shape[0], *shape[dim + 1 :])


# Spectra are kept as (N, C, F, L1, ..., L_{d-1}): the half-spectrum axis first, so that the
# full complex axes are the contiguous trailing ones, where multi-dimensional c2c transforms
# run several times faster than a c2r transform over the usual layout.


def _rfftn(x: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """rfftn of ``x`` zero-padded to ``sizes``, in the (N, C, F, L1, ...) layout."""
    dims = len(sizes)
    z = torch.fft.rfft(x, n=sizes[-1], dim=-1).movedim(-1, 2).contiguous()
    return torch.fft.fftn(z, s=sizes[:-1], dim=tuple(range(3, 2 + dims)))


def _cropped_irfftn(z: torch.Tensor, sizes: Sequence[int], lengths: Sequence[int]) -> torch.Tensor:
    """``irfftn`` of a (N, C, F, L1, ...) spectrum, cropped to ``[0, length)`` per axis."""
    dims = len(sizes)
    z = torch.fft.ifftn(z, dim=tuple(range(3, 2 + dims)))
    for axis in range(dims - 1):
        z = z.narrow(3 + axis, 0, lengths[axis])
    z = torch.fft.irfft(z.movedim(2, -1), n=sizes[-1], dim=-1)
    return z[..., : lengths[-1]]


def _kernel_spectrum(weight: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Spectrum of the centred kernel ``h`` on the ``sizes`` grid: ``(C, F, L1, ...)``."""
    k = weight.shape[-1]
    kernel = weight[:, 0]
    mats = _dft_matrices(sizes[-1], k, kernel.dtype, kernel.device)
    z = torch.complex(kernel @ mats[2], kernel @ mats[3]).movedim(-1, 1)
    # Last axis first: the one contraction that is a single GEMM on the small kernel.
    for axis in reversed(range(len(sizes) - 1)):
        forward = _dft_matrices(sizes[axis], k, kernel.dtype, kernel.device)[0]
        z = _contract_axis(z, 2 + axis, forward)
    return z


def _kernel_gradient(cross: torch.Tensor, sizes: Sequence[int], k: int) -> torch.Tensor:
    """``w``-shaped gradient from the cross spectrum ``sum_N G conj(X)``: ``(C, 1, k, ...)``."""
    real_dtype = cross.real.dtype
    z = cross
    for axis in range(len(sizes) - 1):
        inverse = _dft_matrices(sizes[axis], k, real_dtype, cross.device)[1]
        z = _contract_axis(z, 2 + axis, inverse)
    z = z.movedim(1, -1)
    mats = _dft_matrices(sizes[-1], k, real_dtype, cross.device)
    return (z.real @ mats[4] + z.imag @ mats[5]).unsqueeze(1)


def _channel_chunks(channels: int, elements_per_channel: int, device: torch.device) -> list[slice]:
    budget = _CHUNK_ELEMENTS.get(device.type, _CHUNK_ELEMENTS_OTHER)
    step = max(1, budget // max(elements_per_channel, 1))
    return [slice(c, min(c + step, channels)) for c in range(0, channels, step)]


def _no_autocast(device: torch.device) -> torch.autocast:
    """Autocast switched off: under it the DFT-matrix products would run in bf16/fp16, which
    ``torch.fft`` refuses on the CPU, and cuFFT takes in half precision only for power-of-two
    sizes; the FFT path therefore always computes in float32 (or float64)."""
    return torch.autocast(device_type=device.type, enabled=False)


class _FFTDepthwiseConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        with _no_autocast(x.device), torch.profiler.record_function(PROFILER_LABELS[0]):
            return _FFTDepthwiseConv._forward(ctx, x, weight)

    @staticmethod
    def _forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        spatial = tuple(x.shape[2:])
        k = weight.shape[-1]
        sizes = circular_sizes(spatial, k)
        chunks = _channel_chunks(x.shape[1], x.shape[0] * math.prod(sizes), x.device)
        keep_x_spectrum = ctx.needs_input_grad[1]
        x_spectra, w_spectra, outputs = [], [], []
        for chunk in chunks:
            x_hat = _rfftn(x[:, chunk], sizes)
            w_hat = _kernel_spectrum(weight[chunk], sizes)
            outputs.append(_cropped_irfftn(x_hat * w_hat, sizes, spatial))
            x_spectra.append(x_hat if keep_x_spectrum else None)
            w_spectra.append(w_hat)
        ctx.chunks, ctx.sizes, ctx.spatial, ctx.k = chunks, sizes, spatial, k
        ctx.x_spectra, ctx.w_spectra = x_spectra, w_spectra
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        with _no_autocast(grad_out.device), torch.profiler.record_function(PROFILER_LABELS[1]):
            return _FFTDepthwiseConv._backward(ctx, grad_out.to(ctx.w_spectra[0].real.dtype))

    @staticmethod
    def _backward(ctx, grad_out: torch.Tensor):
        need_x, need_w = ctx.needs_input_grad[:2]
        grad_x, grad_w = [], []
        for chunk, x_hat, w_hat in zip(ctx.chunks, ctx.x_spectra, ctx.w_spectra, strict=True):
            g_hat = _rfftn(grad_out[:, chunk], ctx.sizes)
            if need_x:
                grad_x.append(_cropped_irfftn(g_hat * w_hat.conj(), ctx.sizes, ctx.spatial))
            if need_w:
                if g_hat.shape[0] == 1:
                    cross = g_hat[0] * x_hat[0].conj()
                else:
                    cross = (g_hat * x_hat.conj()).sum(dim=0)
                grad_w.append(_kernel_gradient(cross, ctx.sizes, ctx.k))
        return (
            torch.cat(grad_x, dim=1) if need_x else None,
            torch.cat(grad_w, dim=0) if need_w else None,
        )


def fft_depthwise_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Depth-wise 'same' convolution (cross-correlation, as ``F.conv3d``) through FFTs.

    Args:
        x: ``(N, C, *spatial)``, float32 or float64; other dtypes, and any input under
            ``torch.autocast``, compute in float32 and the output is cast back to ``x``'s dtype.
        weight: ``(C, 1, k, ..., k)`` with odd ``k``.
        bias: ``(C,)`` or ``None``.

    Returns:
        ``(N, C, *spatial)``, equal to ``F.conv3d(x, weight, bias, padding=k // 2, groups=C)``
        up to floating-point rounding.
    """
    compute_dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    y = _FFTDepthwiseConv.apply(x.to(compute_dtype), weight.to(compute_dtype))
    if bias is not None:
        y = y + bias.to(compute_dtype).reshape(1, -1, *([1] * (x.ndim - 2)))
    return y.to(x.dtype)
