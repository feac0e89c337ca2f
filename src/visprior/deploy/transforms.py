"""The steps of a MONAI bundle that MONAI has no equivalent for: the case list in nnU-Net's
file naming, and ``seg predict``'s way back from the network's logits to a label map on the
input's own grid."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import torch
from monai.data import MetaTensor
from monai.transforms import Invertd, MapTransform

from visprior.seg.predict import case_name, collect_cases, invert_probabilities

__all__ = ["ProbabilitiesToLabelsd", "case_datalist"]


def case_datalist(folder: str | os.PathLike, num_channels: int) -> list[dict[str, Any]]:
    """One ``{"image": file or per-channel files, "case": name}`` per case of ``folder``,
    grouped by ``seg predict``'s rule: ``{case}_{XXXX}.nii.gz`` per channel, or a lone file
    per case."""
    cases = collect_cases([Path(folder)], num_channels)
    return [
        {"image": [str(p) for p in paths] if len(paths) > 1 else str(paths[0]), "case": case}
        for case, paths in cases.items()
    ]


class ProbabilitiesToLabelsd(MapTransform):
    """The network's logits on the preprocessed grid (``keys``) become the uint8 label map on
    the input's grid, as ``seg predict`` makes it: softmax, the preprocessing's spatial steps
    undone on the probabilities (see :func:`visprior.seg.predict.invert_probabilities`), argmax.

    The result is a ``MetaTensor`` ``(1, *input shape)`` with the input's affine and the file
    name ``{case}.nii.gz``, ready for MONAI's ``SaveImaged``.

    Args:
        keys: the logits, ``(C, ...)``.
        transform: the preprocessing that made ``orig_key`` (a ``Compose``).
        orig_key: the preprocessed image, whose applied operations are undone.
    """

    def __init__(self, keys: Any, transform: Any, orig_key: str = "image") -> None:
        super().__init__(keys)
        self.orig_key = orig_key
        self.invert = Invertd(
            keys="pred", transform=transform, orig_keys="image", nearest_interp=False
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        result = dict(data)
        image = result[self.orig_key]
        meta = image.meta
        source = meta["filename_or_obj"]
        source = source[0] if isinstance(source, (list, tuple)) else source
        case = str(result.get("case") or case_name(Path(source)))
        affine = torch.as_tensor(meta["original_affine"]).double().numpy()
        spatial = [int(s) for s in torch.as_tensor(meta["spatial_shape"]).reshape(-1)[:3]]
        for key in self.key_iterator(result):
            logits = torch.as_tensor(result[key]).detach().cpu().float()
            probabilities = torch.softmax(logits, dim=0)
            labels, _ = invert_probabilities(
                probabilities, image, self.invert, spatial, affine, case, False
            )
            result[key] = MetaTensor(
                torch.from_numpy(labels.astype("int64"))[None],
                affine=torch.as_tensor(affine),
                meta={
                    "filename_or_obj": f"{case}.nii.gz",
                    "original_affine": affine,
                    "spatial_shape": spatial,
                },
            )
        return result
