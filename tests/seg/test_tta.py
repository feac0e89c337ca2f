"""Test-time mirroring: every flip is undone exactly (a network that is flip-equivariant by
construction gives the same output with and without it), a network that is not gives the
average of its mirrored outputs, and mirroring a network trained without flips is refused."""

from __future__ import annotations

import itertools
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from torch import nn

from tests.tolerances import assert_close_to_scale
from visprior import get_model
from visprior.cli import main
from visprior.engine.checkpoint import save_checkpoint
from visprior.engine.config import config_to_dict
from visprior.seg.config import Preprocessing, SegTrainConfig
from visprior.seg.predict import SegmentationPredictor, load_predictor

LABELS = {"background": 0, "a": 1, "b": 2}
ROI = (16, 16, 16)


class SymmetricConv(nn.Module):
    """A 3x3x3 conv whose kernel equals its mirror image along every axis, with zero padding
    (itself symmetric): flipping the input flips the output, for any combination of axes."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        weight = torch.randn(3, 1, 3, 3, 3)
        for dims in ([2], [3], [4]):
            weight = (weight + weight.flip(dims)) / 2
        self.weight = nn.Parameter(weight)

    def forward(self, x):
        return nn.functional.conv3d(x, self.weight, padding=1)


class SkewedConv(SymmetricConv):
    """The same with a kernel that tells left from right."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.weight = nn.Parameter(torch.randn(3, 1, 3, 3, 3))


def _predictor(model: nn.Module, mirror_axes=()) -> SegmentationPredictor:
    return SegmentationPredictor(
        model=model.eval(),
        preprocessing=Preprocessing(intensity="none", crop_foreground=False),
        roi_size=ROI,
        channel_names=["image"],
        labels=LABELS,
        overlap=0.25,
        mirror_axes=mirror_axes,
    )


def _image(shape=(20, 18, 24)) -> MetaTensor:
    return MetaTensor(torch.randn(1, *shape, generator=torch.Generator().manual_seed(2)))


def test_a_flip_equivariant_network_gives_the_same_output_with_mirroring():
    """One window covers the image: with several, the two paths blend different things
    (the windows' logits without mirroring, their mean softmax with it)."""
    image = _image(ROI)
    plain = _predictor(SymmetricConv())._infer(image, None, None)
    mirrored = _predictor(SymmetricConv(), (0, 1, 2))._infer(image, None, None)
    assert mirrored.shape == plain.shape == (3, *ROI)
    assert_close_to_scale(mirrored, plain, rtol=1e-5)
    # Several windows: still a distribution at every voxel, and flips undone (equivariant).
    image = _image()
    mirrored = _predictor(SymmetricConv(), (0, 1, 2))._infer(image, None, None)
    torch.testing.assert_close(mirrored.sum(0), torch.ones(mirrored.shape[1:]))
    flipped = _predictor(SymmetricConv(), (0, 1, 2))._infer(MetaTensor(image.flip(1)), None, None)
    assert_close_to_scale(flipped.flip(1), mirrored, rtol=1e-4)


def test_mirroring_averages_the_flipped_softmax():
    """One window covering the whole image: the result is the mean over the 4 flip
    combinations of axes 0 and 2 of flip(softmax(net(flip(x))))."""
    image = _image(ROI)
    net = SkewedConv().eval()
    mirrored = _predictor(net, (0, 2))._infer(image, None, None)
    x = image.as_tensor()[None]
    expected = torch.zeros_like(mirrored)
    combinations = [c for n in range(3) for c in itertools.combinations([2, 4], n)]
    with torch.no_grad():
        for dims in combinations:
            dims = list(dims)
            flipped = x.flip(dims) if dims else x
            out = torch.softmax(net(flipped), dim=1)
            expected += (out.flip(dims) if dims else out)[0] / len(combinations)
    assert_close_to_scale(mirrored, expected, rtol=1e-5)
    plain = _predictor(net)._infer(image, None, None)
    assert (mirrored - plain).abs().max() > 1e-3  # a skewed network does change


def _checkpoint(path: Path, flip_axes=()) -> Path:
    kwargs = {"in_channels": 1, "out_channels": 3, "feature_size": 4, "num_res_units": 1}
    model = get_model("unet", **kwargs)
    pre = Preprocessing(intensity="none", crop_foreground=False)
    roi = (32, 32, 32)  # MONAI's UNet needs more than one voxel at its bottleneck
    config = SegTrainConfig(model="unet", model_kwargs=kwargs, roi_size=roi, flip_axes=flip_axes)
    state = {
        "model": {"name": "unet", "kwargs": kwargs},
        "state_dict": model.state_dict(),
        "labels": LABELS,
        "channel_names": ["MRI"],
        "preprocessing": config_to_dict(pre),
        "roi_size": list(roi),
        "config": config_to_dict(config),
    }
    return save_checkpoint(path, state)


def test_tta_takes_the_axes_training_flipped(tmp_path):
    checkpoint = _checkpoint(tmp_path / "flipped.pt", flip_axes=(2, 0))
    assert load_predictor(checkpoint, tta=True).mirror_axes == (0, 2)
    assert load_predictor(checkpoint).mirror_axes == ()
    assert load_predictor(checkpoint, tta_axes=[1]).mirror_axes == (1,)


def test_tta_is_refused_for_a_network_trained_without_flips(tmp_path, capsys):
    checkpoint = _checkpoint(tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="trained without flips"):
        load_predictor(checkpoint, tta=True)
    assert load_predictor(checkpoint, tta_axes=[0]).mirror_axes == (0,)  # named: allowed
    with pytest.raises(ValueError, match="--tta-axes: spatial axes are 0, 1 and 2"):
        load_predictor(checkpoint, tta_axes=[3])

    image = tmp_path / "case_0000.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 32), np.float32), np.eye(4)), image)
    out = tmp_path / "out"
    assert main(["seg", "predict", str(checkpoint), str(image), "-o", str(out), "--tta"]) == 2
    assert "trained without flips" in capsys.readouterr().err and not out.exists()
    args = ["seg", "predict", str(checkpoint), str(image), "-o", str(out), "--tta-axes", "0", "1"]
    assert main(args) == 0 and (out / "case.nii.gz").is_file()
    # No post-processing decision beside this checkpoint: "auto" is none, said once.
    assert capsys.readouterr().out.count("no postprocessing.json; no post-processing") == 1
