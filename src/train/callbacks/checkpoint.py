"""Checkpoints at an interval, at the end, and on SIGINT/SIGTERM; keeps the last K and the best one."""

from __future__ import annotations

import math
import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from loguru import logger

from train.callback import Callback
from train.checkpointing import (
    META_FILE,
    checkpoint_name,
    prune_checkpoints,
    save_checkpoint,
    save_weights,
    write_json,
)
from train.duration import TimeUnit, TimeValue

BEST_FILE = "best.json"
SIGNALS = (signal.SIGINT, signal.SIGTERM)


def requeue_signal() -> int | None:
    """In a submitit job, the signal it sends before the time limit or a pre-emption (USR2 by default).

    The checkpoint callback treats it as SIGTERM (save at the next update, stop); the Hydra app then hands it
    to submitit's own handler, restored by then, which requeues the job.
    """
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    number = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)
    return None if number is None else int(number)


def _is_main(trainer: Any) -> bool:
    return bool(getattr(trainer, "is_main_process", True))


class Checkpointing(Callback[Any]):
    """Save the trainer's full state into ``<run_dir>/<directory>/step_<step>/``.

    - every ``interval`` (at the first update boundary at or after it; epochs at the epoch's end),
    - at the end of training, where also each model's final weights go to ``<run_dir>/models/<name>.safetensors``,
    - on SIGINT or SIGTERM: training stops at the next update boundary, saves, and the run reports itself
      interrupted. A second signal is not caught (a second Ctrl-C stops at once).
    - in a submitit job (a SLURM sweep), on submitit's time-limit / pre-emption signal (USR2): the same; the
      Hydra app then lets submitit requeue the job, which resumes from this checkpoint.

    In distributed training every rank runs this callback (all must stop at the same step when one of them
    gets a signal), but only rank 0 writes.

    The newest ``keep_last`` checkpoints are kept, plus the best by ``best_metric`` (an evaluation metric,
    ``best_mode`` "max" or "min") when set, recorded in ``best.json``.
    """

    def __init__(
        self,
        interval: str = "1:epoch",
        keep_last: int = 2,
        best_metric: str | None = None,
        best_mode: str = "max",
        directory: str = "checkpoints",
        save_on_signal: bool = True,
    ) -> None:
        self.interval = TimeValue.parse(interval)
        if keep_last < 1:
            raise ValueError(f"keep_last={keep_last} is invalid: expected an integer >= 1")
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode={best_mode!r} is invalid: expected 'max' or 'min'")
        self.keep_last = keep_last
        self.best_metric = best_metric
        self.best_mode = best_mode
        self.directory_name = directory
        self.save_on_signal = save_on_signal
        self.directory = Path(directory)
        self.best: tuple[str, float] | None = None
        self._last_saved_step = 0
        self._signal: int | None = None
        self._previous_handlers: dict[int, Any] = {}

    # -- when to save ----------------------------------------------------------------------------------
    def _crossed(self, trainer: Any) -> bool:
        """Whether a step/iteration interval elapsed since the last save (saving waits for an update)."""
        clock = trainer.clock
        if self.interval.number == 0 or self.interval.unit is TimeUnit.EPOCH or not clock.at_update_boundary:
            return False
        if self.interval.unit is TimeUnit.STEP:
            return clock.step // self.interval.number > self._last_saved_step // self.interval.number
        last_iteration = trainer.step_plan.iterations_in(self._last_saved_step)
        return clock.iteration // self.interval.number > last_iteration // self.interval.number

    def on_train_begin(self, trainer: Any) -> None:
        self.directory = Path(trainer.run_dir) / self.directory_name
        self._last_saved_step = trainer.clock.step
        if self.save_on_signal:
            self._install_signal_handlers(trainer)

    def on_batch_end(self, trainer: Any) -> None:
        clock = trainer.clock
        if self._signal is not None and clock.at_update_boundary:
            self.save(trainer)
            clock.request_stop(f"received {signal.Signals(self._signal).name}", signal_number=self._signal)
        elif self._crossed(trainer):
            self.save(trainer)

    def on_epoch_end(self, trainer: Any) -> None:
        unit, number = self.interval.unit, self.interval.number
        if unit is TimeUnit.EPOCH and number and trainer.clock.epoch % number == 0:
            self.save(trainer)

    def on_evaluate_end(self, trainer: Any) -> None:
        # An evaluation may come after this step's checkpoint was saved: a step interval can end on the epoch's
        # last step, whose on_batch_end runs before the epoch's evaluation. That checkpoint holds the evaluated
        # weights, so it competes for the best one too (an evaluation before the save is handled by save()).
        path = self.directory / checkpoint_name(trainer.clock.step)
        if _is_main(trainer) and (path / META_FILE).is_file():
            self._update_best(trainer, path)

    def on_train_end(self, trainer: Any) -> None:
        self._restore_signal_handlers()
        self.save(trainer)
        if trainer.clock.interrupted_by is None and _is_main(trainer):
            for name, model in trainer.models.items():
                save_weights(model, Path(trainer.run_dir) / "models" / f"{name}.safetensors")

    def on_exception(self, trainer: Any) -> None:
        # No checkpoint of a failed state (e.g. after a NaN loss): the last good one stays the latest.
        self._restore_signal_handlers()

    # -- saving ----------------------------------------------------------------------------------------
    def save(self, trainer: Any) -> Path | None:
        """Write a checkpoint of the current step (rank 0 only: the others return None)."""
        if not _is_main(trainer):
            self._last_saved_step = trainer.clock.step
            return None
        path = save_checkpoint(trainer, self.directory)
        self._last_saved_step = trainer.clock.step
        if path is None:
            return None  # this step is saved already
        self._update_best(trainer, path)
        keep = {self.best[0]} if self.best else set[str]()
        prune_checkpoints(self.directory, self.keep_last, keep)
        logger.info(f"Checkpoint saved: {path}")
        return path

    def _update_best(self, trainer: Any, path: Path) -> None:
        if self.best_metric is None or not trainer.clock.evaluated_at_current_step:
            return
        value = trainer.evaluation_metrics.get(self.best_metric)
        if value is None or math.isnan(value):
            return
        better = self.best is None or (value > self.best[1] if self.best_mode == "max" else value < self.best[1])
        if better:
            self.best = (path.name, float(value))
            write_json(
                self.directory / BEST_FILE, {"checkpoint": path.name, "metric": self.best_metric, "value": value}
            )

    # -- restart state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"best_name": self.best[0] if self.best else None, "best_value": self.best[1] if self.best else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("best_name") is not None:
            self.best = (str(state["best_name"]), float(state["best_value"]))

    # -- signals ---------------------------------------------------------------------------------------
    def _install_signal_handlers(self, trainer: Any) -> None:
        if threading.current_thread() is not threading.main_thread():
            logger.warning("Not in the main thread: SIGINT/SIGTERM will not trigger a checkpoint")
            return

        def handle(number: int, frame: FrameType | None) -> None:
            del frame
            self._signal = number
            signal.signal(number, self._previous_handlers.get(number, signal.SIG_DFL))  # a second one is not caught
            name = signal.Signals(number).name
            logger.warning(f"Received {name}: saving a checkpoint at the next update boundary, then stopping")

        requeue = requeue_signal()
        for number in (*SIGNALS, requeue) if requeue is not None else SIGNALS:
            self._previous_handlers[number] = signal.getsignal(number)
            signal.signal(number, handle)

    def _restore_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for number, handler in self._previous_handlers.items():
            signal.signal(number, handler)
        self._previous_handlers.clear()
