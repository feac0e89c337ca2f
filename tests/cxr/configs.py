"""The small CXR training config the pipeline tests share: 64 px, batch 8, no workers."""

from __future__ import annotations

from visprior.cxr.config import CXRTrainConfig


def small_cxr_config(dataset, output, **changes) -> CXRTrainConfig:
    values = dict(
        dataset=str(dataset),
        output=str(output),
        model="ggcam_resnet18",
        image_size=64,
        gaze_sigma_px=4.0,
        epochs=2,
        batch_size=8,
        lr=1e-3,
        num_workers=0,
    )
    values.update(changes)
    return CXRTrainConfig(**values)
