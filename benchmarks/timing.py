"""Timing and memory measurement shared by the benchmarks.

Each case runs in a fresh subprocess so that its peak resident memory (``ru_maxrss``) is its
own; times are medians of several repeats after a warm-up call. Quick mode measures in the
calling process instead (``isolate(False)``): a smoke test's figures need no isolation, and a
fresh interpreter importing torch and MONAI costs several seconds a case.
"""

from __future__ import annotations

import multiprocessing
import queue as queue_module
import resource
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

_isolated = True


def isolate(enabled: bool) -> None:
    """Whether :func:`measure_in_subprocess` spawns a fresh process per case (the default)."""
    global _isolated
    _isolated = enabled


@dataclass
class Measurement:
    """Median seconds over ``repeats`` timed calls, and the peak memory the calls added (MiB)."""

    seconds: float
    repeats: int
    peak_mib: float
    all_seconds: list[float] = field(default_factory=list)
    error: str | None = None
    parts: dict[str, list[float]] = field(default_factory=dict)


def _rss_mib() -> float:
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def time_call(
    step: Callable[[], object], repeats: int, warmup: Callable[[], object] | None = None
) -> Measurement:
    """Run ``warmup`` (default: ``step``) once, then ``step`` ``repeats`` times.

    Peak memory: the process's peak resident memory minus its resident memory before the
    warm-up (model and inputs already built).
    """
    base = _current_rss_mib()
    (warmup or step)()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return Measurement(statistics.median(seconds), repeats, max(0.0, _rss_mib() - base), seconds)


def _measure(builder: Callable, args: tuple, repeats: int) -> Measurement:
    try:
        import torch

        torch.manual_seed(0)
        step, warmup = builder(*args)
        measurement = time_call(step, repeats, warmup)
        # A step made of parts (e.g. two networks, alternated) reports each part's times.
        parts = getattr(step, "parts", {})
        measurement.parts = {name: times[-repeats:] for name, times in parts.items()}
        return measurement
    except Exception:  # report any failure as a row, not a crash of the whole run
        return Measurement(float("nan"), 0, float("nan"), error=traceback.format_exc(limit=3))


def _child(queue, builder, args, repeats) -> None:
    queue.put(_measure(builder, args, repeats))


def _measure_here(builder: Callable, args: tuple, repeats: int) -> Measurement:
    """In this process; the builders' global settings (the conv algorithm) are restored."""
    from visprior.layers.conv_algorithm import get_conv_algorithm, set_conv_algorithm

    algorithm = get_conv_algorithm()
    try:
        return _measure(builder, args, repeats)
    finally:
        set_conv_algorithm(algorithm)


def measure_in_subprocess(builder: Callable, *args, repeats: int = 3) -> Measurement:
    """``builder(*args)`` returns ``(step, warmup_or_None)``; it runs in a fresh process.

    ``builder`` must be a module-level function (it is pickled for the spawned process).
    """
    if not _isolated:
        return _measure_here(builder, args, repeats)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, builder, args, repeats))
    process.start()
    while True:
        try:
            result = queue.get(timeout=5.0)
            break
        except queue_module.Empty:
            if not process.is_alive() and queue.empty():
                # a crash (a segfault in a kernel, the OOM killer) leaves no result to wait for
                process.join()
                return Measurement(
                    float("nan"),
                    0,
                    float("nan"),
                    error=f"the measuring process died (exit code {process.exitcode})",
                )
    process.join()
    return result


def measurement_row(measurement: Measurement) -> dict:
    """A measurement as a results-file row."""
    return {
        "seconds": measurement.seconds,
        "repeats": measurement.repeats,
        "peak_mib": measurement.peak_mib,
        "all_seconds": measurement.all_seconds,
        "error": measurement.error,
        "parts": measurement.parts,
    }
