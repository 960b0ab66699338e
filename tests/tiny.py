"""Shared tiny trainers for the core tests (imported as `tiny`): linear models on a synthetic dataset.

Everything here is deterministic and small enough that a whole training run takes milliseconds:
``make_item(i)`` builds item ``i`` from its index alone (so DataLoader workers, which are separate
processes, return the same data), and :class:`Recorder` writes down what the loop did, hook by hook.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from train import (
    BaseConfig,
    Callback,
    CallbackConfig,
    CallbackFactory,
    ClockConfig,
    LRSchedulerConfig,
    ModelConfig,
    ModelFactory,
    OptimizerConfig,
    Optimizers,
    Trainer,
    TrainingConfig,
    register_model,
)
from train.trainer import Metrics

IN_FEATURES = 3


@dataclass
class Batch:
    """A batch of ``B`` items: inputs ``[B, 3]``, targets ``[B, 1]`` and the items' dataset indices ``[B]``."""

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor


def make_item(index: int) -> Batch:
    """Item ``index`` of the synthetic dataset, a function of the index only (distinct for every index)."""
    x = torch.tensor([[index / 10.0, 1.0 - index / 20.0, (index % 3) / 2.0]])
    y = torch.tensor([[float(index % 5) - 2.0]])
    return Batch(x=x, y=y, index=torch.tensor([index]))


def collate(items: list[Batch]) -> Batch:
    return Batch(
        x=torch.cat([item.x for item in items]),
        y=torch.cat([item.y for item in items]),
        index=torch.cat([item.index for item in items]),
    )


class TinyConfig(BaseConfig):
    net: ModelConfig = ModelConfig()
    clock: ClockConfig = ClockConfig(verbose=False)


def tiny_config(
    *,
    net: ModelConfig | None = None,
    optimizer: OptimizerConfig | None = None,
    lr_scheduler: LRSchedulerConfig | None = None,
    **training: Any,
) -> TinyConfig:
    """A TinyConfig with plain SGD at lr 0.1, batches of 2, one epoch, unless the arguments say otherwise."""
    training.setdefault("batch_size", 2)
    return TinyConfig(
        training=TrainingConfig(**training),
        optimizer=optimizer or OptimizerConfig(optimizer=Optimizers.SGD, learning_rate=0.1),
        lr_scheduler=lr_scheduler or LRSchedulerConfig(),
        net=net or ModelConfig(),
    )


LossFn = Callable[["TinyTrainer", Batch], torch.Tensor]
EvaluationFn = Callable[["TinyTrainer"], Metrics | None]


def mse_loss(trainer: TinyTrainer, batch: Batch) -> torch.Tensor:
    """The default loss: every registered model predicts, the predictions are summed, MSE to the target."""
    x, y = batch.x.to(trainer.dtype), batch.y.to(trainer.dtype)
    prediction = torch.stack([model(x) for model in trainer.models.values()]).sum(dim=0)
    return F.mse_loss(prediction, y) * trainer.loss_scale


def _returning(callback: Callback[Any]) -> Callable[[], Callback[Any]]:
    return lambda: callback


class TinyTrainer(Trainer[TinyConfig, Batch]):
    """``net`` (a 3 -> 1 linear layer) plus any factory-built models, on ``n_items`` synthetic items.

    ``callbacks`` are registered as factories named ``recorder_0``, ``recorder_1``...; ``loss_fn`` and
    ``evaluation_fn`` replace the loss and the evaluation (which otherwise returns no metric).
    """

    def __init__(
        self,
        config: TinyConfig,
        *,
        n_items: int = 8,
        callbacks: Sequence[Callback[Any]] = (),
        models: Mapping[str, ModelFactory] | None = None,
        loss_fn: LossFn = mse_loss,
        evaluation_fn: EvaluationFn | None = None,
        loss_scale: float = 1.0,
    ) -> None:
        self.n_items = n_items
        self.loss_fn = loss_fn
        self.evaluation_fn = evaluation_fn
        self.loss_scale = loss_scale
        self.evaluation_calls = 0
        factories = {
            f"recorder_{i}": CallbackFactory(CallbackConfig(), _returning(callback))
            for i, callback in enumerate(callbacks)
        }
        super().__init__(config, model_factories=models, callback_factories=factories)

    @register_model()
    def net(self, config: ModelConfig) -> nn.Linear:
        return nn.Linear(IN_FEATURES, 1)

    def get_item(self, index: int) -> Batch:
        return make_item(index)

    def collate_fn(self, batch: list[Batch]) -> Batch:
        return collate(batch)

    @property
    def dataset_length(self) -> int:
        return self.n_items

    def compute_loss(self, batch: Batch) -> torch.Tensor:
        return self.loss_fn(self, batch)

    def compute_evaluation(self) -> Metrics | None:
        self.evaluation_calls += 1
        return None if self.evaluation_fn is None else self.evaluation_fn(self)


