"""A tiny run with the progress callback and the clock's log lines, for test_progress_tty (run as a subprocess).

``python progress_program.py <mode>``: 3 epochs of 8 steps, each step slowed a little so the bar redraws.
At the end it prints whether loguru's sinks were given their streams back.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from loguru import logger
from tiny import Batch, TinyTrainer, mse_loss, tiny_config

from train import ClockConfig
from train.callbacks import ProgressBar


def slow_loss(trainer: TinyTrainer, batch: Batch) -> torch.Tensor:
    time.sleep(0.02)
    return mse_loss(trainer, batch)


def main() -> None:
    config = tiny_config(duration="3:epoch", evaluation_interval="1:epoch")
    config.clock = ClockConfig(verbose=True)
    progress = ProgressBar(mode=sys.argv[1], log_every_n_steps=4, refresh_seconds=0.0)
    trainer = TinyTrainer(config, n_items=16, callbacks=[progress], loss_fn=slow_loss)
    trainer.train()
    handlers = getattr(getattr(logger, "_core", None), "handlers", {})
    streams = [getattr(getattr(handler, "_sink", None), "_stream", None) for handler in handlers.values()]
    logger.info(f"sinks restored: {all(type(stream).__name__ != '_BarWriter' for stream in streams)}")


if __name__ == "__main__":
    main()
