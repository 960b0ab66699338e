"""Show how training goes: a live progress bar on a terminal, a compact log line every N steps elsewhere."""

from __future__ import annotations

import math
import os
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from loguru import logger

from train.callback import Callback
from train.callbacks.step_logger import Throughput, learning_rates, samples_seen
from train.clock import format_seconds

if TYPE_CHECKING:
    from tqdm import tqdm

MODES = ("auto", "bar", "lines")

# The bar drawn now, if any. Callbacks get no hook when training raises, so a bar left open by a failed run
# (and loguru's sinks still routed through it) is closed when the next one starts.
_live: list[ProgressBar] = []


def is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # a closed stream
        return False


def _terminal_columns(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


class ProgressBar(Callback[Any]):
    """A tqdm bar (epoch, step, loss, learning rate, samples/s, ETA) or, off a terminal, log lines.

    ``mode``: ``"bar"``, ``"lines"`` or ``"auto"``: the bar when stdout and stderr are both terminals and the
    run is not a sweep job (``sweep_job`` set; the Hydra app fills it from ``hydra.job.num``), lines
    otherwise (files, CI, sweeps). Lines are logged every ``log_every_n_steps`` steps and at the last step.
    The bar reads the loss at most every ``refresh_seconds`` (reading it waits for the device).

    While the bar is drawn, loguru's terminal sinks write through ``tqdm.write``, so log lines (the clock's,
    the evaluation's) appear above the bar instead of through it; they are restored when training ends.
    In distributed training only rank 0 shows progress.
    """

    main_process_only = True

    def __init__(
        self,
        mode: str = "auto",
        log_every_n_steps: int = 50,
        refresh_seconds: float = 0.5,
        sweep_job: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is invalid: expected one of {', '.join(MODES)}")
        if log_every_n_steps < 1:
            raise ValueError(f"log_every_n_steps={log_every_n_steps} is invalid: expected an integer >= 1")
        self.mode = mode
        self.log_every_n_steps = log_every_n_steps
        self.refresh_seconds = refresh_seconds
        self.sweep_job = sweep_job
        self._bar: tqdm[Any] | None = None
        self._routed: list[tuple[Any, Any]] = []  # (loguru stream sink, its original stream)
        self._throughput = Throughput()
        self._last_refresh = -math.inf
        self._start_step = 0
        self._start_time = 0.0

    def use_bar(self) -> bool:
        if self.mode != "auto":
            return self.mode == "bar"
        if self.sweep_job is not None or os.environ.get("TERM") == "dumb":
            return False
        return is_terminal(sys.stdout) and is_terminal(sys.stderr)

    # -- what is shown -----------------------------------------------------------------------------------
    @staticmethod
    def _epochs(trainer: Any) -> tuple[int, int]:
        """(current epoch counting from 1, total epochs) at a step's end, before the epoch counter advances."""
        clock = trainer.clock
        per_epoch = trainer.step_plan.steps_per_epoch
        total = max(1, math.ceil(clock.total_steps / per_epoch))
        current = clock.epoch + (0 if clock.step_in_epoch == 0 else 1)
        return max(1, min(current, total)), total

    def _fields(self, trainer: Any) -> list[str]:
        fields = [f"loss {float(trainer.loss.detach()):.4g}"]
        lrs = learning_rates(trainer)
        if lrs:
            fields.append("lr " + "/".join(f"{lr:.3g}" for lr in lrs))
        rate = self._throughput.read(samples_seen(trainer))
        if rate is not None:
            fields.append(f"{rate:.4g} samples/s")
        return fields

    def _eta(self, trainer: Any) -> str:
        clock = trainer.clock
        done = clock.step - self._start_step
        if done <= 0:
            return "?"
        seconds_per_step = (clock.time_elapsed - self._start_time) / done
        return format_seconds(seconds_per_step * max(0, clock.total_steps - clock.step))

    # -- hooks ---------------------------------------------------------------------------------------------
    def on_train_begin(self, trainer: Any) -> None:
        while _live:
            _live.pop()._close_bar()
        clock = trainer.clock
        self._start_step, self._start_time = clock.step, clock.time_elapsed
        self._throughput.reset(samples_seen(trainer))
        self._last_refresh = -math.inf
        if self.use_bar():
            self._open_bar(trainer)

    def on_evaluate_begin(self, trainer: Any) -> None:
        self._throughput.pause()

    def on_evaluate_end(self, trainer: Any) -> None:
        self._throughput.resume()

    def on_batch_end(self, trainer: Any) -> None:
        clock = trainer.clock
        if self._bar is not None:
            now = time.perf_counter()
            if now - self._last_refresh >= self.refresh_seconds or clock.step >= clock.total_steps:
                self._last_refresh = now
                epoch, epochs = self._epochs(trainer)
                self._bar.set_description_str(f"epoch {epoch}/{epochs}", refresh=False)
                self._bar.set_postfix_str(", ".join(self._fields(trainer)), refresh=False)
            self._bar.update(clock.step - self._bar.n)
        elif clock.step % self.log_every_n_steps == 0 or clock.step >= clock.total_steps:
            epoch, epochs = self._epochs(trainer)
            percent = 100 * clock.step / max(1, clock.total_steps)
            fields = [f"step {clock.step}/{clock.total_steps} ({percent:.0f}%)", f"epoch {epoch}/{epochs}"]
            fields += [*self._fields(trainer), f"eta {self._eta(trainer)}"]
            logger.info(" | ".join(fields))

    def on_train_end(self, trainer: Any) -> None:
        self._close_bar()

    def on_exception(self, trainer: Any) -> None:
        self._close_bar()

    # -- the bar and loguru ----------------------------------------------------------------------------------
    def _open_bar(self, trainer: Any) -> None:
        from tqdm import tqdm  # already loaded by torch; imported here so train.callbacks stays light

        clock = trainer.clock
        epochs = self._epochs(trainer)[1]
        # A terminal that reports no size (a bare pseudo-terminal) would get a bar of width 0.
        sized = _terminal_columns(sys.stderr) > 0
        self._bar = tqdm(
            total=clock.total_steps,
            initial=clock.step,
            desc=f"epoch {min(clock.epoch + 1, epochs)}/{epochs}",
            file=sys.stderr,
            dynamic_ncols=sized,
            ncols=None if sized else 100,
            nrows=None if sized else 24,
            leave=True,
            disable=False,  # tqdm would disable itself off a terminal: that was decided above
            mininterval=self.refresh_seconds / 2,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| step {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]",
        )
        self._route_loguru(tqdm)
        _live.append(self)

    def _close_bar(self) -> None:
        if self in _live:
            _live.remove(self)
        self._restore_loguru()
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _route_loguru(self, tqdm_class: type[tqdm[Any]]) -> None:
        """Point loguru's terminal sinks at ``tqdm.write``: it lifts the bar, writes the line, redraws it.

        Loguru has no public way to list or retarget sinks, so this swaps the stream inside each of its
        stream sinks that writes to a terminal (file sinks such as train.log are left alone); if loguru's
        internals ever change, the bar still works and log lines merely cross it.
        """
        handlers: dict[int, Any] = getattr(getattr(logger, "_core", None), "handlers", None) or {}
        for handler in list(handlers.values()):
            sink: Any = getattr(handler, "_sink", None)
            stream = getattr(sink, "_stream", None)
            if stream is None or not is_terminal(stream):
                continue
            sink._stream = _BarWriter(tqdm_class, stream)
            self._routed.append((sink, stream))

    def _restore_loguru(self) -> None:
        for sink, stream in self._routed:
            sink._stream = stream
        self._routed.clear()


class _BarWriter:
    """A stream for a loguru sink that writes each message above the live progress bar."""

    def __init__(self, tqdm_class: type[tqdm[Any]], stream: TextIO) -> None:
        self._tqdm = tqdm_class
        self._stream = stream

    def write(self, message: str) -> None:
        self._tqdm.write(message, file=self._stream, end="")

    def flush(self) -> None:
        self._stream.flush()
