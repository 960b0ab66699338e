"""Stop training when an evaluation metric stops improving, or once it reaches a target value."""

from __future__ import annotations

import math
from typing import Any

from loguru import logger

from train.callback import Callback


class EarlyStopping(Callback[Any]):
    """Watches evaluation metric ``monitor`` (``mode`` "min" or "max": which way is better) and stops:

    - after ``patience`` evaluations in a row without an improvement of more than ``min_delta`` over the
      best value so far (``patience: null`` turns this rule off);
    - as soon as the metric reaches ``stop_at`` (at or below it for "min", at or above for "max"), if set.

    Stopping goes through ``trainer.clock.request_stop(reason)``: the loop ends after the current update and
    the clock logs the reason. A NaN metric counts as no improvement. The best value and the count of
    evaluations without improvement are in :meth:`state_dict`, so a resumed run keeps counting.
    """

    def __init__(
        self,
        monitor: str,
        mode: str = "min",
        patience: int | None = 3,
        min_delta: float = 0.0,
        stop_at: float | None = None,
    ) -> None:
        if not monitor:
            raise ValueError("monitor is empty: expected the name of an evaluation metric")
        if mode not in ("min", "max"):
            raise ValueError(f"mode={mode!r} is invalid: expected 'min' or 'max'")
        if patience is not None and patience < 1:
            raise ValueError(f"patience={patience} is invalid: expected an integer >= 1, or null")
        if min_delta < 0:
            raise ValueError(f"min_delta={min_delta} is invalid: expected a number >= 0")
        if patience is None and stop_at is None:
            raise ValueError("patience and stop_at are both null: set at least one, or remove the callback")
        self.monitor = monitor
        self.mode = mode
        self.patience = patience
        self.min_delta = min_delta
        self.stop_at = stop_at
        self.best: float | None = None
        self.best_step: int | None = None
        self.evaluations_without_improvement = 0

    def _improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def _reached(self, value: float) -> bool:
        if self.stop_at is None or math.isnan(value):
            return False
        return value <= self.stop_at if self.mode == "min" else value >= self.stop_at

    def on_evaluate_end(self, trainer: Any) -> None:
        metrics: dict[str, float] = trainer.evaluation_metrics
        if self.monitor not in metrics:
            raise ValueError(
                f"EarlyStopping: monitor={self.monitor!r} is not an evaluation metric; "
                f"the evaluation returned {sorted(metrics) or 'none'}"
            )
        value = float(metrics[self.monitor])
        step = trainer.clock.step
        if self._improves(value):
            self.best, self.best_step = value, step
            self.evaluations_without_improvement = 0
        else:
            self.evaluations_without_improvement += 1

        reason: str | None = None
        if self._reached(value):
            comparison = "<=" if self.mode == "min" else ">="
            reason = f"{self.monitor}={value:.6g} reached stop_at: {comparison} {self.stop_at:g}"
        elif self.patience is not None and self.evaluations_without_improvement >= self.patience:
            reason = (
                f"early stopping: {self.monitor} did not improve by more than {self.min_delta:g} "
                f"in {self.evaluations_without_improvement} evaluations (best {self.best:.6g} at step {self.best_step})"
                if self.best is not None
                else f"early stopping: no finite {self.monitor} in {self.evaluations_without_improvement} evaluation(s)"
            )
        if reason is not None:
            logger.info(f"Stopping at step {step}: {reason}")
            trainer.clock.request_stop(reason)

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_step": self.best_step,
            "evaluations_without_improvement": self.evaluations_without_improvement,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state["best"]
        self.best_step = state["best_step"]
        self.evaluations_without_improvement = int(state["evaluations_without_improvement"])
