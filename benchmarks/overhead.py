"""Framework overhead: our Trainer with the runner's default callbacks against a hand-written PyTorch loop.

Same model, data, optimizer, seed and number of batches; several repetitions, alternating the two, medians.
Two workloads: (a) a tiny MLP, where per-step framework cost dominates (target <= 1.05x the raw loop),
(b) the default autoencoder (target <= 1.01x). The timed region is the epochs themselves: every hook,
the metrics file, progress lines and the epoch-end checkpoints are inside it; building the models and
the one-off end-of-run files (final evaluation, curves.png, final weights) are timed separately.

    python benchmarks/overhead.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from train import BaseConfig, CallbackFactory, ModelConfig, ModelFactory, OptimizerConfig, Trainer, TrainingConfig
from train.app.main import CONFIG_DIR
from train.config import CallbackConfig
from train.examples.autoencoder import Autoencoder, RectangleMasks
from train.examples.autoencoder import collate as collate_masks


@dataclass
class Workload:
    name: str
    target: float
    build_model: Callable[[], nn.Module]
    items: list[Any]
    collate: Callable[[list[Any]], Any]
    loss: Callable[[nn.Module, Any], torch.Tensor]
    batch_size: int
    epochs: int


def mlp_workload() -> Workload:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(4096, 32, generator=generator)
    targets = inputs[:, :1] * 2.0 - inputs[:, 1:2]
    items = [(inputs[i], targets[i]) for i in range(len(inputs))]

    def build() -> nn.Module:
        return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))

    def collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.stack([x for x, _ in batch]), torch.stack([y for _, y in batch])

    def loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return F.mse_loss(model(batch[0]), batch[1])

    return Workload("tiny MLP (64 steps/epoch)", 1.05, build, items, collate, loss, batch_size=64, epochs=5)


def autoencoder_workload() -> Workload:
    masks = RectangleMasks(size=64, length=256, seed=0)
    items = [masks[i] for i in range(len(masks))]

    def loss(model: nn.Module, batch: Any) -> torch.Tensor:
        return F.binary_cross_entropy(model(batch.image), batch.image)

    return Workload("autoencoder 64x64 (8 steps/epoch)", 1.01, Autoencoder, items, collate_masks, loss, 32, 2)


def raw_loop(work: Workload) -> float:
    torch.manual_seed(0)
    model = work.build_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = DataLoader(
        work.items,  # pyright: ignore[reportArgumentType] - a list is a valid map-style dataset
        batch_size=work.batch_size,
        shuffle=True,
        collate_fn=work.collate,
        generator=torch.Generator().manual_seed(0),
    )
    started = time.perf_counter()
    for _ in range(work.epochs):
        for batch in loader:
            loss = work.loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return time.perf_counter() - started


class BenchConfig(BaseConfig):
    pass


class BenchTrainer(Trainer[BenchConfig, Any]):
    """The same work through our Trainer; times the epochs (everything per step happens inside them)."""

    work: Workload
    epoch_seconds = 0.0

    def get_item(self, index: int) -> Any:
        return self.work.items[index]

    def collate_fn(self, batch: list[Any]) -> Any:
        return self.work.collate(batch)

    @property
    def dataset_length(self) -> int:
        return len(self.work.items)

    def compute_loss(self, batch: Any) -> torch.Tensor:
        return self.work.loss(self.models["model"], batch)

    def _train_epoch(self) -> None:
        started = time.perf_counter()
        super()._train_epoch()
        self.epoch_seconds += time.perf_counter() - started


def default_callbacks() -> dict[str, Any]:
    """The runner's `callbacks=default` group, composed and resolved as `python -m train` would."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return dict(cfg.callbacks)


def our_loop(work: Workload, callbacks: dict[str, Any], run_dir: Path) -> tuple[float, float]:
    config = BenchConfig(
        training=TrainingConfig(
            duration=f"{work.epochs}:epoch", batch_size=work.batch_size, evaluation_interval="0:epoch"
        ),
        optimizer=OptimizerConfig(learning_rate=1e-3),
    )
    factories = {
        name: CallbackFactory(CallbackConfig(), lambda entry=entry: instantiate(entry))
        for name, entry in callbacks.items()
    }
    BenchTrainer.work = work
    trainer = BenchTrainer(
        config,
        model_factories={"model": ModelFactory(ModelConfig(), work.build_model)},
        callback_factories=factories,
        run_dir=run_dir,
    )
    started = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - started
    return trainer.epoch_seconds, total - trainer.epoch_seconds


def lightning_available() -> bool:
    try:
        import lightning  # noqa: F401  # pyright: ignore[reportMissingImports, reportUnusedImport]
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    callbacks = default_callbacks()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; callbacks: {', '.join(callbacks)}")
    for work in (mlp_workload(), autoencoder_workload()):
        raw_times: list[float] = []
        our_times: list[float] = []
        end_times: list[float] = []
        raw_loop(work)  # warm-up: first-call costs (allocator, kernels) belong to neither side
        for repeat in range(args.repeats):
            with tempfile.TemporaryDirectory() as run_dir:
                raw_times.append(raw_loop(work))
                ours, end = our_loop(work, callbacks, Path(run_dir) / str(repeat))
                our_times.append(ours)
                end_times.append(end)
        raw, ours = statistics.median(raw_times), statistics.median(our_times)
        steps = work.epochs * -(-len(work.items) // work.batch_size)
        print(f"\n{work.name}, {steps} steps, median of {args.repeats}")
        print(f"  raw PyTorch loop   {raw:8.3f} s  ({1e3 * raw / steps:.3f} ms/step)")
        print(f"  train.Trainer      {ours:8.3f} s  ({1e3 * ours / steps:.3f} ms/step)")
        print(f"  ratio              {ours / raw:8.3f}x  (target <= {work.target:.2f}x)")
        print(f"  one-off end of run {statistics.median(end_times):8.3f} s  (final checkpoint, weights, curves.png)")
    print(f"\nPyTorch Lightning: {'installed but not wired in' if lightning_available() else 'not installed, skipped'}")


if __name__ == "__main__":
    main()
