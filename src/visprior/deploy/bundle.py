"""A trained segmentation run as a MONAI bundle: what MONAI Label, MONAI Deploy and the Model
Zoo load.

The bundle holds the deployed network's weights (``models/model.pt``, a state dict) and a
TorchScript copy with the configs inside (``models/model.ts``), the configs
(``configs/metadata.json``, ``configs/inference.json``) and a generated
``docs/README.md``. ``inference.json`` runs under MONAI's own runner::

    python -m monai.bundle run --config_file configs/inference.json \\
        --meta_file configs/metadata.json --bundle_root BUNDLE \\
        --dataset_dir IMAGES --output_dir LABELS

and gives the labels ``visprior seg predict`` gives: the same preprocessing steps (MONAI's
transforms, visprior's where MONAI has none), the same Gaussian sliding window, and the same
way back to the input's grid. visprior is needed only as an importable package: the network
is built by ``visprior.get_model`` in its deployed form, with nothing left to fuse.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import monai
import numpy as np
import torch
from monai.data.torchscript_utils import save_net_with_metadata
from torch import nn

from visprior.checkpoint_io import load_checkpoint
from visprior.deploy.export import trace_deployable
from visprior.engine.checkpoint import find_checkpoint
from visprior.fileio import atomic_path, check_outputs
from visprior.nets.build import ModelSpec
from visprior.nets.registry import get_model
from visprior.seg.config import Preprocessing
from visprior.seg.postprocess import load_decision
from visprior.seg.predict import SegmentationPredictor, load_predictor
from visprior.seg.transforms import IMAGE_KEY, preprocessing_steps

__all__ = ["bundle_configs", "deployed_network_def", "export_bundle", "preprocessing_config"]

BUNDLE_VERSION = "0.1.0"
_MODALITIES = {"ct": "CT", "mri": "MR"}


def export_bundle(
    run: str | os.PathLike,
    output: str | os.PathLike,
    *,
    overwrite: bool = False,
    zip_file: bool = False,
) -> Path:
    """Write the MONAI bundle of a segmentation run (its best checkpoint, else its last).

    Args:
        run: a run folder or checkpoint file of ``visprior seg train``.
        output: the bundle folder to create.
        overwrite: replace an existing ``output`` (or zip file).
        zip_file: also write ``output.zip``, the folder as one archive.

    Returns:
        The bundle folder (or the zip file when ``zip_file``).

    Raises:
        FileExistsError: ``output`` exists and ``overwrite`` is false.
        ValueError: the run's network cannot be rebuilt in its deployed form.
    """
    output = Path(output)
    targets = [output, output.with_suffix(".zip")] if zip_file else [output]
    check_outputs(targets, [run], overwrite)
    checkpoint = find_checkpoint(run)
    state = load_checkpoint(checkpoint)
    predictor = load_predictor(checkpoint)
    network_def, deployed = deployed_network_def(ModelSpec.from_dict(state["model"]), predictor)
    largest = load_decision(run) or []
    metadata, inference = bundle_configs(predictor, network_def, deployed, state, largest)

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        _write_bundle(staging, deployed, predictor, metadata, inference, state, largest)
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not zip_file:
        return output
    archive = output.with_suffix(".zip")
    with atomic_path(archive) as temporary:
        made = shutil.make_archive(str(temporary), "zip", output.parent, output.name)
        Path(made).replace(temporary)
    return archive


def deployed_network_def(
    spec: ModelSpec, predictor: SegmentationPredictor
) -> tuple[dict[str, Any], nn.Module]:
    """``network_def`` for ``inference.json``: ``visprior.get_model`` with the run's arguments,
    ``inference_mode=True`` where the network has one (it then holds plain, fused convs); and
    that network holding the run's fused weights.

    Raises:
        ValueError: the network was cut by ``visprior simplify``, or its fused weights do not
            fit the network the config builds.
    """
    if spec.pruned:
        raise ValueError(
            f"model {spec.name!r} was cut by `visprior simplify`: its widths come from the "
            "weights, which a bundle's network_def cannot express"
        )
    kwargs = dict(spec.kwargs)
    if "inference_mode" in inspect.signature(type(predictor.model)).parameters:
        kwargs["inference_mode"] = True
    network = get_model(spec.name, **kwargs)
    fused = predictor.model.cpu().state_dict()
    try:
        network.load_state_dict(fused, strict=True)
    except RuntimeError as error:
        raise ValueError(
            f"model {spec.name!r}: the fused weights do not fit get_model({spec.name!r}, "
            f"**{kwargs}): {str(error).splitlines()[0]}"
        ) from None
    return {"_target_": "visprior.get_model", "name": spec.name, **kwargs}, network.eval()


def bundle_configs(
    predictor: SegmentationPredictor,
    network_def: dict[str, Any],
    network: nn.Module,
    state: dict[str, Any],
    largest_component: list[int],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``metadata.json`` and ``inference.json`` of a run's bundle."""
    overlap = predictor.overlap  # `seg predict`'s default, so that the two label maps agree
    postprocessing: list[dict[str, Any]] = [
        {
            "_target_": "visprior.deploy.transforms.ProbabilitiesToLabelsd",
            "keys": "pred",
            "transform": "@preprocessing",
            "orig_key": IMAGE_KEY,
        }
    ]
    if largest_component:
        postprocessing.append(
            {
                "_target_": "KeepLargestConnectedComponentd",
                "keys": "pred",
                "applied_labels": [int(c) for c in largest_component],
            }
        )
    postprocessing.append(
        {
            "_target_": "SaveImaged",
            "keys": "pred",
            "output_dir": "@output_dir",
            "output_postfix": "",
            "output_ext": ".nii.gz",
            "output_dtype": "$numpy.uint8",
            "resample": False,
            "separate_folder": False,
            "print_log": False,
        }
    )
    inference = {
        "imports": [
            "$import numpy",
            "$import torch",
            "$from visprior.deploy.transforms import case_datalist",
        ],
        "bundle_root": ".",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "ckpt_path": "$@bundle_root + '/models/model.pt'",
        "dataset_dir": "/workspace/data",
        "output_dir": "$@bundle_root + '/eval'",
        "num_channels": predictor.num_channels,
        "datalist": "$case_datalist(@dataset_dir, @num_channels)",
        "network_def": network_def,
        "network": "$@network_def.to(@device)",
        "preprocessing": preprocessing_config(predictor.preprocessing),
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": "@dataset",
            "batch_size": 1,
            "shuffle": False,
            "num_workers": 0,
        },
        "inferer": {
            "_target_": "SlidingWindowInferer",
            "roi_size": list(predictor.roi_size),
            "sw_batch_size": predictor.sw_batch_size,
            "overlap": overlap,
            "mode": "gaussian",
        },
        "postprocessing": {"_target_": "Compose", "transforms": postprocessing},
        "handlers": [
            {
                "_target_": "CheckpointLoader",
                "load_path": "@ckpt_path",
                "load_dict": {"model": "@network"},
                "map_location": "@device",
                "strict": True,
            }
        ],
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@device",
            "val_data_loader": "@dataloader",
            "network": "@network",
            "inferer": "@inferer",
            "postprocessing": "@postprocessing",
            "val_handlers": "@handlers",
            "amp": False,
        },
        "initialize": [],
        "run": ["$@evaluator.run()"],
    }
    divisor = getattr(network, "size_divisibility", 1)
    return _metadata(predictor, network_def, divisor, state), inference


