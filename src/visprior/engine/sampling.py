"""The order in which training samples are drawn, and the random state of their augmentation,
as functions of (seed, epoch, position): a run stopped anywhere, even by ``kill -9``, resumes
from its last checkpoint with the very batches and augmentations it would have seen.

Why not save the augmentation's random state instead: DataLoader workers each hold their own
copy of the transforms, and their states never reach the process that writes checkpoints.
Seeding every sample from (seed, epoch, dataset index) makes the augmentation the same with
any number of workers and processes, and leaves nothing to save but the epoch and position.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from visprior.engine.distributed import get_rank, get_world_size
from visprior.errors import find_cause

__all__ = [
    "SeededSamples",
    "TrainingSampler",
    "loader_generator",
    "sample_seed",
    "training_sampler",
]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of dataset item ``index`` in ``epoch`` (a 32-bit integer)."""
    entropy = [seed % 2**32, epoch, index]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


class TrainingSampler(DistributedSampler):
    """``DistributedSampler``'s shuffled order (a function of seed and epoch; each process of a
    ``torchrun`` job gets a disjoint share), which can start part-way into an epoch.

    Args:
        dataset: the training set.
        seed: the run's seed.
        with_seeds: yield ``(index, augmentation seed)`` pairs for a ``SeededSamples``
            dataset instead of plain indices.
    """

    def __init__(self, dataset: Dataset, seed: int, with_seeds: bool = False):
        super().__init__(
            dataset, num_replicas=get_world_size(), rank=get_rank(), shuffle=True, seed=seed
        )
        self.with_seeds = with_seeds
        self.start = 0

    def skip_samples(self, count: int) -> None:
        """The next pass starts at position ``count`` of its epoch's order (once)."""
        if count < 0:
            raise ValueError(f"cannot skip {count} samples")
        self.start = count

    def __iter__(self) -> Iterator[Any]:
        order = list(super().__iter__())
        start, self.start = self.start, 0
        for index in order[start:]:
            yield (index, sample_seed(self.seed, self.epoch, index)) if self.with_seeds else index

    def __len__(self) -> int:
        return max(super().__len__() - self.start, 0)


class SeededSamples(Dataset):
    """``dataset[index]`` with the random transforms seeded first: the item is a function of
    ``(index, seed)``, whichever process or worker draws it and whatever came before.

    Args:
        dataset: a dataset whose ``transform`` is a MONAI ``Compose`` (``CacheDataset``,
            ``Dataset``): its random transforms are seeded through ``set_random_state``.
    """

    def __init__(self, dataset: Dataset):
        if not hasattr(getattr(dataset, "transform", None), "set_random_state"):
            raise TypeError(
                f"{type(dataset).__name__} has no MONAI transform with set_random_state"
            )
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        self.dataset.transform.set_random_state(seed=seed)
        try:
            return self.dataset[index]
        except RuntimeError as error:
            # MONAI wraps a transform's error in "applying transform ..."; an input error
            # (a ValueError naming the case and file) is the message worth showing.
            cause = find_cause(error, ValueError)
            if cause is None:
                raise
            raise cause from error


def training_sampler(dataset: Dataset, seed: int, with_seeds: bool = False) -> TrainingSampler:
    """The sampler every training command uses (see ``TrainingSampler``)."""
    return TrainingSampler(dataset, seed, with_seeds)


def loader_generator(seed: int) -> torch.Generator:
    """A DataLoader's own generator: starting a pass (which draws the workers' base seed) then
    leaves the global torch random state alone, so it continues exactly across a resume."""
    return torch.Generator().manual_seed(seed)
