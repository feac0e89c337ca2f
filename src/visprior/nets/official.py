"""Load the authors' RepUX-Net and 3D UX-Net checkpoints into visprior's networks.

The authors' state dicts name the encoder ``repuxnet_3d.`` / ``uxnet_3d.`` with
``downsample_layers.0`` as the stem and ``norm0..3`` as the stage norms; the MONAI decoder
keys are the same as visprior's. Their RepUX-Net kernels already hold W * M (their training
code multiplies the stored weight in place), so they are deployed kernels: they load as is
into a deploy-structure network, and into a BFR network as W = kernel / M, which gives the
same effective kernel and lets BFR training continue from them.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from visprior.layers.frequency_prior import BFRDepthwiseConv
from visprior.nets.repuxnet import RepUXNet
from visprior.nets.uxnet import UXNet

__all__ = [
    "convert_official_state_dict",
    "extract_state_dict",
    "infer_official_config",
    "load_official_checkpoint",
]

_PREFIXES = {"repuxnet_3d.": "repuxnet", "uxnet_3d.": "uxnet"}
_RENAMES = (
    (re.compile(r"^downsample_layers\.0\."), "stem."),
    (re.compile(r"^downsample_layers\.(\d+)\."), lambda m: f"downsamples.{int(m[1]) - 1}."),
    (re.compile(r"^norm(\d+)\."), r"stage_norms.\1."),
)


def _describe_keys(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def extract_state_dict(checkpoint: Mapping[str, Any], source: str) -> dict[str, torch.Tensor]:
    """The state dict in a checkpoint: plain, under `state_dict`/`model`, or DDP-prefixed."""
    for wrapper in ("state_dict", "model", "model_state_dict"):
        inner = checkpoint.get(wrapper)
        if isinstance(inner, Mapping):
            checkpoint = inner
            break
    state = {
        (k[len("module.") :] if k.startswith("module.") else k): v for k, v in checkpoint.items()
    }
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(
            f"{source}: not a state dict, these entries are not tensors: {_describe_keys(bad)}."
        )
    return state


def _family(state: Mapping[str, torch.Tensor], source: str) -> str:
    found = {
        family for prefix, family in _PREFIXES.items() if any(k.startswith(prefix) for k in state)
    }
    if len(found) != 1:
        raise ValueError(
            f"{source} is not an authors' RepUX-Net or 3D UX-Net checkpoint: expected keys "
            f"starting with one of {sorted(_PREFIXES)}, got keys {_describe_keys(sorted(state))}."
        )
    return found.pop()


def infer_official_config(state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> dict:
    """visprior constructor arguments that reproduce an authors' state dict's shapes."""
    family = _family(state, source)
    prefix = f"{family}_3d."
    try:
        stem = state[f"{prefix}downsample_layers.0.0.weight"]
        widths = [stem.shape[0]] + [
            state[f"{prefix}downsample_layers.{i}.1.weight"].shape[0] for i in range(1, 4)
        ]
        block_key = re.compile(rf"{re.escape(prefix)}stages\.(\d+)\.(\d+)\.")
        blocks = {m.groups() for k in state if (m := block_key.match(k))}
        depths = [sum(stage == str(i) for stage, _ in blocks) for i in range(4)]
        config = {
            "in_channels": stem.shape[1],
            "out_channels": state["out.conv.conv.weight"].shape[0],
            "feature_size": widths,
            "depths": depths,
            "kernel_size": state[f"{prefix}stages.0.0.dwconv.weight"].shape[-1],
            "spatial_dims": stem.ndim - 2,
            "hidden_size": state["encoder5.layer.conv1.conv.weight"].shape[0],
            "res_block": "encoder5.layer.conv3.conv.weight" in state,
        }
    except KeyError as missing:
        raise ValueError(
            f"{source}: authors' {family} checkpoint is missing key {missing.args[0]!r} needed to "
            f"infer its configuration."
        ) from None
    return {"family": family, **config}


def convert_official_state_dict(
    state: Mapping[str, torch.Tensor], model: nn.Module, source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Rename an authors' state dict to ``model``'s keys and check keys and shapes.

    BFR layers of ``model`` receive ``kernel / M`` so that their effective kernel equals the
    authors' stored (deployed) kernel.

    Raises:
        ValueError: listing the missing and unexpected keys, or the mismatched shapes.
    """
    family = _family(state, source)
    prefix = f"{family}_3d."
    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(prefix):
            key = key[len(prefix) :]
            for pattern, replacement in _RENAMES:
                key = pattern.sub(replacement, key)
            key = "backbone." + key
        converted[key] = value

    for name, module in model.named_modules():
        if isinstance(module, BFRDepthwiseConv) and f"{name}.weight" in converted:
            converted[f"{name}.weight"] = converted[f"{name}.weight"] / module.frequency_map.cpu()
            converted[f"{name}.frequency_map"] = module.frequency_map

    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    if missing or unexpected:
        hint = (
            " (structural re-parameterization branches cannot be filled from a deployed "
            "kernel: build the model with inference_mode=True or block='bfr'/'plain')"
            if any(".dwconv.large." in k for k in missing)
            else ""
        )
        raise ValueError(
            f"{source} does not fit {type(model).__name__}{hint}. "
            f"Missing keys ({len(missing)}): {_describe_keys(missing) or 'none'}. "
            f"Unexpected keys ({len(unexpected)}): {_describe_keys(unexpected) or 'none'}."
        )
    mismatched = [
        f"{k}: checkpoint {tuple(converted[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if converted[k].shape != v.shape
    ]
    if mismatched:
        raise ValueError(
            f"{source} does not fit {type(model).__name__}, shape mismatch: "
            f"{'; '.join(mismatched[:12])}."
        )
    return converted


def load_official_checkpoint(
    checkpoint: str | os.PathLike | Mapping[str, Any],
    model: nn.Module | None = None,
    map_location: str | torch.device = "cpu",
) -> nn.Module:
    """Load an authors' RepUX-Net / 3D UX-Net checkpoint into a visprior network.

    Args:
        checkpoint: a path (read with ``torch.load(weights_only=True)``) or an already loaded
            state dict / checkpoint dict.
        model: the network to fill. By default one is built from the shapes in the
            checkpoint: a deploy-structure ``RepUXNet(inference_mode=True)`` or a ``UXNet``.
            A ``RepUXNet(block="bfr")`` is also accepted, for fine-tuning with BFR.
        map_location: where tensors are loaded.

    Returns:
        The model with the checkpoint's weights (in the mode it was given or built in).

    Example:
        >>> net = load_official_checkpoint("repuxnet_flare.pth").eval()
    """
    if isinstance(checkpoint, (str, os.PathLike)):
        source = os.fspath(checkpoint)
        if not os.path.isfile(source):
            raise FileNotFoundError(f"checkpoint file not found: {source}")
        try:
            loaded = torch.load(source, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as error:
            raise ValueError(
                f"{source}: refused to load: it holds objects other than tensors and plain "
                f"containers, and loading it could run code (torch.load(weights_only=True) "
                f"said: {str(error).splitlines()[0]})"
            ) from None
        if not isinstance(loaded, Mapping):
            raise ValueError(f"{source}: expected a state dict, got {type(loaded).__name__}.")
    else:
        source, loaded = "checkpoint", checkpoint
    state = extract_state_dict(loaded, source)
    if model is None:
        config = infer_official_config(state, source)
        family = config.pop("family")
        model = RepUXNet(**config, inference_mode=True) if family == "repuxnet" else UXNet(**config)
    model.load_state_dict(convert_official_state_dict(state, model, source))
    return model
