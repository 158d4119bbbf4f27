"""The training data stream: which samples each process sees, in which order, with which randomness.

Order: a seeded shuffle per epoch split over the processes (DistributedSampler, drop_last),
positioned at any step, so a resumed run continues with the very batch it would have drawn.
Randomness: each sample's augmentation is seeded from (seed, epoch, index), so it does not
depend on the loader worker that decodes it, on the number of workers, or on a resume.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from demt_exp.engine.rng import seeded
from demt_exp.engine.signals import ignore_interrupt

if TYPE_CHECKING:
    from demt_exp.engine.distributed import DistInfo

EpochIndex = tuple[int, int]


class EpochSampler(DistributedSampler):
    """DistributedSampler yielding (epoch, index) pairs, whose epoch can start part-way."""

    def __init__(self, dataset: Dataset, rank: int, world_size: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.skip = 0

    def __iter__(self) -> Iterator[EpochIndex]:  # type: ignore[override]
        indices = list(super().__iter__())
        skip, self.skip = self.skip, 0
        return iter([(self.epoch, index) for index in indices[skip:]])


class SeededSamples(Dataset):
    """`dataset[index]` computed with every RNG seeded from (seed, epoch, index)."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: EpochIndex) -> Any:
        epoch, index = key
        with seeded([self.seed, epoch, index]):
            return self.dataset[index]


def batches_forever(loader: DataLoader, start_step: int) -> Iterator[dict[str, Any]]:
    """Endless stream of batches, one epoch after another, positioned at `start_step`."""
    sampler = loader.sampler
    if not isinstance(sampler, EpochSampler):
        raise TypeError(f"batches_forever needs a loader over an EpochSampler, got {type(sampler).__name__}")
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ValueError(
            f"the training set ({len(sampler.dataset)} samples) is smaller than one batch per process "
            f"({loader.batch_size}); lower trainer.batch_size or enlarge the dataset"
        )
    epoch, offset = divmod(start_step, steps_per_epoch)
    while True:
        sampler.set_epoch(epoch)
        sampler.skip = offset * (loader.batch_size or 1)
        yield from loader
        epoch, offset = epoch + 1, 0


def per_process_batch(total: int, world_size: int) -> int:
    """The configured batch is the total over all processes, split evenly (SPEC 5.1)."""
    if total % world_size:
        raise ValueError(f"trainer.batch_size={total} is not divisible by the {world_size} processes")
    return total // world_size


def train_loader(dataset: Dataset, info: DistInfo, trainer: DictConfig) -> DataLoader:
    """Shuffled, drop-last loader over this process's share of every epoch, each sample seeded
    from (seed, epoch, index), so workers can persist and their number does not matter."""
    workers = int(trainer.num_workers)
    seed = int(trainer.seed)
    return DataLoader(
        SeededSamples(dataset, seed),
        batch_size=per_process_batch(int(trainer.batch_size), info.world_size),
        sampler=EpochSampler(dataset, info.rank, info.world_size, seed),
        num_workers=workers,
        drop_last=True,
        pin_memory=info.device.type == "cuda",
        persistent_workers=workers > 0,
        worker_init_fn=ignore_interrupt,
        generator=torch.Generator(),  # worker base seeds come from here, never from the global RNG
    )
