"""The training clock: step, iteration and epoch counters, elapsed time, and when things are due."""

from __future__ import annotations

import time
from typing import Any

from loguru import logger

from train.callback import Callback
from train.duration import StepPlan, TimeUnit, TimeValue


def format_seconds(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _count(number: float, unit: str) -> str:
    return f"{number:g} {unit}" + ("" if number == 1 else "s")


class TrainingClock(Callback[Any]):
    """Counts completed steps, iterations (optimizer updates) and epochs; logs progress when verbose.

    The loop advances the counters; this object answers "is X due?" and "are we done?" from them, so
    everything it knows is in :meth:`state_dict` and a restart needs nothing else. Its hooks only log, so in
    distributed training they run on rank 0 only (the loop advances the counters on every rank).
    """

    main_process_only = True

    def __init__(self, *, verbose: bool = True) -> None:
        self.verbose = verbose
        self.step = 0
        self.iteration = 0
        self.epoch = 0
        self.step_in_epoch = 0
        self.plan: StepPlan | None = None
        self.total_steps = 0
        self.stop_reason: str | None = None
        self.interrupted_by: int | None = None
        self._elapsed_before_start = 0.0
        self._started_at: float | None = None
        self._last_evaluated_step: int | None = None

    # -- setup and counters, driven by the loop ------------------------------------------------------
    def start(self, plan: StepPlan, total_steps: int) -> None:
        self.plan = plan
        self.total_steps = total_steps
        self._started_at = time.perf_counter()

    def stop_timer(self) -> None:
        self._elapsed_before_start = self.time_elapsed
        self._started_at = None

    def advance_step(self) -> None:
        self.step += 1
        self.step_in_epoch += 1

    def advance_iteration(self) -> None:
        self.iteration += 1

    def advance_epoch(self) -> None:
        self.epoch += 1
        self.step_in_epoch = 0

    def request_stop(self, reason: str, signal_number: int | None = None) -> None:
        """Ask the loop to stop after the current optimizer update (e.g. from an early-stopping callback).

        ``signal_number`` marks an interruption (SIGINT, SIGTERM): the run then skips its final evaluation
        and the runner reports it as interrupted rather than finished.
        """
        self.stop_reason = reason
        self.interrupted_by = signal_number

    def mark_evaluated(self) -> None:
        self._last_evaluated_step = self.step

    # -- questions ---------------------------------------------------------------------------------
    @property
    def time_elapsed(self) -> float:
        """Seconds spent in ``train()``, across restarts."""
        running = 0.0 if self._started_at is None else time.perf_counter() - self._started_at
        return self._elapsed_before_start + running

    @property
    def done(self) -> bool:
        finished = self.plan is not None and self.step >= self.total_steps
        return finished or (self.stop_reason is not None and self.at_update_boundary)

    @property
    def at_update_boundary(self) -> bool:
        """Whether no accumulation window is open, so a requested stop loses no accumulated gradient."""
        if self.plan is None:
            return True
        return self.step_in_epoch % self.plan.accumulation == 0 or self.step_in_epoch >= self.plan.steps_per_epoch

    @property
    def evaluated_at_current_step(self) -> bool:
        return self._last_evaluated_step == self.step

    def _require_plan(self) -> StepPlan:
        if self.plan is None:
            raise RuntimeError("the clock has no step plan yet: it is set when Trainer.train() starts")
        return self.plan

    def accumulation_window(self) -> tuple[int, int]:
        """(size, end step) of the gradient-accumulation window holding the next step.

        Windows restart at each epoch and never run past the end of training, so the last window of an
        epoch or of the run may be shorter than ``gradient_accumulation``.
        """
        plan = self._require_plan()
        epoch_start = self.step - self.step_in_epoch
        window_start = (self.step_in_epoch // plan.accumulation) * plan.accumulation
        end = min(epoch_start + min(window_start + plan.accumulation, plan.steps_per_epoch), self.total_steps)
        return end - (epoch_start + window_start), end

    def is_due(self, interval: TimeValue, unit: TimeUnit) -> bool:
        """Whether ``interval`` has just elapsed, asked right after a ``unit`` completed."""
        if interval.unit is not unit or interval.number == 0:
            return False
        count = self.step if unit is TimeUnit.STEP else self.iteration if unit is TimeUnit.ITERATION else self.epoch
        return count % interval.number == 0

    # -- restart state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "iteration": self.iteration,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "time_elapsed": self.time_elapsed,
            "last_evaluated_step": self._last_evaluated_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.iteration = int(state["iteration"])
        self.epoch = int(state["epoch"])
        self.step_in_epoch = int(state["step_in_epoch"])
        self._elapsed_before_start = float(state["time_elapsed"])
        self._last_evaluated_step = state["last_evaluated_step"]

    # -- logging hooks -------------------------------------------------------------------------------
    def on_train_begin(self, trainer: Any) -> None:
        if not self.verbose:
            return
        plan = self._require_plan()
        logger.info(
            f"Training for {self.total_steps} steps = {plan.iterations_in(self.total_steps)} iterations "
            f"({_count(self.total_steps / plan.steps_per_epoch, 'epoch')} of {_count(plan.steps_per_epoch, 'step')}, "
            f"gradient accumulation {plan.accumulation})" + (f", resuming at step {self.step}" if self.step else "")
        )

    def on_epoch_end(self, trainer: Any) -> None:
        if self.verbose:
            logger.info(
                f"Epoch {self.epoch} done: step {self.step}/{self.total_steps}, iteration {self.iteration}, "
                f"elapsed {format_seconds(self.time_elapsed)}"
            )

    def on_train_end(self, trainer: Any) -> None:
        if self.verbose:
            reason = f" ({self.stop_reason})" if self.stop_reason else ""
            logger.info(
                f"Training finished{reason}: {self.epoch} epochs, {self.iteration} iterations, {self.step} steps "
                f"in {format_seconds(self.time_elapsed)}"
            )
