"""A trained segmentation run's fused network as one TorchScript or ONNX file, traced at the
run's window size (``visprior export torchscript | onnx``)."""

from __future__ import annotations

import os
from typing import Literal

import torch

from visprior.deploy.export import export_onnx, export_torchscript
from visprior.fileio import check_outputs
from visprior.seg.predict import load_predictor

__all__ = ["export_run_network"]


def export_run_network(
    run: str | os.PathLike,
    output: str | os.PathLike,
    file_format: Literal["torchscript", "onnx"],
    overwrite: bool = False,
) -> torch.Size:
    """Write the network of ``run`` (folder or checkpoint) to ``output``; returns the shape of
    the input it was traced with: one window of the run's channels."""
    check_outputs([output], [run], overwrite)
    predictor = load_predictor(run)
    example = torch.zeros(1, predictor.num_channels, *predictor.roi_size)
    exporter = {"torchscript": export_torchscript, "onnx": export_onnx}[file_format]
    exporter(predictor.model, example, output)
    return example.shape
