"""``visprior cxr predict``: a trained CXR network loaded from its checkpoint alone, radiograph
files classified, and each image's map drawn over it.

``predict_images`` writes ``predictions.csv`` and one overlay per image (the CAM of the
predicted class, or MT-UNet's gaze saliency) into the output folder; inputs are only read.
Figures use matplotlib's object API (``Figure`` + ``FigureCanvasAgg``), as ``visprior.viz``
does: no pyplot state, no backend switched for the caller.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn

from visprior.checkpoint_io import CheckpointError, load_checkpoint
from visprior.cxr.config import CXRTrainConfig
from visprior.cxr.dataset import load_image
from visprior.cxr.io import CXR_SUFFIXES
from visprior.engine.checkpoint import find_checkpoint
from visprior.engine.config import config_from_dict
from visprior.engine.distributed import resolve_device
from visprior.engine.precision import autocast, resolve_precision
from visprior.fileio import atomic_path, check_outputs, write_csv_rows
from visprior.nets.build import build_model_from_checkpoint
from visprior.nets.mtunet import MTUNet

__all__ = [
    "CXRClassifier",
    "collect_images",
    "load_classifier",
    "predict_images",
    "save_cam_overlay",
]


@dataclass
class CXRClassifier:
    model: nn.Module
    classes: list[str]
    image_size: int
    map_grid: tuple[int, int]
    config: CXRTrainConfig
    device: torch.device
    source: str
    precision: str = "32"  # the network's autocast, resolved: "32", "bf16" or "16-mixed"

    @property
    def predicts_saliency(self) -> bool:
        """MT-UNet: the maps are gaze saliency (N, 1, S, S), not class activation maps."""
        return isinstance(self.model, MTUNet)

    @property
    def map_name(self) -> str:
        return "predicted gaze saliency" if self.predicts_saliency else "class activation map"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (N, K) and maps of a batch of (N, 1, S, S) images: the CAMs
        (N, K, h, w) of a CAM classifier, or MT-UNet's saliency probabilities (N, 1, S, S)."""
        with autocast(self.precision, self.device):
            logits, maps = self.model(images.to(self.device))
        if self.predicts_saliency:
            maps = maps.float().exp()
        return logits.float().softmax(1).cpu().numpy(), maps.float().cpu().numpy()


def load_classifier(
    run_or_checkpoint: str | os.PathLike,
    device: str | torch.device = "cpu",
    precision: str = "32",
) -> CXRClassifier:
    """The trained network of a run folder (best checkpoint, else last) or checkpoint file.

    Raises:
        FileNotFoundError: no checkpoint there.
        CheckpointError: not a CXR checkpoint, or its weights do not fit its network.
    """
    path = find_checkpoint(run_or_checkpoint)
    state = load_checkpoint(path, map_location="cpu")
    if state.get("task") != "cxr":
        raise CheckpointError(f"{path}: not a CXR classification checkpoint")
    device = resolve_device(device)
    model = build_model_from_checkpoint(state, source=str(path)).eval().to(device)
    config = config_from_dict(CXRTrainConfig, state["config"], source=f"{path}: config")
    grid = tuple(int(v) for v in state["map_grid"])
    classes, size = list(state["classes"]), int(state["image_size"])
    precision = resolve_precision(precision, device, amp=False)
    return CXRClassifier(model, classes, size, grid, config, device, str(path), precision)


def predict_images(
    classifier: CXRClassifier,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    overwrite: bool = False,
) -> Path:
    """Classify image files (or every image in given folders); write CSV and map overlays
    (``<name>_cam.png``, or ``<name>_saliency.png`` for MT-UNet).

    Raises:
        FileExistsError: an output exists (without ``overwrite``), or an output path is one
            of the inputs.
    """
    files = collect_images(inputs)
    out_dir = Path(out_dir)
    table = out_dir / "predictions.csv"
    suffix = "_saliency" if classifier.predicts_saliency else "_cam"
    overlays = [out_dir / f"{path.stem}{suffix}.png" for path in files]
    check_outputs([table, *overlays], inputs=files, overwrite=overwrite)
    if len({o.name for o in overlays}) != len(overlays):
        raise ValueError("two inputs share a file name; predict them into separate folders")
    rows = []
    for path, overlay in zip(files, overlays, strict=True):
        image = load_image(path, classifier.image_size)
        probabilities, cams = classifier(image[None])
        predicted = int(probabilities[0].argmax())
        rows.append(
            {
                "file": str(path),
                "predicted": classifier.classes[predicted],
                **{
                    f"p_{c}": f"{p:.6f}"
                    for c, p in zip(classifier.classes, probabilities[0], strict=True)
                },
            }
        )
        save_cam_overlay(
            image[0].numpy(),
            cams[0, 0 if classifier.predicts_saliency else predicted],
            overlay,
            map_name=classifier.map_name,
            title=f"{path.name}: {classifier.classes[predicted]} "
            f"(p = {probabilities[0, predicted]:.2f})",
        )
    return write_csv_rows(table, rows)


def collect_images(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    files = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in CXR_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"{item}: no .dcm/.png/.jpg file in this folder")
            files += found
        elif item.is_file():
            files.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    return files


def save_cam_overlay(
    image: np.ndarray,
    cam: np.ndarray,
    path: str | os.PathLike,
    gaze: np.ndarray | None = None,
    title: str = "",
    map_name: str = "class activation map",
) -> Path:
    """The image with a map (CAM or saliency) over it, and the gaze map beside it when given
    (PNG, written atomically)."""
    size = image.shape
    upsample = lambda grid: F.interpolate(  # noqa: E731
        torch.as_tensor(grid, dtype=torch.float32)[None, None], size=size, mode="bilinear"
    )[0, 0].numpy()
    panels = 2 if gaze is None else 3
    figure = Figure(figsize=(3.2 * panels, 3.4))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, panels)
    axes[0].imshow(image, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("image")
    axes[1].imshow(image, cmap="gray", vmin=0, vmax=1)
    axes[1].imshow(upsample(cam), cmap="jet", alpha=0.45)
    axes[1].set_title(map_name)
    if gaze is not None:
        axes[2].imshow(image, cmap="gray", vmin=0, vmax=1)
        axes[2].imshow(upsample(gaze), cmap="jet", alpha=0.45, vmin=0, vmax=1)
        axes[2].set_title("gaze map")
    for axis in axes:
        axis.axis("off")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    return path
