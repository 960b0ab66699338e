"""Where tensors live: checking the configured device and moving batches onto it."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar, cast

import torch

T = TypeVar("T")

DTYPES_BY_NAME: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}


def resolve_device(name: str) -> torch.device:
    """The torch device for a config's ``device`` string, or a ValueError if this machine lacks it."""
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"training.device={name!r} is unavailable: CUDA is not available on this machine")
        index = device.index  # None for plain "cuda"
        if index is not None and index >= torch.cuda.device_count():  # pyright: ignore[reportUnnecessaryComparison]
            raise ValueError(
                f"training.device={name!r} is unavailable: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"training.device={name!r} is unavailable: MPS is not available on this machine")
    return device


def resolve_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES_BY_NAME[name]
    except KeyError:
        raise ValueError(f"training.dtype={name!r} is invalid: expected one of {', '.join(DTYPES_BY_NAME)}") from None


def move_to_device(batch: T, device: torch.device, *, channels_last: bool = False) -> T:
    """Move every tensor inside a batch (tensors, dataclasses, mappings, lists, tuples) to ``device``.

    Tensors already there (and, with ``channels_last``, already in that order) are returned as they are,
    so a batch built on the device costs nothing; for the CPU, the batch is returned as it is (the
    DataLoader builds it there). ``channels_last`` puts 4-D floating-point tensors
    (images) in channels-last memory order, the order of models converted by ``training.channels_last``.
    """
    if device.type == "cpu" and not channels_last:
        return batch  # the DataLoader's batches are on the CPU already: nothing to walk through each step
    return cast(T, _move(batch, device, channels_last))


def _move(value: Any, device: torch.device, channels_last: bool) -> Any:
    if isinstance(value, torch.Tensor):
        if value.device != device:
            value = value.to(device, non_blocking=True)
        if channels_last and value.dim() == 4 and value.is_floating_point():
            value = value.contiguous(memory_format=torch.channels_last)
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        changes = {f.name: _move(getattr(value, f.name), device, channels_last) for f in fields if f.init}
        return dataclasses.replace(value, **changes)
    if isinstance(value, dict):
        moved = copy.copy(cast(dict[Any, Any], value))  # keeps the dict's type (OrderedDict, defaultdict, ...)
        moved.update((key, _move(item, device, channels_last)) for key, item in moved.items())
        return moved
    if isinstance(value, Mapping):
        return {key: _move(item, device, channels_last) for key, item in cast(Mapping[Any, Any], value).items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a NamedTuple
        return type(value)(*(_move(item, device, channels_last) for item in cast(tuple[Any, ...], value)))
    if isinstance(value, list | tuple):
        sequence = cast(list[Any] | tuple[Any, ...], value)
        return type(sequence)(_move(item, device, channels_last) for item in sequence)
    return value
