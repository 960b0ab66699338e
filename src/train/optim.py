"""Optimizer construction (one parameter group per model) and the learning-rate schedule with warmup."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from loguru import logger
from torch import nn
from torch.optim import lr_scheduler as schedulers

from train.config import LRSchedulerConfig, LRSchedulerType, ModelConfig, OptimizerConfig, Optimizers
from train.duration import StepPlan, TimeUnit, TimeValue


def parameter_groups(
    config: OptimizerConfig, models: Mapping[str, tuple[nn.Module, ModelConfig]]
) -> list[dict[str, Any]]:
    """One group per model with trainable parameters; a model's overrides replace the optimizer's values."""
    groups: list[dict[str, Any]] = []
    for name, (model, model_config) in models.items():
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            continue
        group: dict[str, Any] = {
            "name": name,
            "params": params,
            "lr": _pick(model_config.learning_rate, config.learning_rate),
            "weight_decay": _pick(model_config.weight_decay, config.weight_decay),
        }
        if config.optimizer is not Optimizers.SGD:
            group["betas"] = _pick(model_config.betas, config.betas)
            group["eps"] = _pick(model_config.eps, config.eps)
        groups.append(group)
    return groups


def _pick(override: Any, default: Any) -> Any:
    return default if override is None else override


def build_optimizer(config: OptimizerConfig, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """The configured optimizer over ``groups``; fused (one kernel for all tensors) where torch supports it."""
    if not groups:
        raise ValueError("nothing to optimize: no registered model has parameters with requires_grad=True")
    options: dict[str, Any] = {"lr": config.learning_rate, "weight_decay": config.weight_decay}
    optimizer_class: type[torch.optim.Optimizer]
    if config.optimizer is Optimizers.SGD:
        optimizer_class = torch.optim.SGD
        options.update(momentum=config.momentum, nesterov=config.nesterov)
    else:
        optimizer_class = torch.optim.AdamW if config.optimizer is Optimizers.AdamW else torch.optim.Adam
        options.update(betas=config.betas, eps=config.eps)
    if config.fused is not None:
        try:
            return optimizer_class(groups, fused=config.fused, **options)
        except (RuntimeError, ValueError) as error:
            raise ValueError(f"optimizer.fused=true is not possible here: {error}") from None
    try:
        # Fused updates are several times faster than torch's per-tensor default, on CPU as on GPU.
        return optimizer_class(groups, fused=True, **options)
    except (RuntimeError, ValueError) as error:  # e.g. parameters on a device without fused kernels
        logger.debug(f"Fused {config.optimizer.value} unavailable ({error}); using torch's default implementation")
        return optimizer_class(groups, **options)


class LRSchedule:
    """Linear warmup, then a torch scheduler stepped every ``update_interval``.

    Warmup is counted in optimizer updates whatever unit the config uses, so gradient accumulation
    cannot stretch or shrink it. Update ``k`` of ``W`` warmup updates (1-based) uses ``k / W`` of the
    rate the schedule starts from (the configured rate; ``start_factor`` times it for LINEAR_LR), and
    the schedule proper starts from that rate with update ``W + 1``, so the curve never jumps.
    ReduceLROnPlateau is stepped after each evaluation instead, once warmup is over.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, config: LRSchedulerConfig, plan: StepPlan, total_steps: int
    ) -> None:
        self.config = config
        self.optimizer = optimizer
        self.interval = TimeValue.parse(config.update_interval)
        self.warmup_iterations = plan.to_iterations(TimeValue.parse(config.warmup))
        self.total_iterations = plan.iterations_in(total_steps)
        self.length = self._schedule_length(plan, total_steps)
        self.scheduler = self._build_scheduler()
        self.base_lrs = [float(group["lr"]) for group in optimizer.param_groups]
        self._set_warmup_lr(completed_updates=0)

    def _schedule_length(self, plan: StepPlan, total_steps: int) -> int:
        """How many times the scheduler will step after warmup: the default length of finite schedules."""
        if self.config.total_iters is not None:
            return self.config.total_iters
        if self.interval.unit is TimeUnit.EPOCH:
            # Only epoch ends after the first update at the full rate count (see due_after_epoch): those of the
            # epochs that warmup fills completely do not.
            epochs, every = total_steps // plan.steps_per_epoch, self.interval.number
            warmup_epochs = self.warmup_iterations // plan.iterations_per_epoch
            updates = epochs // every - warmup_epochs // every
        else:
            updates = (self.total_iterations - self.warmup_iterations) // self.interval.number
        return max(1, updates)

    def _build_scheduler(self) -> schedulers.LRScheduler | schedulers.ReduceLROnPlateau:
        c, optimizer, length = self.config, self.optimizer, self.length
        match c.type:
            case LRSchedulerType.CONSTANT_LR:
                return schedulers.ConstantLR(optimizer, factor=1.0, total_iters=0)
            case LRSchedulerType.STEP_LR:
                return schedulers.StepLR(optimizer, step_size=c.step_size, gamma=c.gamma)
            case LRSchedulerType.MULTI_STEP_LR:
                return schedulers.MultiStepLR(optimizer, milestones=c.milestones, gamma=c.gamma)
            case LRSchedulerType.EXPONENTIAL_LR:
                return schedulers.ExponentialLR(optimizer, gamma=c.gamma)
            case LRSchedulerType.COSINE_ANNEALING_LR:
                return schedulers.CosineAnnealingLR(optimizer, T_max=length, eta_min=c.eta_min)
            case LRSchedulerType.COSINE_ANNEALING_WARM_RESTARTS:
                return schedulers.CosineAnnealingWarmRestarts(
                    optimizer, T_0=c.restart_period, T_mult=c.restart_multiplier, eta_min=c.eta_min
                )
            case LRSchedulerType.ONE_CYCLE_LR:
                max_lr = c.max_lr if c.max_lr is not None else [group["lr"] for group in optimizer.param_groups]
                return schedulers.OneCycleLR(optimizer, max_lr=max_lr, total_steps=length, pct_start=c.pct_start)
            case LRSchedulerType.LINEAR_LR:
                return schedulers.LinearLR(
                    optimizer, start_factor=c.start_factor, end_factor=c.end_factor, total_iters=length
                )
            case LRSchedulerType.POLYNOMIAL_LR:
                return schedulers.PolynomialLR(optimizer, total_iters=length, power=c.power)
            case LRSchedulerType.REDUCE_LR_ON_PLATEAU:
                return schedulers.ReduceLROnPlateau(
                    optimizer,
                    mode="max" if c.mode == "max" else "min",
                    factor=c.factor,
                    patience=c.patience,
                    threshold=c.threshold,
                    cooldown=c.cooldown,
                    min_lr=c.min_lr,
                )
            case _:  # aliases share their members' values, so this is unreachable
                raise ValueError(f"unknown lr_scheduler.type {c.type!r}")

    @property
    def constant(self) -> bool:
        """A constant schedule never changes the rate after warmup: stepping it would be wasted work."""
        return self.config.type is LRSchedulerType.CONSTANT_LR

    @property
    def on_plateau(self) -> bool:
        return isinstance(self.scheduler, schedulers.ReduceLROnPlateau)

    def in_warmup(self, completed_updates: int) -> bool:
        return completed_updates < self.warmup_iterations

    def due_after_update(self, completed_updates: int) -> bool:
        """Whether to step after update number ``completed_updates`` (warmup steps after every update)."""
        if self.in_warmup(completed_updates):
            return True
        if self.on_plateau or self.constant or self.interval.unit is not TimeUnit.ITERATION:
            return False
        since_warmup = completed_updates - self.warmup_iterations
        return since_warmup > 0 and since_warmup % self.interval.number == 0

    def due_after_epoch(self, completed_epochs: int, completed_updates: int) -> bool:
        # Not before one update has used the full rate: an epoch ending with the warmup would skip it otherwise.
        if self.on_plateau or self.constant or self.interval.unit is not TimeUnit.EPOCH:
            return False
        if completed_updates <= self.warmup_iterations:
            return False
        return completed_epochs % self.interval.number == 0

    def due_after_evaluation(self, completed_updates: int) -> bool:
        return self.on_plateau and not self.in_warmup(completed_updates)

    def step(self, completed_updates: int, metric: float | None = None) -> None:
        if self.in_warmup(completed_updates):
            self._set_warmup_lr(completed_updates)
        elif isinstance(self.scheduler, schedulers.ReduceLROnPlateau):
            if metric is None:
                raise ValueError("ReduceLROnPlateau needs the evaluation metric named by lr_scheduler.monitor")
            self.scheduler.step(metric)
        else:
            self.scheduler.step()

    def _set_warmup_lr(self, completed_updates: int) -> None:
        if not self.warmup_iterations:
            return
        fraction = min(1.0, (completed_updates + 1) / self.warmup_iterations)
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base_lr * fraction

    def get_last_lr(self) -> list[float]:
        return [float(group["lr"]) for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.state_dict(), "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state["scheduler"])
        self.base_lrs = list(state["base_lrs"])
        self._stretch_to_current_duration()

    def _stretch_to_current_duration(self) -> None:
        """A run resumed with another ``training.duration`` ends its schedule at the new end.

        The loaded state carries the length the schedule had when saved; a length derived from the duration
        (``total_iters`` unset) is set to the current one. The cosine and polynomial curves then continue
        from the current rate towards the new end. One-cycle keeps its cycle: its phases are fixed when built.
        """
        if self.config.total_iters is not None:
            return
        scheduler = self.scheduler
        if isinstance(scheduler, schedulers.CosineAnnealingLR) and scheduler.T_max != self.length:
            scheduler.T_max = self.length
        elif (
            isinstance(scheduler, schedulers.LinearLR | schedulers.PolynomialLR)
            and scheduler.total_iters != self.length
        ):
            scheduler.total_iters = self.length
        elif isinstance(scheduler, schedulers.OneCycleLR) and scheduler.total_steps != self.length:
            logger.warning(
                f"ONE_CYCLE_LR keeps its cycle of {scheduler.total_steps} updates from the checkpoint; "
                f"the new duration would need {self.length}"
            )
