"""Framework overhead: our Trainer with the runner's default callbacks against a hand-written PyTorch loop.

Same model, data (a map-style Dataset), optimizer (AdamW, fused as our default builds it), seed and
number of batches. Several repetitions, each running the raw loop then ours; the ratio is the median
of the repetitions' ratios, which cancels the drift of a shared machine. Two workloads: (a) a tiny
MLP on an MNIST-sized epoch, where per-step framework cost dominates (target <= 1.05x the raw loop),
(b) the default autoencoder with the default experiment's batch size and memory order (target
<= 1.01x). The timed region is the epochs themselves: every hook, the metrics file, progress lines
and the epoch-end checkpoints are inside it; building the models and the one-off end-of-run files
(final evaluation, curves.png, final weights) are timed separately. Also printed: the raw loop with
torch's default (unfused) AdamW, and PyTorch Lightning on the same work when it is installed.

    python benchmarks/overhead.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import importlib
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
from torch.utils.data import DataLoader, Dataset

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
    channels_last: bool = False


def mlp_workload() -> Workload:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(65536, 32, generator=generator)
    targets = inputs[:, :1] * 2.0 - inputs[:, 1:2]
    items = [(inputs[i], targets[i]) for i in range(len(inputs))]

    def build() -> nn.Module:
        return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))

    def collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.stack([x for x, _ in batch]), torch.stack([y for _, y in batch])

    def loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return F.mse_loss(model(batch[0]), batch[1])

    return Workload("tiny MLP (1024 steps/epoch)", 1.05, build, items, collate, loss, batch_size=64, epochs=2)


def autoencoder_workload() -> Workload:
    masks = RectangleMasks(size=64, length=1024, seed=0)
    items = [masks[i] for i in range(len(masks))]

    def loss(model: nn.Module, batch: Any) -> torch.Tensor:
        return F.binary_cross_entropy(model(batch.image), batch.image)

    name = "autoencoder 64x64 (64 steps/epoch, channels-last)"
    return Workload(name, 1.01, Autoencoder, items, collate_masks, loss, 16, 1, channels_last=True)


class ListDataset(Dataset[Any]):
    """The map-style Dataset a hand-written loop defines: one Python ``__getitem__`` call per item."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __getitem__(self, index: int) -> Any:
        return self.items[index]

    def __len__(self) -> int:
        return len(self.items)


def hand_built_model(work: Workload) -> nn.Module:
    model = work.build_model()
    if work.channels_last:
        model = model.to(memory_format=torch.channels_last)  # pyright: ignore[reportCallIssue] - missing in stubs
    return model


def hand_built_loader(work: Workload) -> DataLoader[Any]:
    """The DataLoader of the hand-written loops: shuffled by a seeded generator, like ours."""
    return DataLoader(
        ListDataset(work.items),
        batch_size=work.batch_size,
        shuffle=True,
        collate_fn=work.collate,
        generator=torch.Generator().manual_seed(0),
    )


def raw_loop(work: Workload, fused: bool = True) -> float:
    torch.manual_seed(0)
    model = hand_built_model(work)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0, fused=fused)
    loader = hand_built_loader(work)
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

    def __init__(self, config: BenchConfig, **kwargs: Any) -> None:
        self.items = self.work.items  # what ListDataset holds: the same lookup per item on both sides
        super().__init__(config, **kwargs)

    def get_item(self, index: int) -> Any:
        return self.items[index]

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
            duration=f"{work.epochs}:epoch",
            batch_size=work.batch_size,
            evaluation_interval="0:epoch",
            channels_last=work.channels_last,
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


def lightning_loop(work: Workload, run_dir: Path) -> float | None:
    """The same work through PyTorch Lightning with its defaults (checkpoint each epoch, its logger, loss logged
    every 50 steps), the progress bar and model summary off; None when Lightning is not installed."""
    try:
        lightning: Any = importlib.import_module("lightning")
    except ImportError:
        return None
    seconds = [0.0]

    class Module(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = hand_built_model(work)

        def training_step(self, batch: Any, index: int) -> torch.Tensor:
            loss = work.loss(self.model, batch)
            self.log("loss", loss)
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.AdamW(self.parameters(), lr=1e-3, weight_decay=0.0, fused=True)

    class EpochTimer(lightning.Callback):
        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            self.started = time.perf_counter()

        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            seconds[0] += time.perf_counter() - self.started

    torch.manual_seed(0)
    loader = hand_built_loader(work)
    trainer = lightning.Trainer(
        max_epochs=work.epochs,
        accelerator="cpu",
        devices=1,
        default_root_dir=str(run_dir),
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[EpochTimer()],
    )
    trainer.fit(Module(), loader)
    return seconds[0]


def line(label: str, seconds: list[float], raw_seconds: list[float], steps: int, note: str) -> str:
    """One row of the table: median time, time per step, median of the ratios to the paired raw loops."""
    median = statistics.median(seconds)
    ratio = statistics.median(t / r for t, r in zip(seconds, raw_seconds, strict=True))
    return f"  {label:<18} {median:8.3f} s  {1e3 * median / steps:8.3f} ms/step  {ratio:6.3f}x  {note}"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    callbacks = default_callbacks()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; callbacks: {', '.join(callbacks)}")
    for work in (mlp_workload(), autoencoder_workload()):
        times: dict[str, list[float]] = {"raw": [], "ours": [], "unfused": [], "end": [], "lightning": []}
        raw_loop(work)  # warm-up: first-call costs (allocator, kernels) belong to neither side
        for repeat in range(args.repeats):
            with tempfile.TemporaryDirectory() as run_dir:
                times["raw"].append(raw_loop(work))
                ours, end = our_loop(work, callbacks, Path(run_dir) / str(repeat))
                times["ours"].append(ours)
                times["end"].append(end)
                times["unfused"].append(raw_loop(work, fused=False))
                lightning = lightning_loop(work, Path(run_dir) / "lightning")
                if lightning is not None:
                    times["lightning"].append(lightning)
        steps = work.epochs * -(-len(work.items) // work.batch_size)
        raw = statistics.median(times["raw"])

        print(f"\n{work.name}, {steps} steps, median of {args.repeats} (ratio: median of paired ratios to raw)")
        print(f"  {'raw PyTorch loop':<18} {raw:8.3f} s  {1e3 * raw / steps:8.3f} ms/step  {1:6.3f}x")
        print(line("train.Trainer", times["ours"], times["raw"], steps, f"target <= {work.target:.2f}x"))
        print(line("raw loop, unfused", times["unfused"], times["raw"], steps, "torch's default AdamW (per tensor)"))
        if times["lightning"]:
            print(line("PyTorch Lightning", times["lightning"], times["raw"], steps, "its defaults, no progress bar"))
        else:
            print("  PyTorch Lightning: not installed, skipped (pip install lightning to compare)")
        print(f"  one-off end of run {statistics.median(times['end']):8.3f} s  (final checkpoint, weights, curves.png)")


if __name__ == "__main__":
    main()
