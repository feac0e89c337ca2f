"""The short GPU check: four measurements that no CPU here can make, in under 5 minutes.

1. ``steps``: one training step of RepUX-Net, 3D UX-Net and MedNeXt-S at paper widths, 96^3,
   batch 2, 14 classes (BTCV's), in bf16 autocast and in fp16 autocast with a gradient
   scaler: median seconds after warm-up, peak memory, and whether the loss stayed finite.
2. ``conv_paths``: at every RepUX-Net stage, the depth-wise 21^3 conv by the direct path and by
   the FFT path, forward (inference) and forward + backward (training), in float32 and under
   bf16 autocast, and what the measured ``auto`` picks there (and whether it timed the case
   or left it to the size rule).
3. ``memory``: ``seg plan``'s training-memory estimate (``visprior.seg.memory_model``) for
   RepUX-Net at paper width, at the paper's patch (96^3, batch 2) and at 128^3, against
   ``torch.cuda.max_memory_allocated`` for one real float32 training step.
4. ``sliding_window``: the fused RepUX-Net predicting a 512 x 512 x 300 volume, 14 classes, as
   ``seg predict`` does (96^3 windows, overlap 0.5, Gaussian weights, 2 windows a pass), in
   float32 and bf16: seconds and peak memory.

Without CUDA (or with ``--dry``) it runs the same code at tiny sizes on the CPU, which the test
suite does, and says that the figures are not the GPU's. The report is rewritten after each
part, so a run cut short keeps what it finished; a part that fails records its error and the
next one runs.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

REPORT = "device_check.json"
CLASSES = 14
NETWORKS = ("repuxnet", "uxnet", "mednext_s")
PRECISIONS = ("bf16", "fp16")
# what `seg predict` uses (visprior.seg.predict.Predictor's defaults)
OVERLAP, SW_BATCH = 0.5, 2

FULL = {
    "patch": 96,
    "batch": 2,
    "memory_patches": (96, 128),
    "volume": (512, 512, 300),
    "widths": {},  # each network's defaults: the paper's
    "warmup": 2,
    "repeats": 3,
}
DRY = {
    "patch": 32,
    "batch": 1,
    "memory_patches": (32,),
    "volume": (48, 48, 40),
    "widths": {
        "repuxnet": {"feature_size": 8, "hidden_size": 64},
        "uxnet": {"feature_size": 8, "hidden_size": 64},
        "mednext_s": {"feature_size": 8},
    },
    "warmup": 1,
    "repeats": 1,
}
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def run_check(
    out_dir: Path, dry: bool = False, seconds: float = 270.0, wheels: list[str] | tuple = ()
) -> dict:
    """Run every part that time allows; write and return the report."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # the measured conv path's winners go with the report, not into the machine's home
    os.environ.setdefault("VISPRIOR_CACHE_DIR", str(out_dir / "cache"))
    cuda = torch.cuda.is_available() and not dry
    device = torch.device("cuda" if cuda else "cpu")
    sizes = FULL if cuda else DRY
    report: dict = {
        "device": _describe(device),
        "dry": not cuda,
        "sizes": dict(sizes),
        "wheels_added": list(wheels),
        "skipped": [] if cuda else ["every GPU figure: no CUDA here, tiny sizes on the CPU"],
        "parts": {},
    }
    path = out_dir / REPORT
    deadline = time.perf_counter() + seconds
    parts: list[tuple[str, Callable[[torch.device, dict, float], dict]]] = [
        ("steps", steps_part),
        ("conv_paths", conv_paths_part),
        ("memory", memory_part),
        ("sliding_window", sliding_window_part),
    ]
    for name, part in parts:
        if time.perf_counter() > deadline:
            report["skipped"].append(f"{name}: out of time")
            continue
        started = time.perf_counter()
        try:
            report["parts"][name] = part(device, sizes, deadline)
        except Exception:  # one broken part must not hide the others' figures
            report["parts"][name] = {"error": traceback.format_exc(limit=4)[-3000:]}
        report["parts"][name]["seconds"] = round(time.perf_counter() - started, 2)
        _free(device)
        _write(path, report)
    failed = [n for n, p in report["parts"].items() if "error" in p]
    report["summary"] = (
        f"{len(report['parts']) - len(failed)} of {len(parts)} parts ran"
        + (f", failed: {', '.join(failed)}" if failed else "")
        + (", dry run at tiny sizes" if not cuda else "")
    )
    report["path"] = str(path)
    _write(path, report)
    return report


