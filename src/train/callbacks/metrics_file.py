"""Write every step's and every evaluation's numbers to a JSON-lines file in the run directory."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import IO, Any

from train.callback import Callback


class MetricsFile(Callback[Any]):
    """Appends one JSON object per line to ``<run_dir>/<filename>``, flushed at once so a killed run keeps it.

    Step rows: ``{"kind": "step", "step", "epoch", "iteration", "loss", "lr": [per group], "time"}`` every
    ``every_n_steps`` steps (``grad_norm`` too when clipping computes it). Evaluation rows:
    ``{"kind": "evaluation", "step", "epoch", "iteration", "time", <metric>: value, ...}``.
    Non-finite numbers (a NaN loss) are written as ``null`` so the file stays strict JSON.
    """

    def __init__(self, filename: str = "metrics.jsonl", every_n_steps: int = 1) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps={every_n_steps} is invalid: expected an integer >= 1")
        self.filename = filename
        self.every_n_steps = every_n_steps
        self.path: Path | None = None
        self._file: IO[str] | None = None

    def _write(self, row: dict[str, Any]) -> None:
        if self._file is None:
            return
        clean = {key: _finite_or_none(value) for key, value in row.items()}
        self._file.write(json.dumps(clean, allow_nan=False) + "\n")
        self._file.flush()

    @staticmethod
    def _clock_fields(trainer: Any) -> dict[str, Any]:
        clock = trainer.clock
        return {"step": clock.step, "epoch": clock.epoch, "iteration": clock.iteration, "time": clock.time_elapsed}

    def on_train_begin(self, trainer: Any) -> None:
        self.path = Path(trainer.run_dir) / self.filename
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")  # append: a resumed run continues the same file

    def on_batch_end(self, trainer: Any) -> None:
        if trainer.clock.step % self.every_n_steps:
            return
        row = {"kind": "step", **self._clock_fields(trainer), "loss": float(trainer.loss.detach())}
        row["lr"] = [float(group["lr"]) for group in trainer.optimizer.param_groups]
        if trainer.grad_norm is not None:
            row["grad_norm"] = float(trainer.grad_norm)
        self._write(row)

    def on_evaluate_end(self, trainer: Any) -> None:
        self._write({"kind": "evaluation", **self._clock_fields(trainer), **trainer.evaluation_metrics})

    def on_train_end(self, trainer: Any) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_finite_or_none(item) for item in value]  # pyright: ignore[reportUnknownVariableType]
    return value
