"""``algorithm="auto"`` by measurement: time the direct and the FFT path on this machine the
first time a depth-wise conv meets a new case, and keep the faster, as
``torch.backends.cudnn.benchmark`` does for cuDNN's algorithms.

* **What is measured.** Only cases near the crossover of the size rule of
  :mod:`visprior.layers.conv_algorithm`: where its cost model puts the two paths within
  :data:`MARGIN` times of each other, or where the model and the rule disagree (the rule's
  3D training threshold is a side length: at 4^3 x 256 ch a direct 21^3 step took 0.36x the
  FFT path's). Elsewhere the rule's answer stands, so that a direct 21^3 backward (about 80 s
  at 48 ch @ 48^3 on a 2-core CPU) is never timed. A case is timed
  forward, plus backward when a gradient is needed, :data:`REPEATS` times after a warm-up
  call, the rule's pick first; the other path is abandoned once its calls, warm-up included,
  have taken :data:`GIVE_UP` times as long as the first path's.
* **The key.** Device type and name, dtypes, the autocast state, batch size, spatial size,
  kernel size, channels (rounded up to a power of two), whether a gradient is needed, and
  ``torch.get_num_threads()``.
* **The cache.** Winners stay in memory for the process. They are also kept on disk, one JSON
  file per machine (CPU model or GPU name) and torch version, under
  ``$VISPRIOR_CACHE_DIR`` or ``$XDG_CACHE_HOME/visprior`` (``~/.cache/visprior``); writes are
  atomic, and a broken file is ignored with a warning. ``VISPRIOR_CONV_CACHE=0`` keeps the
  winners in memory only.
* **When it does not measure** (the rule decides): with deterministic algorithms on
  (``torch.use_deterministic_algorithms``, which the ``deterministic`` config key sets), while
  tracing, scripting, compiling or exporting to ONNX, and with ``VISPRIOR_CONV_AUTOTUNE=0``.
  Unset, it measures on CUDA devices and not on a CPU (see :data:`AUTOTUNE_ENV`);
  ``VISPRIOR_CONV_AUTOTUNE=1`` turns it on there too.
* **Under DDP.** Each rank decides on its own, with no collective: rank 0 validates alone, and
  a collective inside its forward would wait for ranks that never come. The paths compute the
  same function, and DDP all-reduces the gradients, so the weights stay equal whichever path a
  rank runs.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from visprior.cpu_info import cpu_model_name
from visprior.fileio import atomic_path
from visprior.layers.conv_algorithm import choose_algorithm, estimated_cost_ratio

__all__ = [
    "AUTOTUNE_ENV",
    "CACHE_ENV",
    "MARGIN",
    "autotune_enabled",
    "cache_file",
    "clear_measurements",
    "measured_algorithm",
    "measurements",
    "time_both_paths",
]

# "1" turns measuring on, "0" off. Unset: on for CUDA devices (the size rule was never measured
# on a GPU, and what follows is in a CPU library), off on a CPU, where a process that measures
# can die of heap corruption
# inside oneDNN. RepUX-Net 8/64, two 32^3 crops, bf16 autocast, 2 threads, a fresh cache: the
# process died (SIGSEGV, or glibc's "free(): invalid pointer") in 3 of 10 dry device checks and
# 2 of 7 bare training runs, each time in the timed backward of the direct path at 2 x 32 ch @
# 4^3 (the 21^3 kernel cut to 7^3), the first direct call after the FFT path's timed calls;
# gdb put the fault in malloc under oneDNN's jit_uni_reorder_t, in an OpenMP worker. The same
# run with 1 thread (0 of 12), or with the size rule alone (0 of 10), or with glibc's heap
# checks on (0 of 10) did not crash, and the same conv alone, 300 times, did not either. So it
# is a race in the library's threaded kernels that the measurement's call pattern exposes;
# until a torch release without it, the size rule decides on a CPU unless a user asks.
AUTOTUNE_ENV = "VISPRIOR_CONV_AUTOTUNE"
CACHE_ENV = "VISPRIOR_CONV_CACHE"  # "0": winners in memory only
CACHE_DIR_ENV = "VISPRIOR_CACHE_DIR"
MARGIN = 4.0  # measured where the rule's cost model puts the paths within this factor
WARMUP = 1
REPEATS = 3
GIVE_UP = 2.0  # a path is abandoned once it has taken this many times the first path's time
_FORMAT = 1

# ``run(algorithm, x, weight, bias)``: one depth-wise conv by the named path
PathRunner = Callable[[str, torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]

_memory: dict[str, dict] = {}
_loaded_files: set[Path] = set()


def autotune_enabled(device: torch.device | None = None) -> bool:
    """Whether ``auto`` may measure now, for a conv on ``device`` (see the module's docstring):
    ``VISPRIOR_CONV_AUTOTUNE=1`` or ``0`` decides; unset, a CUDA device measures and a CPU
    does not."""
    setting = os.environ.get(AUTOTUNE_ENV, "").strip()
    if setting == "0" or (setting != "1" and (device is None or device.type != "cuda")):
        return False
    if torch.are_deterministic_algorithms_enabled():
        return False
    return not _exporting()


def _exporting() -> bool:
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and compiler.is_compiling():
        return True
    onnx = getattr(torch, "onnx", None)
    return bool(onnx is not None and onnx.is_in_onnx_export())


def measurements() -> dict[str, dict]:
    """The cases measured (or read from disk) in this process: key -> record."""
    return dict(_memory)


def clear_measurements() -> None:
    """Forget every winner held in memory (the disk cache is read again when next needed)."""
    _memory.clear()
    _loaded_files.clear()


def measured_algorithm(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    needs_grad: bool,
    run: PathRunner,
) -> str:
    """``"direct"`` or ``"fft"`` for this conv: measured near the rule's crossover, the rule's
    answer elsewhere or where measuring is off."""
    spatial, kernel_size = tuple(x.shape[2:]), int(weight.shape[-1])
    rule = choose_algorithm(spatial, kernel_size, needs_grad)
    if not autotune_enabled(x.device):  # first: every depth-wise forward comes here
        return rule
    ratio = estimated_cost_ratio(spatial, kernel_size, needs_grad)
    # far from the crossover, where the cost model agrees with the rule, the rule stands
    if (ratio > MARGIN and rule == "fft") or (ratio < 1 / MARGIN and rule == "direct"):
        return rule
    key = case_key(x, weight, needs_grad)
    if key not in _memory:
        _read_disk_cache(x.device)
    if key in _memory:
        return _memory[key]["algorithm"]
    record = time_both_paths(x, weight, bias, needs_grad, run, first=rule)
    record["rule"] = rule
    _memory[key] = record
    _write_disk_cache(x.device)
    return record["algorithm"]


def case_key(x: torch.Tensor, weight: torch.Tensor, needs_grad: bool) -> str:
    """The case a measurement stands for, as a string (it is also the disk cache's key)."""
    device = x.device.type
    autocast = "off"
    if torch.is_autocast_enabled(device):
        autocast = str(torch.get_autocast_dtype(device)).removeprefix("torch.")
    channels = 1 << max(int(x.shape[1]) - 1, 0).bit_length()
    fields = [
        device,
        device_name(x.device),
        str(x.dtype).removeprefix("torch."),
        str(weight.dtype).removeprefix("torch."),
        f"autocast={autocast}",
        f"batch={x.shape[0]}",
        "spatial=" + "x".join(str(s) for s in x.shape[2:]),
        f"kernel={weight.shape[-1]}",
        f"channels<={channels}",
        f"grad={int(needs_grad)}",
        f"threads={torch.get_num_threads()}",
    ]
    return "|".join(fields)


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name (``/proc/cpuinfo``; else the platform's)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model_name()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_call(
    algorithm: str,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    needs_grad: bool,
    run: PathRunner,
) -> float:
    """Seconds for one forward (and backward) of ``algorithm`` on detached copies, so that
    nothing reaches the caller's graph or its parameters' gradients (nor DDP's hooks)."""
    x_copy = x.detach().requires_grad_(needs_grad and x.requires_grad)
    w_copy = weight.detach().requires_grad_(needs_grad and weight.requires_grad)
    b_copy = None if bias is None else bias.detach().requires_grad_(needs_grad)
    device = x.device.type
    # autocast caches the casts of leaf tensors that need a gradient, keyed by their address,
    # until the outermost autocast region ends; these copies die before that, and a later
    # tensor at the same address would be handed their stale cast. So nothing here is cached.
    casting = torch.autocast(
        device,
        dtype=torch.get_autocast_dtype(device),
        enabled=torch.is_autocast_enabled(device),
        cache_enabled=False,
    )
    _synchronize(x.device)
    started = time.perf_counter()
    with torch.set_grad_enabled(needs_grad), casting:
        out = run(algorithm, x_copy, w_copy, b_copy)
        if needs_grad and out.requires_grad:
            out.backward(torch.ones_like(out))
    _synchronize(x.device)
    return time.perf_counter() - started


def time_both_paths(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    needs_grad: bool,
    run: PathRunner,
    first: str,
) -> dict:
    """Time ``first`` then the other path; the faster's name and the median seconds of each
    (``None`` for an abandoned path). Each path's warm-up call counts toward the give-up
    limit, as the first path's own warm-up counts in the time it is held to."""
    order = [first, "fft" if first == "direct" else "direct"]
    medians: dict[str, float] = {}
    first_total = math.inf
    for algorithm in order:
        limit = GIVE_UP * first_total
        times: list[float] = []
        total = 0.0
        try:
            for call in range(WARMUP + REPEATS):
                seconds = _time_call(algorithm, x, weight, bias, needs_grad, run)
                total += seconds
                if total > limit:
                    times = [math.inf]
                    break
                if call >= WARMUP:
                    times.append(seconds)
        except (RuntimeError, MemoryError):  # e.g. out of GPU memory on one path
            times, total = [math.inf], math.inf
        medians[algorithm] = statistics.median(times)
        if algorithm == first:
            first_total = total
    winner = min(order, key=lambda a: medians[a])
    if math.isinf(medians[winner]):
        winner = first
    seconds = {a: None if math.isinf(t) else round(t, 6) for a, t in medians.items()}
    return {"algorithm": winner, "seconds": seconds}


def cache_file(device: torch.device) -> Path | None:
    """This machine's file of winners, or ``None`` where the disk cache is off."""
    if os.environ.get(CACHE_ENV, "1").strip() == "0":
        return None
    root = os.environ.get(CACHE_DIR_ENV)
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "visprior")
    machine = re.sub(r"[^A-Za-z0-9.]+", "-", device_name(device)).strip("-").lower()
    torch_version = re.sub(r"[^A-Za-z0-9.]+", "-", torch.__version__)
    return Path(root) / f"conv-autotune-{machine}-torch{torch_version}.json"


def _read_disk_cache(device: torch.device) -> None:
    path = cache_file(device)
    if path is None or path in _loaded_files:
        return
    _loaded_files.add(path)
    if not path.is_file():
        return
    try:
        content = json.loads(path.read_text())
        if content.get("format") != _FORMAT:
            raise ValueError(f"format {content.get('format')!r}, expected {_FORMAT}")
        cases = content["cases"]
        for key, record in cases.items():
            if record["algorithm"] not in ("direct", "fft"):
                raise ValueError(f"case {key!r}: algorithm {record['algorithm']!r}")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        warnings.warn(
            f"ignoring the conv-path cache {path}: it could not be read ({error}); the cases "
            "are measured again",
            stacklevel=3,
        )
        return
    for key, record in cases.items():
        _memory.setdefault(key, record)


def _write_disk_cache(device: torch.device) -> None:
    path = cache_file(device)
    if path is None:
        return
    name = device_name(device)
    cases = {key: record for key, record in _memory.items() if f"|{name}|" in key}
    content = {"format": _FORMAT, "device": name, "torch": torch.__version__, "cases": cases}
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(content, indent=1, sort_keys=True))
    except OSError as error:  # a read-only home must not stop training
        warnings.warn(f"could not write the conv-path cache {path}: {error}", stacklevel=3)