def _describe(device: torch.device) -> dict:
    described = {
        "type": device.type,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        described |= {
            "name": properties.name,
            "memory_gib": round(properties.total_memory / 2**30, 1),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
        }
    else:
        from visprior.layers.conv_autotune import device_name

        described["name"] = device_name(device)
    return described


def _write(path: Path, report: dict) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(report, indent=1, default=str))
    os.replace(temporary, path)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3)


def _network(name: str, sizes: dict, device: torch.device) -> torch.nn.Module:
    from visprior.nets.registry import get_model

    torch.manual_seed(0)
    kwargs = {"in_channels": 1, "out_channels": CLASSES, **sizes["widths"].get(name, {})}
    return get_model(name, **kwargs).to(device)


def _logits(output) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def training_step(
    model: torch.nn.Module, device: torch.device, precision: str, patch: int, batch: int
) -> Callable[[], float]:
    """A callable that makes one AdamW step on random crops and returns its loss."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    x = torch.randn(batch, 1, patch, patch, patch, device=device)
    y = torch.randint(0, CLASSES, (batch, patch, patch, patch), device=device)
    dtype = _AUTOCAST.get(precision)
    model.train()

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = _logits(model(x))
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return float(loss.detach())

    return step


def _time(call: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> dict:
    results = []
    for _ in range(warmup):
        results.append(call())
    _synchronize(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        results.append(call())
        _synchronize(device)
        times.append(time.perf_counter() - started)
    return {"median_seconds": round(statistics.median(times), 4), "results": results}


def steps_part(device: torch.device, sizes: dict, deadline: float) -> dict:
    rows = []
    for name in NETWORKS:
        for precision in PRECISIONS:
            row = {"network": name, "precision": precision}
            if time.perf_counter() > deadline:
                rows.append({**row, "skipped": "out of time"})
                continue
            try:
                model = _network(name, sizes, device)
                _free(device)
                step = training_step(model, device, precision, sizes["patch"], sizes["batch"])
                timed = _time(step, device, sizes["warmup"], sizes["repeats"])
                losses = timed.pop("results")
                row |= {
                    **timed,
                    "peak_gib": _peak_gib(device),
                    "loss_finite": all(math.isfinite(v) for v in losses),
                    "parameters": sum(p.numel() for p in model.parameters()),
                }
            except Exception as error:  # e.g. out of memory, or fp16 unsupported on a CPU
                row["error"] = f"{type(error).__name__}: {str(error)[:500]}"
            rows.append(row)
            model = step = None
            _free(device)
    return {"patch": sizes["patch"], "batch": sizes["batch"], "rows": rows}


def depthwise_cases(model: torch.nn.Module, x: torch.Tensor) -> list[dict]:
    """The input shape and kernel of every distinct depth-wise conv ``model`` runs on ``x``."""
    from visprior.layers.depthwise import DepthwiseConv

    seen: dict[tuple, dict] = {}

    def hook(module, inputs):
        shape = tuple(inputs[0].shape)
        seen.setdefault((shape, module.kernel_size), {"shape": shape, "kernel": module.kernel_size})

    handles = [
        m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, DepthwiseConv)
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return list(seen.values())


def conv_paths_part(device: torch.device, sizes: dict, deadline: float) -> dict:
    from visprior.layers import conv_autotune, depthwise
    from visprior.layers.conv_algorithm import choose_algorithm, estimated_cost_ratio

    model = _network("repuxnet", sizes, device).eval()
    x = torch.randn(sizes["batch"], 1, *(sizes["patch"],) * 3, device=device)
    cases = depthwise_cases(model, x)
    model = x = None
    _free(device)
    rows = []
    for case in cases:
        shape, kernel = case["shape"], case["kernel"]
        spatial = shape[2:]
        for needs_grad in (False, True):
            for precision in ("32", "bf16"):
                row = {
                    "shape": list(shape),
                    "kernel": kernel,
                    "training": needs_grad,
                    "precision": precision,
                    "rule": choose_algorithm(spatial, kernel, needs_grad),
                    "cost_ratio": round(estimated_cost_ratio(spatial, kernel, needs_grad), 3),
                }
                if time.perf_counter() > deadline:
                    rows.append({**row, "skipped": "out of time"})
                    continue
                torch.manual_seed(0)
                inputs = torch.randn(*shape, device=device, requires_grad=needs_grad)
                weight = torch.randn(
                    shape[1], 1, kernel, kernel, kernel, device=device, requires_grad=needs_grad
                )
                bias = torch.zeros(shape[1], device=device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                    # both paths, timed as the measured auto times them (give-up included)
                    timed = conv_autotune.time_both_paths(
                        inputs, weight, bias, needs_grad, depthwise._run_path, first=row["rule"]
                    )
                    conv_autotune.clear_measurements()
                    auto = conv_autotune.measured_algorithm(
                        inputs, weight, bias, needs_grad, depthwise._run_path
                    )
                    measured = bool(conv_autotune.measurements())
                rows.append(
                    row
                    | {
                        "seconds": timed["seconds"],
                        "faster": timed["algorithm"],
                        "auto": auto,
                        "auto_measured": measured,
                    }
                )
                inputs = weight = bias = None
                _free(device)
    return {"rows": rows}


def memory_part(device: torch.device, sizes: dict, deadline: float) -> dict:
    from visprior.seg.memory_model import activation_elements_per_voxel, training_memory_gb

    model = _network("repuxnet", sizes, device)
    stride = int(getattr(model, "size_divisibility", 16))
    per_voxel = activation_elements_per_voxel(model, 1, stride)
    parameters = sum(p.numel() for p in model.parameters())
    rows = []
    for patch in sizes["memory_patches"]:
        row = {
            "patch": patch,
            "batch": 2,
            "estimate_gib": round(training_memory_gb(parameters, per_voxel, (patch,) * 3, 2), 3),
        }
        if device.type != "cuda":
            row["measured_gib"] = None  # no allocator counter on the CPU
        elif time.perf_counter() > deadline:
            row["skipped"] = "out of time"
        else:
            try:
                model = _network("repuxnet", sizes, device)
                _free(device)
                step = training_step(model, device, "32", patch, 2)
                step()
                _synchronize(device)
                row["measured_gib"] = _peak_gib(device)
                row["estimate_over_measured"] = round(row["estimate_gib"] / row["measured_gib"], 3)
            except Exception as error:
                row["error"] = f"{type(error).__name__}: {str(error)[:500]}"
            model = step = None
            _free(device)
        rows.append(row)
    return {
        "network": "repuxnet",
        "elements_per_voxel": round(per_voxel, 2),
        "parameters": parameters,
        "rows": rows,
    }


def sliding_window_part(device: torch.device, sizes: dict, deadline: float) -> dict:
    from monai.inferers import sliding_window_inference

    from visprior.reparam import reparameterize_model

    model = reparameterize_model(_network("repuxnet", sizes, device).eval())
    roi = (sizes["patch"],) * 3
    volume = torch.randn(1, 1, *sizes["volume"], device=device)
    rows = []
    for precision in ("32", "bf16"):
        if time.perf_counter() > deadline:
            rows.append({"precision": precision, "skipped": "out of time"})
            continue

        def network(window: torch.Tensor, precision=precision) -> torch.Tensor:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                return model(window).float()

        _free(device)
        try:
            started = time.perf_counter()
            with torch.inference_mode():
                output = sliding_window_inference(
                    volume, roi, SW_BATCH, network, overlap=OVERLAP, mode="gaussian"
                )
            _synchronize(device)
            rows.append(
                {
                    "precision": precision,
                    "seconds": round(time.perf_counter() - started, 2),
                    "peak_gib": _peak_gib(device),
                    "output_shape": list(output.shape),
                    "finite": bool(torch.isfinite(output).all()),
                }
            )
            output = None
        except Exception as error:
            rows.append({"precision": precision, "error": f"{type(error).__name__}: {error}"[:600]})
    return {"volume": list(sizes["volume"]), "classes": CLASSES, "roi": list(roi), "rows": rows}
