"""Shared test fixtures: seeding and the reference fixtures made with the authors' code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings
from torch import nn

# Property tests draw the same examples on every run (a CI failure reproduces locally), and
# file-writing examples may be slow on a loaded machine.
settings.register_profile(
    "visprior",
    derandomize=True,
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile("visprior")

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(
    os.environ.get("VISPRIOR_REFERENCE_DIR", REPO_ROOT.parent / "shared" / "reference")
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """Folder of the authors'-code fixtures; required in CI, skipped elsewhere if absent."""
    if not REFERENCE_DIR.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"reference fixtures not found at {REFERENCE_DIR}")
        pytest.skip(f"reference fixtures not found at {REFERENCE_DIR} (set VISPRIOR_REFERENCE_DIR)")
    return REFERENCE_DIR


def randomize_batchnorm(model: nn.Module, generator_seed: int = 1234) -> nn.Module:
    """Give every BatchNorm non-trivial affine parameters and running statistics."""
    gen = torch.Generator().manual_seed(generator_seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(n, generator=gen) * 0.2)
                module.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
                module.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
    return model


def pytest_configure(config) -> None:
    # the measured conv path's disk cache goes to a folder of this run, never the user's home
    import tempfile

    os.environ["VISPRIOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="visprior-test-cache-")
