"""Weights and checkpoints on disk: safetensors and tensor-only torch files, never arbitrary pickles.

A checkpoint is a directory ``step_<8 digits>/`` holding

- ``<model>.safetensors`` for every registered model,
- ``trainer_state.pt``: optimizer, LR schedule, clock (hence the position in the epoch), RNG states of
  Python, NumPy and torch, callback states and the latest evaluation metrics, read back with
  ``torch.load(weights_only=True)``,
- ``meta.json``: the Trainer class, the step, every weight's shape, the number of ranks that trained
  (``world_size``) and the config, checked before loading.

It is written under a temporary name and renamed into place, so a process killed mid-write leaves the
previous checkpoints untouched and at worst a ``.tmp-*`` directory that loading ignores. Checkpoints are
only taken at update boundaries, so no accumulated gradient is ever pending in one. The order of each
epoch's batches is a pure function of (seed, epoch) and needs no saved generator state.

In distributed training rank 0 writes the checkpoint: every rank holds the same weights, optimizer state and
(all seeded alike) RNG states. Each rank's batches depend on the number of ranks, so a checkpoint resumes
only on as many ranks as wrote it; another number is refused with :class:`CheckpointMismatch`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from train.files import atomic_path, atomic_write_text

if TYPE_CHECKING:
    from train.trainer import Trainer

STATE_FILE = "trainer_state.pt"
META_FILE = "meta.json"
FORMAT_VERSION = 1
_NAME = re.compile(r"^step_(\d{8,})$")


class CheckpointMismatch(ValueError):
    """A checkpoint that does not fit the trainer it would be loaded into."""


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


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share memory; contiguous CPU copies are always safe to write.
    return {key: value.detach().to("cpu").contiguous().clone() for key, value in model.state_dict().items()}


def save_weights(model: nn.Module, path: str | Path) -> None:
    """Write ``model``'s weights as safetensors, atomically (a temp file renamed into place)."""
    with atomic_path(path) as temp_path:
        save_file(_cpu_state(model), str(temp_path))


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Complete checkpoints in ``directory``, oldest first (temporary and foreign entries are ignored)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [
        path
        for path in directory.iterdir()
        if _NAME.match(path.name) and (path / STATE_FILE).is_file() and (path / META_FILE).is_file()
    ]
    return sorted(found, key=lambda path: int(path.name.removeprefix("step_")))


def latest_checkpoint(directory: str | Path) -> Path | None:
    checkpoints = list_checkpoints(directory)
    return checkpoints[-1] if checkpoints else None


def _config_as_data(config: Any) -> Any:
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def save_checkpoint(trainer: Trainer[Any, Any], directory: str | Path) -> Path | None:
    """Write the trainer's complete state as ``directory/step_<step>``.

    Returns the new checkpoint, or None when one for this step exists already (it is kept as is: the
    trainer cannot have changed without its step advancing, except by a final evaluation, which a resumed
    run repeats identically).
    """
    directory = Path(directory)
    target = directory / checkpoint_name(trainer.clock.step)
    if target.exists():
        return None
    directory.mkdir(parents=True, exist_ok=True)
    temporary = directory / f".tmp-{target.name}-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    shapes: dict[str, dict[str, list[int]]] = {}
    for name, model in trainer.models.items():
        state = _cpu_state(model)
        shapes[name] = {key: list(value.shape) for key, value in state.items()}
        save_file(state, str(temporary / f"{name}.safetensors"))
    torch.save(trainer.state_dict(), temporary / STATE_FILE)
    meta = {
        "format": FORMAT_VERSION,
        "trainer": f"{type(trainer).__module__}.{type(trainer).__qualname__}",
        "step": trainer.clock.step,
        "world_size": trainer.distributed.world_size,
        "models": shapes,
        "config": _config_as_data(trainer.config),
    }
    (temporary / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    for path in temporary.iterdir():  # durable bytes before the rename makes them visible
        with open(path, "rb") as written:
            os.fsync(written.fileno())
    os.replace(temporary, target)
    _fsync_directory(directory)
    return target


def read_meta(checkpoint: str | Path) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads((Path(checkpoint) / META_FILE).read_text(encoding="utf-8")))


def check_compatible(trainer: Trainer[Any, Any], checkpoint: str | Path) -> None:
    """Raise :class:`CheckpointMismatch` unless the checkpoint's trainer, models and shapes fit ``trainer``."""
    checkpoint = Path(checkpoint)
    meta = read_meta(checkpoint)
    here = f"{type(trainer).__module__}.{type(trainer).__qualname__}"
    if meta["trainer"] != here:
        raise CheckpointMismatch(f"checkpoint {checkpoint} was written by {meta['trainer']}, not {here}")
    saved_ranks, ranks = int(meta.get("world_size", 1)), trainer.distributed.world_size
    if saved_ranks != ranks:
        how = f"torchrun --nproc_per_node={saved_ranks}" if saved_ranks > 1 else "python -m train, without torchrun"
        raise CheckpointMismatch(
            f"checkpoint {checkpoint} was written by a run on {_ranks(saved_ranks)}, this one has {_ranks(ranks)}: "
            f"resume it on {_ranks(saved_ranks)} ({how}); each rank's batches depend on the number of ranks, "
            "so another number cannot continue the run exactly"
        )
    if sorted(meta["models"]) != sorted(trainer.models):
        saved, registered = sorted(meta["models"]), sorted(trainer.models)
        raise CheckpointMismatch(f"checkpoint {checkpoint} holds models {saved}, the config registers {registered}")
    for name, model in trainer.models.items():
        expected = {key: list(value.shape) for key, value in model.state_dict().items()}
        with safe_open(str(checkpoint / f"{name}.safetensors"), framework="pt") as stored:
            found = {key: list(stored.get_slice(key).get_shape()) for key in stored.keys()}  # noqa: SIM118
        if found != expected:
            differing = sorted(key for key in set(found) | set(expected) if found.get(key) != expected.get(key))
            first = differing[0]
            raise CheckpointMismatch(
                f"checkpoint {checkpoint} does not fit model {name!r}: {first} is "
                f"{found.get(first, 'missing')} in the checkpoint but {expected.get(first, 'absent')} in the model"
                + (f" (and {len(differing) - 1} more)" if len(differing) > 1 else "")
            )


def _ranks(count: int) -> str:
    return "1 process" if count == 1 else f"{count} ranks"


def load_checkpoint(trainer: Trainer[Any, Any], checkpoint: str | Path) -> None:
    """Restore weights and trainer state, so ``trainer.train()`` continues exactly where it stopped."""
    checkpoint = Path(checkpoint)
    check_compatible(trainer, checkpoint)
    for name, model in trainer.models.items():
        load_weights(model, checkpoint / f"{name}.safetensors")
    trainer.load_state_dict(torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=True))


def prune_checkpoints(directory: str | Path, keep_last: int, keep: set[str] | None = None) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoints (and those named in ``keep``); returns the deleted."""
    checkpoints = list_checkpoints(directory)
    keep = keep or set()
    doomed = [path for path in checkpoints[: max(0, len(checkpoints) - keep_last)] if path.name not in keep]
    for path in doomed:
        shutil.rmtree(path)
    for leftover in Path(directory).glob(".tmp-*"):  # from a process killed mid-write
        shutil.rmtree(leftover, ignore_errors=True)
    return doomed


def write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
