"""Export a network for deployment: fuse it, then write TorchScript or ONNX atomically."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from visprior.fileio import atomic_path
from visprior.layers.conv_algorithm import conv_algorithm
from visprior.reparam import reparameterize_model

__all__ = ["export_onnx", "export_torchscript", "trace_deployable"]


def _deployable(model: nn.Module) -> nn.Module:
    return reparameterize_model(model).eval()


# Exported graphs hold plain convolutions, which every runtime supports and optimises; the
# FFT path is a PyTorch training-time speed-up.
_EXPORT_ALGORITHM = "direct"


def export_torchscript(
    model: nn.Module, example_input: torch.Tensor, path: str | os.PathLike
) -> torch.jit.ScriptModule:
    """Fuse ``model`` (a copy), trace it on ``example_input`` and save it to ``path``.

    The traced module runs without visprior installed: ``torch.jit.load(path)``.
    """
    traced = trace_deployable(model, example_input)
    with atomic_path(path) as tmp:
        traced.save(str(tmp))
    return traced


def trace_deployable(model: nn.Module, example_input: torch.Tensor) -> torch.jit.ScriptModule:
    """``model`` fused (a copy) and traced on ``example_input`` with plain convolutions, so
    that no FFT matrices built for one input size end up in the trace."""
    fused = _deployable(model)
    with torch.no_grad(), warnings.catch_warnings(), conv_algorithm(_EXPORT_ALGORITHM):
        # Input checks compare shapes in Python; a trace fixes the shapes, so they only warn.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return torch.jit.trace(fused, example_input)


def export_onnx(model: nn.Module, example_input: torch.Tensor, path: str | os.PathLike) -> Path:
    """Fuse ``model`` (a copy) and export it to ONNX at ``path`` for the example's shape.

    Input and output are named ``image`` and ``logits``; run it with onnxruntime.
    """
    fused = _deployable(model)
    with conv_algorithm(_EXPORT_ALGORITHM):
        program = torch.onnx.export(
            fused,
            (example_input,),
            dynamo=True,
            verbose=False,
            input_names=["image"],
            output_names=["logits"],
        )
    with atomic_path(path) as tmp:
        # One self-contained file: the weights are stored inside the model proto.
        program.save(str(tmp), external_data=False)
    return Path(path)
