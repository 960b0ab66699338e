"""The training data pipeline: the Trainer's items as a Dataset, and a sampler that can resume mid-epoch."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

ItemT = TypeVar("ItemT")


class ItemDataset(Dataset[ItemT], Generic[ItemT]):
    """Exposes ``get_item`` / ``dataset_length`` of a Trainer as a map-style torch Dataset."""

    def __init__(self, get_item: Callable[[int], ItemT], length: int) -> None:
        self.get_item = get_item
        self.length = length

    def __getitem__(self, index: int) -> ItemT:
        return self.get_item(index)

    def __len__(self) -> int:
        return self.length


def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed seed for one epoch of one run (neighbouring seeds give unrelated orders)."""
    return int(np.random.SeedSequence([seed % 2**32, epoch]).generate_state(1)[0])


class EpochSampler(Sampler[int]):
    """Indices of one epoch: a permutation that depends only on (seed, epoch), optionally from an offset.

    Unlike a sampler drawing from a running generator, the order of epoch ``e`` does not depend on how
    many epochs came before in this process, so a resumed run sees exactly the batches it would have seen,
    and skipping the first ``start`` indices skips already-trained batches without loading them.
    """

    def __init__(self, length: int, *, seed: int, shuffle: bool) -> None:
        self.length = length
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = epoch
        self.start = start

    def order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.length))
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        return torch.randperm(self.length, generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.order()[self.start :])

    def __len__(self) -> int:
        return max(0, self.length - self.start)


def seed_worker(worker_id: int) -> None:
    """Give each DataLoader worker its own, reproducible Python and NumPy streams.

    torch seeds each worker from the loader's generator; we derive the other libraries from it.
    """
    del worker_id
    worker_seed = torch.initial_seed() % 2**32
    random.seed(worker_seed)
    np.random.seed(worker_seed)
