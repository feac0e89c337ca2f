"""A tiny training run on the shared engine, for the distributed tests; run it alone or under
``python -m torch.distributed.run --standalone --nproc_per_node N ddp_worker.py RUN``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from visprior.engine.distributed import exit_distributed, get_world_size
from visprior.engine.sampling import training_sampler
from visprior.engine.trainer import Trainer, TrainerSettings, start_run

SAMPLES = 32


class RegressionTask:
    def __init__(self, data: TensorDataset, step_seconds: float):
        self.data, self.step_seconds = data, step_seconds

    def training_loss(self, model: nn.Module, batch) -> torch.Tensor:
        time.sleep(self.step_seconds)  # room for a test to act mid-run
        inputs, targets = batch
        return nn.functional.mse_loss(model(inputs), targets)

    def validate(self, model: nn.Module) -> dict[str, float]:
        inputs, targets = self.data.tensors
        return {"val_loss": float(nn.functional.mse_loss(model(inputs), targets))}

    def checkpoint_extras(self) -> dict:
        return {}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path)
    parser.add_argument("--global-batch", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--val-every", type=int, default=4)
    parser.add_argument("--step-seconds", type=float, default=0.0)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()

    device = start_run(args.run, args.resume, seed=0, deterministic=True, device="cpu")
    generator = torch.Generator().manual_seed(1)
    data = TensorDataset(
        torch.randn(SAMPLES, 2, 8, 8, generator=generator),
        torch.randn(SAMPLES, 1, 8, 8, generator=generator),
    )
    # no BatchNorm: a process's share of the batch then gives exactly its share of the gradient
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))
    loader = DataLoader(
        data,
        batch_size=args.global_batch // get_world_size(),
        sampler=training_sampler(data, seed=0),
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    settings = TrainerSettings(
        iterations=args.iterations, val_every=args.val_every, metric="val_loss", mode="min"
    )
    task = RegressionTask(data, args.step_seconds)
    Trainer(model, optimizer, task, loader, args.run, settings, device).fit(resume=args.resume)
    exit_distributed(0)


if __name__ == "__main__":
    main()
