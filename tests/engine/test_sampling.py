"""Training order and augmentation as functions of (seed, epoch, position): what makes a
resumed run draw the very batches of an uninterrupted one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import CacheDataset, DataLoader
from monai.data import Dataset as MonaiDataset
from monai.transforms import Compose, Lambda, Lambdad, RandGaussianNoised, RandSpatialCropd
from torch.utils.data import DistributedSampler

from visprior.engine.sampling import (
    SeededSamples,
    TrainingSampler,
    loader_generator,
    sample_seed,
)


def test_the_order_is_distributed_samplers_and_can_start_part_way():
    data = list(range(10))
    sampler = TrainingSampler(data, seed=3)
    reference = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=3)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        reference.set_epoch(epoch)
        assert list(sampler) == list(reference)
    full = list(sampler)
    sampler.skip_samples(4)
    assert len(sampler) == 6
    assert list(sampler) == full[4:]
    assert list(sampler) == full  # the skip holds for one pass only
    with pytest.raises(ValueError, match="cannot skip -1 samples"):
        sampler.skip_samples(-1)


def test_each_sample_gets_its_own_seed_per_epoch():
    sampler = TrainingSampler(list(range(6)), seed=0, with_seeds=True)
    sampler.set_epoch(2)
    pairs = list(sampler)
    assert sorted(index for index, _ in pairs) == list(range(6))
    assert all(seed == sample_seed(0, 2, index) for index, seed in pairs)
    assert len({seed for _, seed in pairs}) == 6
    assert sample_seed(0, 2, 1) != sample_seed(0, 3, 1) != sample_seed(1, 2, 1)
    assert 0 <= sample_seed(-5, 0, 0) < 2**32  # negative run seeds are accepted


def _augmented_volumes() -> CacheDataset:
    volumes = [{"image": np.full((1, 8, 8, 8), float(i), dtype=np.float32)} for i in range(4)]
    transforms = Compose(
        [
            Lambdad("image", lambda x: x + 1),  # deterministic: cached
            RandSpatialCropd("image", roi_size=(4, 4, 4), random_size=False),
            RandGaussianNoised("image", prob=1.0, std=0.5),
        ]
    )
    return CacheDataset(volumes, transforms, progress=False)


def test_a_seeded_item_does_not_depend_on_what_was_drawn_before():
    samples = SeededSamples(_augmented_volumes())
    first = samples[(2, 77)]["image"]
    for key in [(0, 1), (1, 5), (3, 9)]:  # other draws advance the transforms' state
        samples[key]
    torch.testing.assert_close(samples[(2, 77)]["image"], first, rtol=0, atol=0)
    assert not torch.equal(samples[(2, 78)]["image"], first)
    assert len(samples) == 4


def test_workers_deliver_the_batches_of_a_single_process():
    """With loader workers, each holding its own copy of the transforms, the batches are the
    same: nothing about the augmentation lives in one process's random state."""

    def batches(workers: int) -> list[torch.Tensor]:
        data = _augmented_volumes()
        sampler = TrainingSampler(data, seed=5, with_seeds=True)
        sampler.set_epoch(1)
        loader = DataLoader(
            SeededSamples(data),
            batch_size=2,
            sampler=sampler,
            num_workers=workers,
            generator=loader_generator(5),
        )
        return [batch["image"] for batch in loader]

    for single, parallel in zip(batches(0), batches(2), strict=True):
        torch.testing.assert_close(single, parallel, rtol=0, atol=0)


def test_a_dataset_without_monai_transforms_is_named():
    with pytest.raises(TypeError, match="list has no MONAI transform"):
        SeededSamples([1, 2, 3])


def test_a_loader_generator_leaves_the_global_random_state_alone():
    loader = torch.utils.data.DataLoader(list(range(4)), generator=loader_generator(0))
    before = torch.get_rng_state()
    iter(loader)  # a new pass draws its base seed
    torch.testing.assert_close(torch.get_rng_state(), before, rtol=0, atol=0)


def test_an_input_error_comes_out_of_monais_wrapping():
    def refuse(item):
        raise ValueError(f"case {item['name']!r}: label.nii.gz has values 7")

    volumes = MonaiDataset(
        [{"name": "a"}], Compose([Lambda(refuse), RandGaussianNoised("x", prob=0.0)])
    )
    with pytest.raises(ValueError, match=r"^case 'a': label.nii.gz has values 7$"):
        SeededSamples(volumes)[(0, 1)]