def preprocessing_config(pre: Preprocessing) -> dict[str, Any]:
    """``seg predict``'s preprocessing of an image as a MONAI config ``Compose``: MONAI's
    transforms by their short names, visprior's by their full ones."""
    return {
        "_target_": "Compose",
        "transforms": [
            {"_target_": _target_name(cls), **kwargs}
            for cls, kwargs in preprocessing_steps(pre, keys=(IMAGE_KEY,))
        ],
    }


def _metadata(
    predictor: SegmentationPredictor,
    network_def: dict[str, Any],
    divisor: int,
    state: dict[str, Any],
) -> dict[str, Any]:
    rule = [f"{divisor}*n" if divisor > 1 else "*"] * len(predictor.roi_size)
    channels = ", ".join(predictor.channel_names)
    modality = _MODALITIES.get(predictor.preprocessing.intensity, channels)
    dataset = Path(str(state.get("config", {}).get("dataset", "the training dataset"))).name
    classes = sorted(predictor.labels.items(), key=lambda item: item[1])
    structures = [name for name, value in classes if value]
    return {
        "version": BUNDLE_VERSION,
        "changelog": {BUNDLE_VERSION: f"exported by visprior {_version('visprior')}"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": {
            "visprior": _version("visprior"),
            "nibabel": _version("nibabel"),
            "pytorch-ignite": _version("pytorch-ignite"),
        },
        "name": f"{network_def['name']} {dataset}",
        "task": f"Segmentation of {', '.join(structures)} ({dataset})",
        "description": (
            f"visprior `{network_def['name']}` trained with `visprior seg train` on {dataset} "
            f"({state.get('iteration', '?')} iterations); sliding-window inference on "
            f"{' x '.join(map(str, predictor.roi_size))} windows, labels written on each "
            "input's own grid."
        ),
        "authors": "visprior seg train",
        "copyright": "the run's owner",
        "data_source": dataset,
        "data_type": "nibabel",
        "image_classes": f"{predictor.num_channels} channel(s): {channels}",
        "label_classes": ", ".join(f"{value} is {name}" for name, value in classes),
        "pred_classes": f"{predictor.num_classes} channels of logits, one per class",
        "eval_metrics": {"validation_mean_dice": _finite(state.get("best_metric"))},
        "intended_use": "Research use only; not for clinical decisions.",
        "network_data_format": {
            "inputs": {
                IMAGE_KEY: {
                    "type": "image",
                    "format": "magnitude",
                    "modality": modality,
                    "num_channels": predictor.num_channels,
                    "spatial_shape": rule,
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": True,
                    "channel_def": {str(i): n for i, n in enumerate(predictor.channel_names)},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": predictor.num_classes,
                    "spatial_shape": rule,
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": True,
                    "channel_def": {str(value): name for name, value in classes},
                }
            },
        },
    }


