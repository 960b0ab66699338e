"""What the logging callbacks record of a training step, measured once, and their shared base class.

:class:`StepLogger` is the base of the callbacks that write rows somewhere (a metrics file, TensorBoard,
MLflow): it decides which steps are logged, measures the gradient norm and the throughput, and hands each
subclass a finished :class:`StepRow` or the evaluation metrics. The progress bar uses the helpers directly.
"""

from __future__ import annotations

import importlib.util
import math
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from train.callback import Callback


@dataclass(frozen=True)
class StepRow:
    """One logged training step. ``grad_norm`` is set on steps that ended with an optimizer update."""

    step: int
    epoch: int
    iteration: int
    time: float
    """Seconds since training started (across restarts), evaluation included."""
    loss: float
    """This step's training loss (the mean over the ranks in distributed training)."""
    lrs: list[float]
    """The learning rate of each parameter group, in the optimizer's order (those the update used)."""
    grad_norm: float | None
    samples_per_second: float | None
    """Training throughput since the previous logged step, evaluation time left out."""

    def scalars(self) -> dict[str, float]:
        """The finite numbers of the row by tracker tag (``train/loss``...), one learning rate per group."""
        values: dict[str, float | None] = {
            "train/loss": self.loss,
            "train/grad_norm": self.grad_norm,
            "train/samples_per_second": self.samples_per_second,
            "train/epoch": float(self.epoch),
        }
        if len(self.lrs) == 1:
            values["train/lr"] = self.lrs[0]
        else:
            values.update((f"train/lr/group_{index}", lr) for index, lr in enumerate(self.lrs))
        return {tag: value for tag, value in values.items() if value is not None and math.isfinite(value)}


def learning_rates(trainer: Any) -> list[float]:
    return [float(group["lr"]) for group in trainer.optimizer.param_groups]


def samples_seen(trainer: Any) -> int:
    """Training samples consumed so far; exact for a short last batch, since it counts whole epochs."""
    clock, length = trainer.clock, trainer.dataset_length
    return clock.epoch * length + min(clock.step_in_epoch * trainer.config.training.batch_size, length)


# The norm is cached per trainer and step, so several callbacks logging the same update compute it once.
_grad_norms: weakref.WeakKeyDictionary[Any, tuple[int, int, float]] = weakref.WeakKeyDictionary()


def gradient_norm(trainer: Any) -> float:
    """The total L2 norm of the gradients the coming optimizer update uses (call at on_optimizer_step_begin).

    When gradient clipping is on, the loop has just computed it (before clipping) as ``trainer.grad_norm``.
    """
    clock = trainer.clock
    if trainer.config.training.gradient_clipping_max_norm is not None and trainer.grad_norm is not None:
        return float(trainer.grad_norm)
    cached = _grad_norms.get(trainer)
    if cached is not None and cached[:2] == (clock.step, clock.iteration):
        return cached[2]
    grads = [p.grad for p in trainer.trained_parameters if p.grad is not None]
    value = float(total_norm(grads)) if grads else 0.0
    _grad_norms[trainer] = (clock.step, clock.iteration, value)
    return value


