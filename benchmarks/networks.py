"""(b) Training steps and (c) sliding-window inference of whole networks."""

from __future__ import annotations

import time

import torch
from monai.inferers import sliding_window_inference

import visprior
from visprior.engine.precision import autocast
from visprior.layers.conv_algorithm import set_conv_algorithm

PAPER = {"in_channels": 1, "out_channels": 5}
QUICK = {"in_channels": 1, "out_channels": 3, "feature_size": 8, "hidden_size": 32}

# (label, registered name, conv algorithm)
TRAINING = [
    ("RepUX-Net BFR 21^3", "repuxnet", "auto"),
    ("RepUX-Net plain 21^3", "repuxnet_plain", "auto"),
    ("RepUX-Net SR 21^3 + 3/5/7", "repuxnet_sr", "auto"),
    ("RepUX-Net BFR on F.conv3d", "repuxnet", "direct"),
    ("3D UX-Net 7^3", "uxnet", "auto"),
    ("SwinUNETR", "swinunetr", "auto"),
]
# Smallest training crop: the deepest feature map must keep more than one voxel for the
# instance/batch norms (SwinUNETR's bottleneck is at 1/32).
MIN_TRAINING_SIZE = {"swinunetr": 64}

INFERENCE = [
    ("RepUX-Net (fused) 21^3", "repuxnet"),
    ("3D UX-Net 7^3", "uxnet"),
    ("SwinUNETR", "swinunetr"),
]


def _model(name: str, quick: bool) -> torch.nn.Module:
    kwargs = dict(QUICK if quick else PAPER)
    if name == "swinunetr":
        kwargs.pop("hidden_size", None)
        kwargs["feature_size"] = 12 if quick else 48
    return visprior.get_model(name, **kwargs)


def build_training_step(name: str, algorithm: str, size: int, quick: bool, precision: str = "32"):
    """One AdamW step with DiceCE-like cross entropy on a random crop, batch 1, the forward
    under ``precision``'s autocast."""
    set_conv_algorithm(algorithm)
    model = _model(name, quick).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    out_channels = (QUICK if quick else PAPER)["out_channels"]
    x = torch.randn(1, 1, size, size, size)
    y = torch.randint(0, out_channels, (1, size, size, size))

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(precision, torch.device("cpu")):
            logits = model(x)
        torch.nn.functional.cross_entropy(logits.float(), y).backward()
        optimizer.step()

    return step, None


def alternating(calls: dict):
    """One call of each of ``calls`` (name -> callable) in turn, timed per name into
    ``step.parts``: slow drifts of the machine hit all alike, so their ratio is fairer than
    separate runs'."""

    def step():
        for name, one in calls.items():
            start = time.perf_counter()
            one()
            step.parts.setdefault(name, []).append(time.perf_counter() - start)

    step.parts = {}
    return step


def build_alternating_steps(names: tuple[str, ...], size: int, quick: bool, precision: str = "32"):
    """One training step of each network in turn, timed per network (see alternating)."""
    steps = {name: build_training_step(name, "auto", size, quick, precision)[0] for name in names}
    return alternating(steps), None


def _demo_step(size: int):
    """The demo's training step: RepUX-Net 16/128, two crops of ``size``^3, 10 classes,
    DiceCE, AdamW, float32."""
    from monai.losses import DiceCELoss

    torch.manual_seed(0)
    classes = 10
    model = visprior.get_model(
        "repuxnet", in_channels=1, out_channels=classes, feature_size=16, hidden_size=128
    ).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    image = torch.randn(2, 1, size, size, size)
    label = torch.randint(0, classes, (2, 1, size, size, size))

    def one():
        optimizer.zero_grad()
        loss_fn(model(image), label).backward()
        optimizer.step()

    return one


def build_kernel_cut_steps(size: int, quick: bool):
    """The demo's training step with the depth-wise kernels cut to the taps that reach the
    input (as visprior runs) and with the full 21^3 kernels everywhere, alternated in one
    process."""
    import visprior.layers.depthwise as depthwise

    one = _demo_step(size)
    cut = depthwise._taps_reaching_input

    def full(weight, spatial):
        return weight, (weight.shape[-1] // 2,) * len(spatial)

    def step():
        for name, taps in (("cut", cut), ("full", full)):
            depthwise._taps_reaching_input = taps
            try:
                start = time.perf_counter()
                one()
                step.parts.setdefault(name, []).append(time.perf_counter() - start)
            finally:
                depthwise._taps_reaching_input = cut

    step.parts = {}
    return step, None


def build_malloc_step(tuned: bool, size: int, quick: bool):
    """The demo's training step in a process where glibc keeps freed memory
    (``keep_freed_memory``) or keeps its own thresholds; each step's time and its minor page
    faults go into ``step.parts``."""
    import resource

    from visprior.engine.cpu_memory import keep_freed_memory

    if tuned and not keep_freed_memory():
        raise RuntimeError("glibc's thresholds could not be set on this machine")
    one = _demo_step(size)
    arm = "tuned" if tuned else "glibc"

    def step():
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        one()
        step.parts.setdefault(arm, []).append(time.perf_counter() - start)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        step.parts.setdefault("page_faults", []).append(faults)

    step.parts = {}
    return step, None


def build_inference(name: str, volume: int, roi: int, quick: bool, precision: str = "32"):
    """Sliding-window inference (overlap 0.25, gaussian blending) of one volume, the network
    under ``precision``'s autocast."""
    model = visprior.reparameterize_model(_model(name, quick)).eval()
    x = torch.randn(1, 1, volume, volume, volume)

    def network(window):
        with autocast(precision, torch.device("cpu")):
            return model(window).float()

    def infer():
        with torch.no_grad():
            sliding_window_inference(x, roi, 1, network, overlap=0.25, mode="gaussian")

    def warmup():
        with torch.no_grad():
            network(torch.randn(1, 1, roi, roi, roi))

    return infer, warmup
