"""What this CPU is, and whether it runs bfloat16 natively.

``torch.backends.cpu.get_cpu_capability()`` names the widest vector ISA PyTorch dispatches to
("AVX512" on an AMX Xeon as on an AVX-512 EPYC), not whether the CPU has bf16 instructions.
Those decide how much bf16 autocast gains: with ``amx_bf16`` or ``avx512_bf16`` oneDNN runs bf16
matmuls and convs in hardware; without them it converts to float32 around each op. Linux
lists the instructions in ``/proc/cpuinfo``; elsewhere the answers are "unknown".
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

__all__ = ["CPU_FLAGS", "cpu_bf16_support", "cpu_flags", "cpu_model_name"]

# the /proc/cpuinfo flags that decide how fast float32 and bf16 run on a CPU
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
# native bf16, the faster first
_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
_CPUINFO = Path("/proc/cpuinfo")


@functools.cache
def _read_cpuinfo() -> tuple[str | None, frozenset[str] | None]:
    """The first processor's model name and flags; ``None`` for what the file does not say."""
    name, flags = None, None
    try:
        lines = _CPUINFO.read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        field, _, value = line.partition(":")
        field = field.strip()
        if field == "model name" and name is None:
            name = value.strip()
        elif field == "flags" and flags is None:
            flags = frozenset(value.split())
        if name is not None and flags is not None:
            break
    return name, flags


def cpu_model_name() -> str:
    """``/proc/cpuinfo``'s model name, else the platform's processor name, else ``"cpu"``."""
    name, _ = _read_cpuinfo()
    return name or platform.processor() or platform.machine() or "cpu"


def cpu_flags() -> dict[str, bool | None]:
    """Each of :data:`CPU_FLAGS`: whether the CPU has it (``None``: not known here)."""
    _, flags = _read_cpuinfo()
    return {flag: None if flags is None else flag in flags for flag in CPU_FLAGS}


def cpu_bf16_support() -> str:
    """``"amx_bf16"`` or ``"avx512_bf16"`` (the fastest native bf16 the CPU has), ``"none"``
    (bf16 is emulated in float32), or ``"unknown"`` (no ``/proc/cpuinfo`` flags)."""
    _, flags = _read_cpuinfo()
    if flags is None:
        return "unknown"
    return next((flag for flag in _BF16_FLAGS if flag in flags), "none")
