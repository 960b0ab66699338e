"""Callbacks that kill their own process at a chosen point, to test recovery from real crashes.

Loaded by subprocess runs through ``+callbacks.<name>._target_=killer.<Class>`` with this folder on
PYTHONPATH. Callbacks run in registration order, so these (added last) act after the checkpoint callback.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from train.callback import Callback
from train.callbacks.checkpoint import Checkpointing


class KillAtStep(Callback[Any]):
    """SIGKILL this process at the end of step ``step`` (nothing after it runs: no cleanup at all)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_batch_end(self, trainer: Any) -> None:
        if trainer.clock.step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class SignalAtStep(Callback[Any]):
    """Send ``signal_name`` (e.g. SIGTERM) to this process at the end of step ``step``."""

    def __init__(self, step: int, signal_name: str = "SIGTERM") -> None:
        self.step = step
        self.signal_number = int(signal.Signals[signal_name])

    def on_batch_end(self, trainer: Any) -> None:
        if trainer.clock.step == self.step:
            os.kill(os.getpid(), self.signal_number)


class CheckpointingKilledMidWrite(Checkpointing):
    """Checkpointing that SIGKILLs the process while writing the checkpoint of step ``kill_step``."""

    def __init__(self, kill_step: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kill_step = kill_step

    def save(self, trainer: Any) -> Any:
        if trainer.clock.step == self.kill_step:
            import train.checkpointing as checkpointing

            original = checkpointing.save_file

            def save_then_die(*args: Any, **kwargs: Any) -> None:
                original(*args, **kwargs)  # one model file is written into the temporary directory...
                os.kill(os.getpid(), signal.SIGKILL)  # ...and the process dies before the rename

            checkpointing.save_file = save_then_die
        return super().save(trainer)