def total_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of all ``tensors`` together, in float32, with one fused kernel per device and dtype."""
    by_group: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for tensor in tensors:
        tensor = tensor.detach()
        if tensor.dtype in (torch.float16, torch.bfloat16):  # their squares' sum overflows or rounds badly
            tensor = tensor.float()
        by_group.setdefault((tensor.device, tensor.dtype), []).append(tensor)
    first_device = tensors[0].device
    foreach_norm = torch._foreach_norm  # pyright: ignore[reportPrivateImportUsage] - what clip_grad_norm_ uses
    norms = [
        torch.linalg.vector_norm(torch.stack(foreach_norm(group))).float().to(first_device)
        for group in by_group.values()
    ]
    return torch.linalg.vector_norm(torch.stack(norms)) if len(norms) > 1 else norms[0]


class Throughput:
    """Samples per second between two readings, with the time spent evaluating left out."""

    def __init__(self) -> None:
        self._samples = 0
        self._since = time.perf_counter()
        self._paused_seconds = 0.0
        self._paused_at: float | None = None

    def reset(self, samples: int) -> None:
        self._samples = samples
        self._since = time.perf_counter()
        self._paused_seconds = 0.0
        self._paused_at = None

    def pause(self) -> None:
        self._paused_at = time.perf_counter()

    def resume(self) -> None:
        if self._paused_at is not None:
            self._paused_seconds += time.perf_counter() - self._paused_at
            self._paused_at = None

    def read(self, samples: int) -> float | None:
        """The rate since the last reading (or reset), then start a new window; None if nothing was timed."""
        seconds = time.perf_counter() - self._since - self._paused_seconds
        count = samples - self._samples
        self.reset(samples)
        return count / seconds if count > 0 and seconds > 0 else None


class StepLogger(Callback[Any]):
    """Base of callbacks that record every ``every_n_steps``-th step (and the last), and every evaluation.

    Subclasses implement :meth:`open` (at ``on_train_begin``), :meth:`write_step`, :meth:`write_evaluation`
    and :meth:`close` (at ``on_train_end``) rather than the hooks. ``grad_norm=False`` skips measuring the
    gradient norm (one pass over the gradients on each logged update). In distributed training they run on
    rank 0 only, where the loss is already the mean over the ranks.
    """

    main_process_only = True

    def __init__(self, every_n_steps: int = 1, grad_norm: bool = True) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps={every_n_steps} is invalid: expected an integer >= 1")
        self.every_n_steps = every_n_steps
        self.grad_norm = grad_norm
        self._throughput = Throughput()
        self._update: tuple[int, list[float], float | None] | None = None  # (step, lrs, norm) of an update

    # -- what subclasses implement ---------------------------------------------------------------------
    def open(self, trainer: Any) -> None: ...

    def write_step(self, trainer: Any, row: StepRow) -> None: ...

    def write_evaluation(self, trainer: Any, metrics: dict[str, float]) -> None: ...

    def close(self, trainer: Any) -> None: ...

    # -- hooks -------------------------------------------------------------------------------------------
    def _due(self, trainer: Any) -> bool:
        """Every ``every_n_steps`` steps, and the last step of the plan, so a run's final numbers are logged."""
        clock = trainer.clock
        return clock.step % self.every_n_steps == 0 or clock.step >= clock.total_steps

    def on_train_begin(self, trainer: Any) -> None:
        self._throughput.reset(samples_seen(trainer))
        self.open(trainer)

    def on_optimizer_step_begin(self, trainer: Any) -> None:
        # The clock has already counted this step, so the row written at on_batch_end carries this number.
        # The learning rates are read here too: by on_batch_end a scheduler may have moved on to the next ones.
        if self._due(trainer):
            norm = gradient_norm(trainer) if self.grad_norm else None
            self._update = (trainer.clock.step, learning_rates(trainer), norm)

    def on_evaluate_begin(self, trainer: Any) -> None:
        self._throughput.pause()

    def on_evaluate_end(self, trainer: Any) -> None:
        self._throughput.resume()
        self.write_evaluation(trainer, dict(trainer.evaluation_metrics))

    def on_batch_end(self, trainer: Any) -> None:
        if not self._due(trainer):
            return
        clock = trainer.clock
        update = self._update if self._update is not None and self._update[0] == clock.step else None
        self._update = None
        row = StepRow(
            step=clock.step,
            epoch=clock.epoch,
            iteration=clock.iteration,
            time=clock.time_elapsed,
            loss=float(trainer.loss.detach()),
            lrs=update[1] if update else learning_rates(trainer),
            grad_norm=update[2] if update else None,
            samples_per_second=self._throughput.read(samples_seen(trainer)),
        )
        self.write_step(trainer, row)

    def on_train_end(self, trainer: Any) -> None:
        self.close(trainer)

    def on_exception(self, trainer: Any) -> None:
        self.close(trainer)  # keep what was logged; trackers mark the run as ended


TRACKERS_HINT = 'install the trackers extra: pip install "train[trackers]"'


def require(module: str, callback: str) -> None:
    """Fail when the callback is built, not after the first epoch, if its optional package is missing."""
    if importlib.util.find_spec(module) is None:
        raise ModuleNotFoundError(f"{callback} needs the {module!r} package: {TRACKERS_HINT}", name=module)


def run_label(run_dir: str | Path) -> str:
    """A short name for a run: its directory's name, with the sweep's for a numbered sweep job ("<sweep>/3")."""
    path = Path(run_dir).resolve()
    return f"{path.parent.name}/{path.name}" if path.name.isdigit() else path.name
