"""Data loading: the fraction of each training step spent waiting for the next batch.

Trains the default autoencoder for a fixed number of steps with DataLoader workers off and on, timing
how long the loop blocks on `next(batch)` versus the whole step. The example's masks are generated on
the fly (a pure function of the index), so this measures what generating them costs the step.

    python benchmarks/data_wait.py [--steps 128] [--workers 0 1 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from train import ModelConfig, ModelFactory, TrainingConfig
from train.examples.autoencoder import Autoencoder, AutoencoderConfig, AutoencoderTrainer

BATCH_SIZE = 16  # the default experiment's


class TimedTrainer(AutoencoderTrainer):
    """Times the wait for each batch (the DataLoader's `__next__`) inside the real loop."""

    waited = 0.0

    @property
    def dataloader(self) -> Any:  # pyright: ignore[reportIncompatibleVariableOverride]
        loader = super().dataloader
        trainer = self

        class Timed:
            def __iter__(self) -> Iterator[Any]:
                iterator = iter(loader)
                while True:
                    started = time.perf_counter()
                    try:
                        batch = next(iterator)
                    except StopIteration:
                        return
                    trainer.waited += time.perf_counter() - started
                    yield batch

            def __getattr__(self, name: str) -> Any:
                return getattr(loader, name)

        return Timed()


def measure(workers: int, steps: int) -> tuple[float, float]:
    config = AutoencoderConfig(
        training=TrainingConfig(
            duration=f"{steps}:step",
            batch_size=BATCH_SIZE,
            num_workers=workers,
            evaluation_interval="0:epoch",
            channels_last=True,
        ),
        epoch_size=steps * BATCH_SIZE,
        validation_size=8,
    )
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = TimedTrainer(
            config, model_factories={"autoencoder": ModelFactory(ModelConfig(), Autoencoder)}, run_dir=run_dir
        )
        trainer.clock.verbose = False
        started = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - started
    return trainer.waited, total


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    for workers in args.workers:
        waited, total = measure(workers, args.steps)
        print(
            f"num_workers={workers}: {args.steps} steps in {total:.2f} s, waiting for data {waited:.3f} s "
            f"= {100 * waited / total:.1f}% of the step time ({1e3 * waited / args.steps:.2f} ms/step)"
        )


if __name__ == "__main__":
    main()