def linear_factory(*, requires_grad: bool = True, **overrides: Any) -> ModelFactory:
    """A factory-built 3 -> 1 linear model with the given ModelConfig options."""
    return ModelFactory(ModelConfig(requires_grad=requires_grad, **overrides), lambda: nn.Linear(IN_FEATURES, 1))


class Event(NamedTuple):
    hook: str
    step: int
    iteration: int
    epoch: int


AnyTrainer = Trainer[Any, Any]


class Recorder(Callback[AnyTrainer]):
    """Implements all 19 hooks (the guide's 18 and on_exception).

    Records each call with the clock's counters, and a few values at some hooks.

    - ``events``: every hook call, as (hook, step, iteration, epoch);
    - ``losses``: ``trainer.loss`` at each ``on_compute_loss_end``;
    - ``lrs``: each group's learning rate at each ``on_optimizer_step_begin`` (the rates the update uses);
    - ``grad_norms``: (total gradient norm as the optimizer sees it, ``trainer.grad_norm``) at the same hook.
    """

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.losses: list[float] = []
        self.lrs: list[list[float]] = []
        self.grad_norms: list[tuple[float, float | None]] = []

    def hooks(self, *names: str) -> list[Event]:
        """The recorded events of the named hooks (all events if no name is given)."""
        return [event for event in self.events if not names or event.hook in names]

    @property
    def hook_names(self) -> list[str]:
        return [event.hook for event in self.events]

    @property
    def first_group_lrs(self) -> list[float]:
        return [lrs[0] for lrs in self.lrs]

    def _record(self, hook: str, trainer: AnyTrainer) -> None:
        clock = trainer.clock
        self.events.append(Event(hook, clock.step, clock.iteration, clock.epoch))

    def on_init_begin(self, trainer: AnyTrainer) -> None:
        self._record("on_init_begin", trainer)

    def on_init_end(self, trainer: AnyTrainer) -> None:
        self._record("on_init_end", trainer)

    def on_train_begin(self, trainer: AnyTrainer) -> None:
        self._record("on_train_begin", trainer)

    def on_train_end(self, trainer: AnyTrainer) -> None:
        self._record("on_train_end", trainer)

    def on_epoch_begin(self, trainer: AnyTrainer) -> None:
        self._record("on_epoch_begin", trainer)

    def on_epoch_end(self, trainer: AnyTrainer) -> None:
        self._record("on_epoch_end", trainer)

    def on_batch_begin(self, trainer: AnyTrainer) -> None:
        self._record("on_batch_begin", trainer)

    def on_batch_end(self, trainer: AnyTrainer) -> None:
        self._record("on_batch_end", trainer)

    def on_backward_begin(self, trainer: AnyTrainer) -> None:
        self._record("on_backward_begin", trainer)

    def on_backward_end(self, trainer: AnyTrainer) -> None:
        self._record("on_backward_end", trainer)

    def on_optimizer_step_begin(self, trainer: AnyTrainer) -> None:
        self._record("on_optimizer_step_begin", trainer)
        self.lrs.append([float(group["lr"]) for group in trainer.optimizer.param_groups])
        norms = [p.grad.norm() for p in trainer.learnable_parameters if p.grad is not None]
        total = float(torch.stack(norms).norm()) if norms else 0.0
        self.grad_norms.append((total, None if trainer.grad_norm is None else float(trainer.grad_norm)))

    def on_optimizer_step_end(self, trainer: AnyTrainer) -> None:
        self._record("on_optimizer_step_end", trainer)

    def on_compute_loss_begin(self, trainer: AnyTrainer) -> None:
        self._record("on_compute_loss_begin", trainer)

    def on_compute_loss_end(self, trainer: AnyTrainer) -> None:
        self._record("on_compute_loss_end", trainer)
        self.losses.append(float(trainer.loss.detach()))

    def on_evaluate_begin(self, trainer: AnyTrainer) -> None:
        self._record("on_evaluate_begin", trainer)

    def on_evaluate_end(self, trainer: AnyTrainer) -> None:
        self._record("on_evaluate_end", trainer)

    def on_lr_scheduler_step_begin(self, trainer: AnyTrainer) -> None:
        self._record("on_lr_scheduler_step_begin", trainer)

    def on_lr_scheduler_step_end(self, trainer: AnyTrainer) -> None:
        self._record("on_lr_scheduler_step_end", trainer)

    def on_exception(self, trainer: AnyTrainer) -> None:
        self._record("on_exception", trainer)


def run(config: TinyConfig, **kwargs: Any) -> tuple[TinyTrainer, Recorder]:
    """Build a TinyTrainer with a fresh Recorder (plus ``kwargs``), train it, return both."""
    recorder = Recorder()
    callbacks: Sequence[Callback[Any]] = kwargs.pop("callbacks", ())
    trainer = TinyTrainer(config, callbacks=[recorder, *callbacks], **kwargs)
    trainer.train()
    return trainer, recorder