def _write_bundle(
    folder: Path,
    network: nn.Module,
    predictor: SegmentationPredictor,
    metadata: dict[str, Any],
    inference: dict[str, Any],
    state: dict[str, Any],
    largest_component: list[int],
) -> None:
    (folder / "configs").mkdir()
    (folder / "models").mkdir()
    (folder / "docs").mkdir()
    for name, values in (("metadata.json", metadata), ("inference.json", inference)):
        (folder / "configs" / name).write_text(json.dumps(values, indent=2) + "\n")
    torch.save(network.state_dict(), folder / "models" / "model.pt")
    example = torch.zeros(1, predictor.num_channels, *predictor.roi_size)
    traced = trace_deployable(network, example)
    save_net_with_metadata(
        traced,
        str(folder / "models" / "model.ts"),
        meta_values=metadata,
        more_extra_files={"inference.json": json.dumps(inference).encode()},
    )
    (folder / "docs" / "README.md").write_text(
        _readme(metadata, inference, predictor, state, largest_component)
    )


def _readme(
    metadata: dict[str, Any],
    inference: dict[str, Any],
    predictor: SegmentationPredictor,
    state: dict[str, Any],
    largest_component: list[int],
) -> str:
    pre = predictor.preprocessing
    dice = metadata["eval_metrics"]["validation_mean_dice"]
    shown = f"{dice:.4f}" if dice is not None else "not measured"
    classes = sorted(predictor.labels.items(), key=lambda item: item[1])
    rows = "\n".join(f"| {value} | {name} |" for name, value in classes)
    largest = ", ".join(str(c) for c in largest_component) or "none"
    spacing = " x ".join(f"{s:g}" for s in pre.spacing) if pre.spacing else "the input's own"
    return f"""# {metadata["name"]}

{metadata["task"]}. {metadata["description"]}

## Labels

| value | structure |
|---|---|
{rows}

## Training

- Network: `{inference["network_def"]["name"]}` built by `visprior.get_model` in its deployed
  form (`network_def` in `configs/inference.json`).
- Iterations: {state.get("iteration", "?")}; best validation at iteration
  {state.get("best_iteration", "?")}.
- Validation mean foreground Dice: **{shown}** (the run's own validation cases).
- Input: {", ".join(predictor.channel_names)}; reoriented to {pre.orientation}, resampled to
  {spacing} mm, cropped to the foreground, intensity preset `{pre.intensity}`.
- Sliding window: {" x ".join(map(str, predictor.roi_size))} voxels, overlap
  {inference["inferer"]["overlap"]}, Gaussian weighting.
- Largest connected component kept for classes: {largest} (chosen on validation).

## Running it

```bash
python -m monai.bundle run --config_file configs/inference.json \\
    --meta_file configs/metadata.json --bundle_root . \\
    --dataset_dir IMAGES --output_dir LABELS
```

`IMAGES` holds NIfTI files named as nnU-Net names them (`{{case}}_0000.nii.gz`, one file per
channel), or one file per case for a single-channel model; `LABELS` receives
`{{case}}.nii.gz` on each input's grid. Needs `visprior`, `monai`, `nibabel` and
`pytorch-ignite` installed. `models/model.ts` is the same network as TorchScript, with
`metadata.json` and `inference.json` inside (`monai.data.load_net_with_metadata`).

{metadata["intended_use"]}
"""


def _target_name(cls: type) -> str:
    """MONAI's transforms by their short names, as MONAI's own bundles write them."""
    if cls.__module__.startswith("monai."):
        return cls.__name__
    return f"{cls.__module__}.{cls.__qualname__}"


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None
