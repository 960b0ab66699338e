"""Helpers of the distributed tests: runs under ``torchrun`` on the CPU (gloo), callbacks they load, trainers.

A plain module (imported as ``distributed_support``, this folder has no ``__init__.py``). Runs started here
see this folder on their ``PYTHONPATH``, so ``+callbacks.<name>._target_=distributed_support.<Class>`` loads
the callbacks below into ``python -m train`` runs. Run as a script under torchrun, it trains the library-level
trainers of :data:`SCENARIOS` on every rank and saves what each rank ended with (see :func:`main`).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from train import (
    BaseConfig,
    Callback,
    CallbackConfig,
    CallbackFactory,
    ClockConfig,
    ModelConfig,
    ModelFactory,
    OptimizerConfig,
    Optimizers,
    Trainer,
    TrainingConfig,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TIMEOUT_S = 240.0
NPROC = 2

TINY = (
    "task.epoch_size=32",
    "task.image_size=16",
    "task.validation_size=8",
    "training.batch_size=8",
)
"""The autoencoder shrunk to 4 steps an epoch: 32 masks of 16x16 in global batches of 8 (4 per rank)."""


# -- running ---------------------------------------------------------------------------------------------
def free_port() -> int:
    """A free port below the ephemeral range, where no outgoing connection takes it before torchrun binds it."""
    generator = random.Random()
    for _ in range(100):
        port = generator.randrange(20000, 32000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-31999")


_LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "HYDRA_FULL_ERROR")


def run_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without any launcher's variables, one torch thread a process, this folder importable."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in _LAUNCH_VARIABLES and not key.startswith(("SLURM_", "SUBMITIT_", "TORCHELASTIC_"))
    }
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = str(HERE)
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class Finished:
    command: tuple[str, ...]
    cwd: Path
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def describe(self) -> str:
        return (
            f"{' '.join(self.command)} (in {self.cwd}) -> exit {self.returncode}\n"
            f"--- stdout\n{self.stdout[-6000:]}\n--- stderr\n{self.stderr[-8000:]}"
        )


def torchrun_command(nproc: int = NPROC) -> list[str]:
    """``torchrun --nproc_per_node=<nproc> --master_port=<a free port>`` (this interpreter's torchrun)."""
    torchrun = Path(sys.executable).parent / "torchrun"
    launcher = [str(torchrun)] if torchrun.is_file() else [sys.executable, "-m", "torch.distributed.run"]
    return [*launcher, f"--nproc_per_node={nproc}", f"--master_port={free_port()}"]


def run(command: Sequence[str], cwd: Path, *, env: Mapping[str, str] | None = None) -> Finished:
    cwd.mkdir(parents=True, exist_ok=True)
    process = subprocess.run(
        list(command),
        cwd=cwd,
        env=run_env(env),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    return Finished(tuple(command), cwd, process.returncode, process.stdout, process.stderr)


def run_torchrun(args: Sequence[str], cwd: Path, *, nproc: int = NPROC) -> Finished:
    """``torchrun --nproc_per_node=2 -m train *args`` in ``cwd``; never raises on a non-zero exit."""
    return run([*torchrun_command(nproc), "-m", "train", *args], cwd)


def run_single(args: Sequence[str], cwd: Path) -> Finished:
    """``python -m train *args`` in ``cwd`` (one process)."""
    return run([sys.executable, "-m", "train", *args], cwd)


# -- reading what runs wrote -------------------------------------------------------------------------------
def run_dirs(cwd: Path, experiment: str = "autoencoder") -> list[Path]:
    root = cwd / "outputs" / experiment
    return sorted(path for path in root.iterdir() if path.is_dir() and path.name != "multirun")


def single_run_dir(cwd: Path) -> Path:
    found = run_dirs(cwd)
    assert len(found) == 1, f"expected one run directory in {cwd / 'outputs'}, found {found}"
    return found[0]


def read_json(path: Path) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(path.read_text(encoding="utf-8")))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [cast(dict[str, Any], json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line]


def step_rows(run_dir: Path) -> list[dict[str, Any]]:
    return [row for row in read_jsonl(run_dir / "metrics.jsonl") if row["kind"] == "step"]


def checkpoint_steps(run_dir: Path) -> list[int]:
    return sorted(int(path.name.removeprefix("step_")) for path in (run_dir / "checkpoints").glob("step_*"))


def final_weights(run_dir: Path, model: str = "autoencoder") -> dict[str, torch.Tensor]:
    return load_file(run_dir / "models" / f"{model}.safetensors")


def assert_same_weights(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], what: str) -> None:
    assert a.keys() == b.keys(), what
    differing = [key for key in a if not torch.equal(a[key], b[key])]
    assert not differing, f"{what}: {differing} differ (max {max_difference(a, b):.3g})"


def max_difference(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    return max(float((a[key].double() - b[key].double()).abs().max()) for key in a)


# -- callbacks loaded into `python -m train` runs ----------------------------------------------------------
def _rank(trainer: Any) -> int:
    return int(trainer.distributed.rank)


class DumpWeights(Callback[Any]):
    """At the end of training, every rank writes its weights to ``<directory>/rank<r>_<model>.safetensors``."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)

    def on_train_end(self, trainer: Any) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for name, model in trainer.models.items():
            state = {key: value.detach().cpu().contiguous().clone() for key, value in model.state_dict().items()}
            save_file(state, str(self.directory / f"rank{_rank(trainer)}_{name}.safetensors"))


class RecordWrites(Callback[Any]):
    """Appends ``<rank> checkpoint <step>`` / ``<rank> weights <file>`` to ``path`` when a rank writes one.

    It wraps the functions the checkpoint callback calls to write (at ``on_init_end``, before the callback
    ever runs), so the record says which process really wrote.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_init_end(self, trainer: Any) -> None:
        import train.callbacks.checkpoint as checkpoint

        rank, path = _rank(trainer), self.path
        save_checkpoint, save_weights = checkpoint.save_checkpoint, checkpoint.save_weights

        def recorded_checkpoint(writer: Any, directory: Any) -> Any:
            written = save_checkpoint(writer, directory)
            if written is not None:  # None: this step's checkpoint existed already
                with path.open("a", encoding="utf-8") as record:
                    record.write(f"{rank} checkpoint {writer.clock.step}\n")
            return written

        def recorded_weights(model: Any, target: Any) -> None:
            with path.open("a", encoding="utf-8") as record:
                record.write(f"{rank} weights {Path(target).name}\n")
            save_weights(model, target)

        checkpoint.save_checkpoint = recorded_checkpoint
        checkpoint.save_weights = recorded_weights


class SignalRankAt(Callback[Any]):
    """Send ``signal_name`` to this process at the end of step ``step``, on rank ``rank`` only."""

    def __init__(self, step: int, rank: int, signal_name: str = "SIGTERM") -> None:
        self.step = step
        self.rank = rank
        self.signal_number = int(signal.Signals[signal_name])

    def on_batch_end(self, trainer: Any) -> None:
        if trainer.clock.step == self.step and _rank(trainer) == self.rank:
            os.kill(os.getpid(), self.signal_number)


class StopOnRank(Callback[Any]):
    """Ask the clock to stop at the end of step ``step``, on rank ``rank`` only (as a faulty early stopping might)."""

    def __init__(self, step: int, rank: int) -> None:
        self.step = step
        self.rank = rank

    def on_batch_end(self, trainer: Any) -> None:
        if trainer.clock.step == self.step and _rank(trainer) == self.rank:
            trainer.clock.request_stop(f"asked on rank {self.rank}")


# -- library-level trainers: calling the model's forward, its submodules, or DDP's forward ------------------
ITEMS = 32


@dataclass
class Batch:
    x: torch.Tensor
    y: torch.Tensor


def make_item(index: int) -> Batch:
    x = torch.tensor([[index / 16.0 - 1.0, (index % 5) / 4.0, ((index * 7) % 11) / 10.0]])
    return Batch(x=x, y=torch.tensor([[float((index * 3) % 7) / 3.0 - 1.0]]))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(3, 8)
        self.decoder = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.tanh(self.encoder(x)))


class NetConfig(BaseConfig):
    clock: ClockConfig = ClockConfig(verbose=False)


class ForwardTrainer(Trainer[NetConfig, Batch]):
    """Calls the model's own forward: ``self.net(x)`` (the gradients are averaged at each update)."""

    synced_steps: list[bool]
    """DDPForwardTrainer: whether DDP was to all-reduce in each step's backward."""

    @property
    def net(self) -> Net:
        return self.get_model("net", Net)

    @property
    def frozen(self) -> nn.Linear:
        return self.get_model("frozen", nn.Linear)

    def get_item(self, index: int) -> Batch:
        return make_item(index)

    def collate_fn(self, batch: list[Batch]) -> Batch:
        return Batch(x=torch.cat([b.x for b in batch]), y=torch.cat([b.y for b in batch]))

    @property
    def dataset_length(self) -> int:
        return ITEMS

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def compute_loss(self, batch: Batch) -> torch.Tensor:
        return F.mse_loss(self.frozen(self.predict(batch.x)), batch.y)

    def compute_evaluation(self) -> dict[str, float]:
        batch = self.collate_fn([make_item(i) for i in range(ITEMS)])
        mse = F.mse_loss(self.frozen(self.net(batch.x)), batch.y).item()
        return {"mse": mse, "rank": float(self.distributed.rank)}  # averaged over the ranks: (0 + 1) / 2


class SubmoduleTrainer(ForwardTrainer):
    """Calls submodules (``self.net.encoder(x)``), as the guide's trainers do: DDP's forward never runs."""

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.decoder(torch.tanh(self.net.encoder(x)))


class DDPForwardTrainer(ForwardTrainer):
    """Calls DistributedDataParallel's forward (``self.ddp("net")``): DDP all-reduces during the backward."""

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        wrapped = self.ddp("net")
        # Whether this step's backward all-reduces: only at the last step of an accumulation window.
        self.synced_steps.append(bool(getattr(wrapped, "require_backward_grad_sync", False)))
        return wrapped(x)


SCENARIOS: dict[str, type[ForwardTrainer]] = {
    "forward": ForwardTrainer,
    "submodules": SubmoduleTrainer,
    "ddp_forward": DDPForwardTrainer,
    "stopped": ForwardTrainer,
}
"""Each trains 2 epochs of 4 steps (global batches of 8) with gradient accumulation over 2 steps and clipping;
``stopped`` has rank 1 alone ask to stop inside an accumulation window, at step 3."""


class LossRecorder(Callback[Any]):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_batch_end(self, trainer: Any) -> None:
        self.losses.append(float(trainer.loss.detach()))


def make_trainer(scenario: str, recorder: LossRecorder) -> ForwardTrainer:
    """The scenario's trainer: a trainable ``net`` and a frozen ``frozen`` layer (not wrapped in DDP)."""
    config = NetConfig(
        training=TrainingConfig(
            duration="2:epoch",
            batch_size=8,
            gradient_accumulation="2:step",
            gradient_clipping_max_norm=0.5,
            evaluation_interval="1:epoch",
        ),
        optimizer=OptimizerConfig(optimizer=Optimizers.AdamW, learning_rate=0.05),
    )
    callbacks = {"losses": CallbackFactory(CallbackConfig(), lambda: recorder)}
    if scenario == "stopped":
        callbacks["stop"] = CallbackFactory(CallbackConfig(), lambda: StopOnRank(step=3, rank=1))
    return SCENARIOS[scenario](
        config,
        model_factories={
            "net": ModelFactory(ModelConfig(), Net),
            "frozen": ModelFactory(ModelConfig(requires_grad=False), _frozen_linear),
        },
        callback_factories=callbacks,
    )


def _frozen_linear() -> nn.Linear:
    layer = nn.Linear(1, 1)
    with torch.no_grad():
        layer.weight.fill_(1.5)
        layer.bias.fill_(0.25)
    return layer


def train_scenario(scenario: str) -> dict[str, Any]:
    """Train one scenario in this process; returns the final weights, losses and clock of this rank."""
    import train.distributed

    recorder = LossRecorder()
    trainer = make_trainer(scenario, recorder)
    trainer.synced_steps = []
    averaged: list[int] = []
    average_gradients = train.distributed.average_gradients

    def counting(parameters: Any, *args: Any, **kwargs: Any) -> None:
        averaged.append(trainer.clock.step)
        average_gradients(parameters, *args, **kwargs)

    train.distributed.average_gradients = counting
    try:
        trainer.train()
    finally:
        train.distributed.average_gradients = average_gradients
    return {
        "averaged_at": averaged,
        "synced_steps": trainer.synced_steps,
        "weights": {key: value.detach().clone() for key, value in trainer.net.state_dict().items()},
        "losses": recorder.losses,
        "step": trainer.clock.step,
        "stop_reason": trainer.clock.stop_reason,
        "metrics": dict(trainer.evaluation_metrics),
    }


def main() -> None:
    """Under torchrun: train every scenario, save each rank's results as ``<out>/<scenario>_rank<r>.pt``."""
    import train.distributed

    out = Path(sys.argv[1])
    for scenario in SCENARIOS:
        result = train_scenario(scenario)
        torch.save(result, out / f"{scenario}_rank{os.environ['RANK']}.pt")
    train.distributed.destroy()


if __name__ == "__main__":
    main()
