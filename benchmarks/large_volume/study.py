"""(h) Sliding-window prediction of a whole CT on this CPU: peak memory and time.

A synthetic 512 x 512 x 300 CT (0.8 x 0.8 x 2.5 mm, the size of an abdominal scan) is labelled
by a 14-class MONAI UNet (``unet``, feature size 8, 96^3 windows, overlap 0.5) through
``visprior seg predict``'s whole path: reading, preprocessing, sliding window, softmax,
inversion to the input grid, argmax. Labels only with float32 and float16 whole-volume
buffers, and labels with the probabilities (``--probabilities``). Each case runs in a fresh
process; the peak is the resident memory the prediction added.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from benchmarks.timing import measure_in_subprocess, measurement_row

CLASSES = 14
SETTINGS_FULL = {"shape": (512, 512, 300), "roi": (96, 96, 96)}
SETTINGS_QUICK = {"shape": (64, 64, 32), "roi": (32, 32, 32)}
SPACING = (0.8, 0.8, 2.5)
# (whole-volume buffer type, whether the probabilities are kept as well as the labels)
CASES = (("float32", False), ("float16", False), ("float32", True))


def write_inputs(folder: Path, shape: tuple[int, int, int], roi: tuple[int, int, int]) -> None:
    """The checkpoint (untrained weights: the cost does not depend on them) and the CT."""
    import nibabel as nib
    import torch

    from visprior.engine.checkpoint import save_checkpoint
    from visprior.engine.config import config_to_dict
    from visprior.nets.registry import get_model
    from visprior.seg.config import Preprocessing

    folder.mkdir(parents=True, exist_ok=True)
    kwargs = {"in_channels": 1, "out_channels": CLASSES, "feature_size": 8}
    torch.manual_seed(0)
    model = get_model("unet", **kwargs)
    pre = Preprocessing(intensity="ct", spacing=SPACING, crop_foreground=False)
    save_checkpoint(
        folder / "unet.pt",
        {
            "model": {"name": "unet", "kwargs": kwargs},
            "state_dict": model.state_dict(),
            "labels": {"background": 0, **{f"organ_{i}": i for i in range(1, CLASSES)}},
            "channel_names": ["CT"],
            "preprocessing": config_to_dict(pre),
            "roi_size": list(roi),
        },
    )
    rng = np.random.default_rng(0)
    coarse = rng.uniform(-200, 300, [max(2, s // 32) for s in shape]).astype(np.float32)
    zoom = [s / c for s, c in zip(shape, coarse.shape, strict=True)]
    from scipy.ndimage import zoom as resize

    volume = resize(coarse, zoom, order=1)[: shape[0], : shape[1], : shape[2]].astype(np.int16)
    affine = np.diag([*SPACING, 1.0])
    nib.save(nib.Nifti1Image(volume, affine), folder / "ct.nii")
    small = volume[: roi[0], : roi[1], : roi[2]]
    nib.save(nib.Nifti1Image(small, affine), folder / "warmup.nii")


def build_case(folder: str, buffer_dtype: str, probabilities: bool):
    """``(step, warmup)`` for timing: the whole CT, after one small volume."""
    from visprior.seg.predict import load_predictor

    predictor = load_predictor(Path(folder) / "unet.pt", "cpu", "cpu", buffer_dtype)
    ct, small = Path(folder) / "ct.nii", Path(folder) / "warmup.nii"
    return (
        lambda: predictor.predict_case([ct], probabilities=probabilities),
        lambda: predictor.predict_case([small], probabilities=probabilities),
    )


def large_volume_section(results: dict) -> list[str]:
    shape = " x ".join(str(s) for s in results["shape"])
    lines = [
        "## (h) Sliding-window prediction of a whole CT",
        "",
        f"A synthetic {shape} CT ({' x '.join(map(str, SPACING))} mm), a 14-class MONAI UNet "
        f"(feature size 8), {results['roi'][0]}^3 windows with overlap 0.5, the whole "
        "`seg predict` path (read, preprocess, sliding window, softmax, inversion to the input "
        "grid, argmax) on the CPU. One run each in a fresh process, after a small warm-up "
        "volume; peak = resident memory the prediction added.",
        "",
        "| output | whole-volume buffers | seconds | peak GiB |",
        "|---|---|---|---|",
    ]
    for row in results["rows"]:
        peak = row["peak_mib"] / 1024
        output = "labels + probabilities" if row["probabilities"] else "labels"
        lines.append(f"| {output} | {row['buffer']} | {row['seconds']:.1f} | {peak:.2f} |")
    return lines


def run(quick: bool, log) -> dict:
    settings = SETTINGS_QUICK if quick else SETTINGS_FULL
    rows = []
    with tempfile.TemporaryDirectory(prefix="visprior-ct-") as folder:
        write_inputs(Path(folder), settings["shape"], settings["roi"])
        for buffer, probabilities in CASES:
            m = measure_in_subprocess(build_case, folder, buffer, probabilities, repeats=1)
            rows.append({"buffer": buffer, "probabilities": probabilities, **measurement_row(m)})
            log(
                f"(h) {buffer}, probabilities {probabilities}: {m.seconds:.1f} s, "
                f"peak {m.peak_mib:.0f} MiB"
            )
    return {**settings, "rows": rows}
