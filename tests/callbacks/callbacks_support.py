"""Helpers of the built-in callbacks' tests: tiny trainers that write into a run directory, captured logs.

A plain module (not a ``conftest.py``, see tests/app/app_support.py); it also puts ``tests/`` on
``sys.path`` so that ``tiny`` imports when this folder's tests run on their own.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Generator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from loguru import logger  # noqa: E402
from PIL import Image  # noqa: E402
from tiny import Batch, EvaluationFn, Recorder, TinyConfig, TinyTrainer, linear_factory, mse_loss, tiny_config  # noqa: E402

from train import Callback  # noqa: E402

__all__ = [
    "Batch",
    "Recorder",
    "TinyConfig",
    "TinyTrainer",
    "captured_logs",
    "linear_factory",
    "mse_loss",
    "save_grid",
    "tiny_config",
    "train_in",
]


def train_in(
    run_dir: Path,
    config: TinyConfig,
    callbacks: Sequence[Callback[Any]],
    *,
    n_items: int = 8,
    evaluation_fn: EvaluationFn | None = None,
    prepare: Callable[[TinyTrainer], None] | None = None,
) -> tuple[TinyTrainer, Recorder]:
    """Train a TinyTrainer whose run directory is ``run_dir``, with a Recorder first, then ``callbacks``."""
    recorder = Recorder()
    trainer = TinyTrainer(config, n_items=n_items, callbacks=[recorder, *callbacks], evaluation_fn=evaluation_fn)
    trainer.run_dir = run_dir
    if prepare is not None:
        prepare(trainer)
    trainer.train()
    return trainer, recorder


def save_grid(trainer: TinyTrainer, size: tuple[int, int] = (12, 8)) -> None:
    """What the example's evaluation does: save an image into ``<run_dir>/evaluations/step_<step>.png``."""
    directory = trainer.run_dir / "evaluations"
    directory.mkdir(parents=True, exist_ok=True)
    shade = (37 * trainer.clock.step) % 256
    Image.new("L", size, color=shade).save(directory / f"step_{trainer.clock.step:07d}.png")


@contextmanager
def captured_logs() -> Generator[list[str], None, None]:
    """The messages loguru logs inside the block."""
    messages: list[str] = []
    sink = logger.add(lambda message: messages.append(str(message).rstrip("\n")), format="{message}", level="DEBUG")
    try:
        yield messages
    finally:
        logger.remove(sink)
