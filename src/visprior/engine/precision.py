"""Numeric precision of training and prediction: ``"32"`` (float32), ``"bf16"`` (bfloat16
autocast) and ``"16-mixed"`` (float16 autocast, with a gradient scaler in training), on the
CPU as on CUDA, through ``torch.autocast``. The large-kernel FFT path computes in float32
inside any of them (``visprior.layers.fft_conv``).

``"auto"`` keeps the meaning of the older ``amp`` key: bfloat16 on CUDA when ``amp`` is true,
float32 otherwise.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

__all__ = ["PRECISIONS", "autocast", "grad_scaler", "resolve_precision"]

PRECISIONS = ("32", "bf16", "16-mixed")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "16-mixed": torch.float16}


def resolve_precision(precision: str, device: torch.device, amp: bool = True) -> str:
    """``precision`` itself, or for ``"auto"`` what ``amp`` meant: bf16 on CUDA, else 32.

    Raises:
        ValueError: an unknown precision (the choices named).
    """
    precision = str(precision)
    if precision == "auto":
        return "bf16" if amp and device.type == "cuda" else "32"
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision must be one of auto, {', '.join(PRECISIONS)}; got {precision!r}"
        )
    return precision


def autocast(precision: str, device: torch.device) -> Any:
    """The autocast context for a resolved ``precision`` on ``device`` (none for ``"32"``)."""
    if precision == "32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_AUTOCAST_DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A gradient scaler for float16 training (its small range underflows gradients without
    one); ``None`` for the other precisions, which need none."""
    if precision != "16-mixed":
        return None
    return torch.amp.GradScaler(device.type)
