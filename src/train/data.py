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

    def __getitems__(self, indices: list[int]) -> list[ItemT]:
        """A whole batch's items in one call (the DataLoader prefers it): no per-item wrapper call."""
        return list(map(self.get_item, indices))

    def __len__(self) -> int:
        return self.length


def epoch_seed(seed: int, epoch: int, *more: int) -> int:
    """A well-mixed seed for one epoch of one run (neighbouring seeds give unrelated orders).

    ``more`` mixes in further numbers, e.g. a rank, so that each rank's DataLoader workers draw differently.
    """
    return int(np.random.SeedSequence([seed % 2**32, epoch, *more]).generate_state(1)[0])


class EpochSampler(Sampler[int]):
    """Indices of one epoch: a permutation that depends only on (seed, epoch), optionally from an offset.

    Unlike a sampler drawing from a running generator, the order of epoch ``e`` does not depend on how
    many epochs came before in this process, so a resumed run sees exactly the batches it would have seen,
    and skipping the first ``start`` indices skips already-trained batches without loading them.

    With ``world_size`` ranks, the permutation is padded to a multiple of ``world_size`` by repeating its
    start, and rank ``r`` takes every ``world_size``-th index from ``r``: the ranks' ``k``-th batches
    together are the ``k``-th batch of one process with their combined size. ``start`` counts this rank's
    indices.
    """

    def __init__(self, length: int, *, seed: int, shuffle: bool, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} is invalid for world_size={world_size}")
        self.length = length
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = epoch
        self.start = start

    def order(self) -> list[int]:
        """The whole epoch's order, the same on every rank."""
        if not self.shuffle:
            return list(range(self.length))
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        return torch.randperm(self.length, generator=generator).tolist()

    def shard(self) -> list[int]:
        """This rank's share of :meth:`order` (all of it in a single process)."""
        order = self.order()
        if self.world_size == 1:
            return order
        padded_length = self.shard_length * self.world_size
        while len(order) < padded_length:  # more than once only for fewer items than ranks
            order = order + order[: padded_length - len(order)]
        return order[self.rank :: self.world_size]

    @property
    def shard_length(self) -> int:
        return -(-self.length // self.world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.shard()[self.start :])

    def __len__(self) -> int:
        return max(0, self.shard_length - self.start)


def seed_worker(worker_id: int) -> None:
    """Give each DataLoader worker its own, reproducible Python and NumPy streams.

    torch seeds each worker from the loader's generator; we derive the other libraries from it.
    """
    del worker_id
    worker_seed = torch.initial_seed() % 2**32
    random.seed(worker_seed)
    np.random.seed(worker_seed)
