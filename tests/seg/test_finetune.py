"""Fine-tuning from the authors' RepUX-Net checkpoint with a new label set."""

from __future__ import annotations

import torch

from visprior import get_model
from visprior.seg.train import initialize_from


def test_authors_checkpoint_initialises_bfr_training_with_a_new_head(reference_dir, tmp_path):
    reference = torch.load(reference_dir / "official_repuxnet_small.pt", weights_only=True)
    path = tmp_path / "authors.pth"
    torch.save({"state_dict": reference["state_dict"]}, path)  # as the authors' runs save it
    kwargs = {
        "in_channels": 1,
        "out_channels": 6,  # the fixture has 3 classes
        "feature_size": [8, 16, 32, 64],
        "hidden_size": 128,
    }
    model = get_model("repuxnet", **kwargs)
    fresh_head = model.state_dict()["out.conv.conv.weight"].clone()
    start = initialize_from(model, path, "repuxnet", {"name": "repuxnet", "kwargs": kwargs})

    assert start.fresh == ["out.conv.conv.bias", "out.conv.conv.weight"]
    state = model.state_dict()
    torch.testing.assert_close(state["out.conv.conv.weight"], fresh_head, rtol=0, atol=0)
    # The authors' kernels hold W * M: BFR training starts from W = kernel / M.
    block = model.backbone.stages[0][0].dwconv
    kernel = reference["state_dict"]["repuxnet_3d.stages.0.0.dwconv.weight"]
    torch.testing.assert_close(block.weight * block.frequency_map, kernel, rtol=1e-5, atol=1e-7)
