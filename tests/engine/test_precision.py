"""Precision: the ``amp`` alias, autocast in training (CPU bf16 as the stand-in for CUDA), the
float16 gradient scaler saved and resumed, the config key, and prediction under autocast."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor
from torch import nn

from tests.engine.test_trainer import RegressionTask, make_trainer
from visprior.engine.checkpoint import load_checkpoint
from visprior.engine.config import ConfigError, load_config
from visprior.engine.precision import autocast, grad_scaler, resolve_precision
from visprior.seg.config import Preprocessing, SegTrainConfig
from visprior.seg.predict import SegmentationPredictor

CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # naming a device needs no GPU


def test_auto_keeps_the_meaning_of_amp():
    assert resolve_precision("auto", CUDA, amp=True) == "bf16"
    assert resolve_precision("auto", CPU, amp=True) == "32"
    assert resolve_precision("auto", CUDA, amp=False) == "32"
    assert resolve_precision("16-mixed", CPU) == "16-mixed"
    with pytest.raises(ValueError, match="precision must be one of auto, 32, bf16, 16-mixed"):
        resolve_precision("fp8", CPU)
    assert grad_scaler("bf16", CPU) is None and grad_scaler("16-mixed", CPU) is not None


class DtypeRecordingTask(RegressionTask):
    """The regression task, noting the dtype the network computes in."""

    def __init__(self):
        super().__init__()
        self.dtypes = set()

    def training_loss(self, model, batch):
        self.dtypes.add(model(batch).dtype)
        return super().training_loss(model, batch).float()


@pytest.mark.parametrize(("precision", "dtype"), [("bf16", torch.bfloat16), ("32", torch.float32)])
def test_training_runs_under_the_chosen_autocast(tmp_path, precision, dtype):
    task = DtypeRecordingTask()
    trainer, _ = make_trainer(tmp_path, iterations=4, precision=precision, task=task)
    trainer.fit()
    assert task.dtypes == {dtype}
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["scaler"] is None


def test_float16_training_scales_gradients_and_resumes_the_scale(tmp_path):
    task = DtypeRecordingTask()
    trainer, model = make_trainer(tmp_path, iterations=4, precision="16-mixed", task=task)
    trainer.fit()
    assert task.dtypes == {torch.float16}
    saved = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["scaler"]
    assert saved["scale"] == trainer.scaler.get_scale() > 0
    resumed, _ = make_trainer(tmp_path, iterations=6, precision="16-mixed")
    resumed._resume()
    assert resumed.scaler.get_scale() == saved["scale"]
    assert resumed.iteration == 4


def test_the_precision_key_and_its_number_form(tmp_path):
    path = tmp_path / "options.yaml"
    path.write_text("precision: 32\n")  # YAML reads a number
    assert load_config(SegTrainConfig, path).precision == "32"
    assert load_config(SegTrainConfig, None, ["precision=bf16"]).precision == "bf16"
    assert load_config(SegTrainConfig).precision == "auto"
    with pytest.raises(ConfigError, match="option 'precision'"):
        load_config(SegTrainConfig, None, ["precision=64"])


def test_prediction_under_bf16_autocast_is_close_to_float32():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv3d(8, 3, 1)).eval()
    image = MetaTensor(torch.randn(1, 20, 16, 16))
    common = {
        "model": model,
        "preprocessing": Preprocessing(intensity="none", crop_foreground=False),
        "roi_size": (16, 16, 16),
        "channel_names": ["image"],
        "labels": {"background": 0, "a": 1, "b": 2},
    }
    full = SegmentationPredictor(**common)._infer(image, None, None)
    half = SegmentationPredictor(**common, precision="bf16")._infer(image, None, None)
    assert half.dtype == torch.float32  # probabilities leave the network in float32
    torch.testing.assert_close(half, full, rtol=0, atol=3e-2)  # bf16: 8 bits of mantissa
    assert (half - full).abs().max() > 0  # autocast really ran


def test_autocast_context_is_off_for_float32():
    with autocast("32", CPU):
        assert not torch.is_autocast_enabled("cpu")
    with autocast("bf16", CPU):
        assert torch.is_autocast_enabled("cpu")
