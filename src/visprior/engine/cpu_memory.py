"""Keep freed tensor memory in the process on glibc, instead of handing it back to the kernel.

glibc serves an allocation above its mmap threshold (128 KiB, rising with use to at most
32 MiB) with a fresh ``mmap`` and returns it with ``munmap`` when freed. A training step on the
CPU allocates and frees activations of tens of MiB each time, so every step page-faults them
all in again: on the demo's step (RepUX-Net 16/128, two 48^3 crops, 2 threads) 40,000 to
70,000 page faults a step, about 8% of its CPU time spent in the kernel. Raising the mmap
threshold and the trim threshold lets the heap reuse those pages: the faults fell about
fifty-fold, the peak memory stayed the same, and in a first check of 8 alternated process
pairs on a noisy shared machine the step's median time fell by about 8%. Study (b)'s part
``python -m benchmarks --only malloc`` is the measurement to trust.

Allocations above :data:`MMAP_THRESHOLD_BYTES` (a whole volume's prediction) still get their
own mapping and return to the system when freed. ``VISPRIOR_MALLOC_TUNING=0`` leaves glibc
as it is, and so does any ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` the user set.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["MMAP_THRESHOLD_BYTES", "TRIM_THRESHOLD_BYTES", "keep_freed_memory"]

MMAP_THRESHOLD_BYTES = 256 * 2**20
TRIM_THRESHOLD_BYTES = 1024 * 2**20
# mallopt parameters, from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")

_applied = False


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for this process (once); whether they are set.

    False where the C library is not glibc, where ``VISPRIOR_MALLOC_TUNING=0``, or where the
    user chose glibc's thresholds through its own environment variables.
    """
    global _applied
    if _applied:
        return True
    if os.environ.get("VISPRIOR_MALLOC_TUNING", "1") == "0":
        return False
    if any(name in os.environ for name in _USER_SETTINGS):
        return False
    libc = _glibc()
    if libc is None:
        return False
    _applied = bool(
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
    return _applied


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 -- present in glibc only (not musl)
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    return libc
