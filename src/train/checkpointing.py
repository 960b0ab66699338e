"""Model weights on disk: safetensors (or tensor-only torch files), never unpickling arbitrary objects."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a state dict into ``model`` (strictly: every key and shape must match)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model checkpoint {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        state = load_file(path)
    else:
        # weights_only refuses anything but tensors and plain containers: no code runs while loading.
        state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0]
        raise ValueError(f"model checkpoint {str(path)!r} does not fit {type(model).__name__}: {first_line}") from None


def save_weights(model: nn.Module, path: str | Path) -> None:
    """Write ``model``'s weights as safetensors, atomically (a temp file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # safetensors refuses tensors that share memory; contiguous CPU copies are always safe to write.
    state = {key: value.detach().to("cpu").contiguous().clone() for key, value in model.state_dict().items()}
    descriptor, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(descriptor)
    try:
        save_file(state, temp_name)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
