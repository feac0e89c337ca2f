"""``visprior demo``: RepUX-Net on a real brain MRI that ships with nilearn (no download).

Builds a registered network, takes a few training steps on the MNI152 2009 T1 template with
its grey/white-matter maps as labels, fuses the network for deployment, checks that the
fused network gives the training network's output, and reports shapes, sizes and times.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.transforms import CenterSpatialCrop, DivisiblePad

from visprior.registry import get_model
from visprior.reparam import reparameterize_model

__all__ = ["DemoConfig", "load_mni152", "run_demo"]

TISSUES = ("background", "grey matter", "white matter")


@dataclass
class DemoConfig:
    model: str = "repuxnet"
    feature_size: int = 48
    hidden_size: int | None = None  # None: the network's own default
    resolution_mm: int = 2
    train_steps: int = 3
    crop: int = 64
    seed: int = 0


def load_mni152(resolution_mm: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T1 intensities scaled to [0, 1], a tissue label map and the affine, on one grid.

    Labels: 0 background, 1 grey matter, 2 white matter (the larger probability, where it
    is at least 0.5).
    """
    from nilearn import datasets  # imported here: nilearn is slow to import

    t1 = datasets.load_mni152_template(resolution=resolution_mm)
    grey = datasets.load_mni152_gm_template(resolution=resolution_mm).get_fdata()
    white = datasets.load_mni152_wm_template(resolution=resolution_mm).get_fdata()
    image = t1.get_fdata(dtype=np.float32)
    image /= max(float(image.max()), 1e-6)
    labels = np.where(grey >= white, 1, 2).astype(np.int64)
    labels[np.maximum(grey, white) < 0.5] = 0
    return image, labels, t1.affine


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def run_demo(config: DemoConfig) -> dict:
    """Run the demo and return what it printed as numbers."""
    torch.manual_seed(config.seed)
    image, labels, _ = load_mni152(config.resolution_mm)
    sizes = {"feature_size": config.feature_size}
    if config.hidden_size is not None:
        sizes["hidden_size"] = config.hidden_size
    model = get_model(config.model, in_channels=1, out_channels=len(TISSUES), **sizes)
    pad = DivisiblePad(k=getattr(model, "size_divisibility", 32))
    volume = pad(torch.from_numpy(image)[None])[None]  # (1, 1, H, W, D)
    target = pad(torch.from_numpy(labels)[None])[None]
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"visprior demo: {config.model} on the MNI152 2009 T1 template (nilearn), "
        f"{config.resolution_mm} mm"
    )
    print(f"  volume      {image.shape} -> padded input {tuple(volume.shape)}")
    print(f"  parameters  {n_params:,}")

    crop = CenterSpatialCrop(roi_size=(config.crop,) * 3)
    x_crop, y_crop = crop(volume[0])[None], crop(target[0])[None]
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    losses, step_times = [], []
    for _ in range(config.train_steps):

        def step():
            optimizer.zero_grad()
            loss = loss_fn(model(x_crop), y_crop)
            loss.backward()
            optimizer.step()
            return loss.item()

        loss, seconds = _timed(step)
        losses.append(loss)
        step_times.append(seconds)
        print(f"  train step  {config.crop}^3 crop: DiceCE {loss:.4f} in {seconds:.1f} s")

    model.eval()
    with torch.no_grad():
        logits, train_seconds = _timed(lambda: model(volume))
        fused = reparameterize_model(model)
        fused_logits, fused_seconds = _timed(lambda: fused(volume))
    difference = (logits - fused_logits).abs().max().item()
    print(
        f"  forward     training form {train_seconds:.1f} s, fused {fused_seconds:.1f} s, "
        f"output {tuple(fused_logits.shape)}"
    )
    print(
        f"  fused       max |training - fused| = {difference:.2e} "
        f"({sum(p.numel() for p in fused.parameters()):,} parameters)"
    )
    return {
        "parameters": n_params,
        "losses": losses,
        "step_seconds": step_times,
        "forward_seconds": train_seconds,
        "fused_forward_seconds": fused_seconds,
        "max_difference": difference,
        "output_shape": tuple(fused_logits.shape),
    }
