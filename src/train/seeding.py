"""Seeding: one call seeds every generator; a scope seeds temporarily and restores the previous states."""

from __future__ import annotations

import random
from contextlib import ContextDecorator
from types import TracebackType
from typing import Any, cast

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def get_rng_states() -> dict[str, Any]:
    """The states of every global generator, to restore later with :func:`set_rng_states`.

    Only tensors and plain Python values, so a checkpoint can hold them and be read back with
    ``torch.load(weights_only=True)``, which unpickles nothing else.
    """
    name, keys, position, has_gauss, cached_gaussian = cast(
        tuple[str, np.ndarray[Any, Any], int, int, float], np.random.get_state(legacy=True)
    )
    version, internal, gauss_next = cast(tuple[int, tuple[int, ...], float | None], random.getstate())
    states: dict[str, Any] = {
        # 625 words as one tensor: as 625 Python ints they cost a checkpoint ~1 ms of pickling
        "python": [version, torch.tensor(internal, dtype=torch.int64), gauss_next],
        "numpy": [
            str(name),
            torch.from_numpy(keys.astype(np.int64)),
            int(position),
            int(has_gauss),
            float(cached_gaussian),
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    version, internal, gauss_next = states["python"]
    if isinstance(internal, torch.Tensor):
        internal = internal.tolist()
    random.setstate((version, _as_tuples(internal), gauss_next))
    name, keys, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(states["torch"])
    if "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])


class scoped_seed(ContextDecorator):
    """Seed every generator inside a block (or a decorated function), then restore the states from before.

    Evaluation runs under it so that evaluating never shifts the random stream of training.
    ``None`` leaves the generators unseeded but still restores them afterwards.
    """

    def __init__(self, seed: int | None) -> None:
        self.seed = seed
        self._saved: list[dict[str, Any]] = []  # a stack, so one instance can be re-entered

    def __enter__(self) -> scoped_seed:
        self._saved.append(get_rng_states())
        if self.seed is not None:
            seed_everything(self.seed)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        set_rng_states(self._saved.pop())


def _as_tuples(value: Any) -> Any:
    """random.setstate wants tuples; a state that went through a file may come back with lists."""
    if isinstance(value, list | tuple):
        return tuple(_as_tuples(item) for item in cast(list[Any] | tuple[Any, ...], value))
    return value
