"""Synthetic rectangle masks, generated on the fly: item ``i`` is a pure function of ``(seed, i)``.

Being a pure function of its index, the dataset needs no file, reproduces exactly, and loads in parallel
DataLoader workers without any shared generator state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Batch:
    image: torch.Tensor
    """[N, 1, S, S] binary masks as floats in {0, 1}."""


def rectangle_mask(size: int, seed: int, index: int) -> torch.Tensor:
    """A [1, size, size] mask: one axis-aligned rectangle of random size and place, inverted half the time."""
    rng = np.random.default_rng([seed % 2**32, index])
    height, width = (int(v) for v in rng.integers(1, size + 1, size=2))
    top = int(rng.integers(0, size - height + 1))
    left = int(rng.integers(0, size - width + 1))
    mask = torch.zeros(1, size, size)
    mask[:, top : top + height, left : left + width] = 1.0
    return 1.0 - mask if rng.random() < 0.5 else mask


class RectangleMasks:
    """``length`` masks of ``size`` x ``size`` pixels drawn from the stream named by ``seed``."""

    def __init__(self, size: int, length: int, seed: int) -> None:
        self.size = size
        self.length = length
        self.seed = seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Batch:
        if not 0 <= index < self.length:
            raise IndexError(f"mask index {index} is out of range for {self.length} masks")
        return Batch(image=rectangle_mask(self.size, self.seed, index).unsqueeze(0))


def collate(items: list[Batch]) -> Batch:
    return Batch(image=torch.cat([item.image for item in items]))
