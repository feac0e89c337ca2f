"""Networks at other widths than they were built with: a network cut down by ``visprior
simplify`` is saved as its architecture's name and keyword arguments plus a ``pruned`` mark,
and rebuilt here from the shapes of its saved tensors.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from visprior.nets.ggcam import CAMHead

__all__ = ["fit_to_state_dict", "residual_blocks", "set_module"]


def residual_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """torchvision's BasicBlock / Bottleneck modules, by name."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, (BasicBlock, Bottleneck))
    ]


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule called ``name`` (dotted, as ``named_modules`` gives it)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def fit_to_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Reshape ``model``'s layers (built at its original widths) to ``state_dict``'s tensors, and
    turn the residual blocks that ``state_dict`` lacks into ``nn.Identity``; then load it.

    Raises:
        RuntimeError: the tensors still do not fit (load_state_dict's message).
    """
    for name, _ in residual_blocks(model):
        if not any(key.startswith(f"{name}.") for key in state_dict):
            set_module(model, name, nn.Identity())
    for name, module in list(model.named_modules()):
        weight = state_dict.get(f"{name}.weight" if name else "weight")
        if weight is None:
            continue
        if isinstance(module, nn.Conv2d) and weight.shape != module.weight.shape:
            depthwise = module.groups == module.in_channels == module.out_channels > 1
            groups = weight.shape[0] if depthwise else module.groups
            replacement = nn.Conv2d(
                weight.shape[1] * groups,
                weight.shape[0],
                module.kernel_size,
                module.stride,
                module.padding,
                module.dilation,
                groups,
                module.bias is not None,
                module.padding_mode,
            )
            set_module(model, name, replacement)
        elif isinstance(module, nn.BatchNorm2d) and weight.shape != module.weight.shape:
            replacement = nn.BatchNorm2d(
                weight.shape[0],
                module.eps,
                module.momentum,
                module.affine,
                module.track_running_stats,
            )
            set_module(model, name, replacement)
        elif isinstance(module, nn.Linear) and weight.shape != module.weight.shape:
            replacement = nn.Linear(weight.shape[1], weight.shape[0], module.bias is not None)
            set_module(model, name, replacement)
        elif isinstance(module, CAMHead) and weight.shape != module.weight.shape:
            module.weight = nn.Parameter(torch.empty_like(weight))
            module.in_channels = weight.shape[1]
    model.load_state_dict(state_dict)
    return model
