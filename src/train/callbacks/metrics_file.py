"""Write every step's and every evaluation's numbers to a JSON-lines file in the run directory; read it back."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from train.callbacks.step_logger import StepLogger, StepRow

DEFAULT_FILENAME = "metrics.jsonl"


class MetricsFile(StepLogger):
    """Appends one JSON object per line to ``<run_dir>/<filename>``, flushed at once so a killed run keeps it.

    Step rows, every ``every_n_steps`` steps and at the last one: ``{"kind": "step", "step", "epoch",
    "iteration", "time", "loss", "lr": [per parameter group], "samples_per_second"}``, plus ``"grad_norm"``
    on steps that ended with an optimizer update. Evaluation rows: ``{"kind": "evaluation", "step", "epoch",
    "iteration", "time", <metric>: value, ...}``. Non-finite numbers (a NaN loss) are written as ``null`` so
    the file stays strict JSON. :func:`read_metrics` reads it back.
    """

    def __init__(self, filename: str = DEFAULT_FILENAME, every_n_steps: int = 1, grad_norm: bool = True) -> None:
        super().__init__(every_n_steps=every_n_steps, grad_norm=grad_norm)
        self.filename = filename
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

    def open(self, trainer: Any) -> None:
        self.path = Path(trainer.run_dir) / self.filename
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")  # append: a resumed run continues the same file

    def write_step(self, trainer: Any, row: StepRow) -> None:
        record: dict[str, Any] = {
            "kind": "step",
            "step": row.step,
            "epoch": row.epoch,
            "iteration": row.iteration,
            "time": row.time,
            "loss": row.loss,
            "lr": row.lrs,
            "samples_per_second": row.samples_per_second,
        }
        if row.grad_norm is not None:
            record["grad_norm"] = row.grad_norm
        self._write(record)

    def write_evaluation(self, trainer: Any, metrics: dict[str, float]) -> None:
        self._write({"kind": "evaluation", **self._clock_fields(trainer), **metrics})

    def close(self, trainer: Any) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass
class MetricsLog:
    """The rows of a metrics file, split by kind, in step order."""

    steps: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])
    evaluations: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])

    @property
    def evaluation_names(self) -> list[str]:
        """The evaluation metrics, in the order they first appear."""
        names: dict[str, None] = {}
        for row in self.evaluations:
            names.update((key, None) for key in row if key not in _CLOCK_KEYS)
        return list(names)

    def last_evaluation(self) -> dict[str, float]:
        """The metrics of the last evaluation (numbers only), or {} if there was none."""
        if not self.evaluations:
            return {}
        last = self.evaluations[-1]
        return {key: float(value) for key, value in last.items() if key not in _CLOCK_KEYS and _is_number(value)}


_CLOCK_KEYS = frozenset({"kind", "step", "epoch", "iteration", "time"})


def read_metrics(path: str | Path) -> MetricsLog:
    """Read a metrics file, also one still being written or cut short by a kill (a partial last line).

    A resumed run appends rows for steps the killed run had already logged; the later rows win, so each
    kind's rows stay in step order.
    """
    log = MetricsLog()
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return log
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
        if not isinstance(row, dict) or not _is_number(row.get("step")):
            continue
        record: dict[str, Any] = row  # pyright: ignore[reportUnknownVariableType]
        rows = log.evaluations if record.get("kind") == "evaluation" else log.steps
        while rows and rows[-1]["step"] >= record["step"]:
            rows.pop()
        rows.append(record)
    return log


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_finite_or_none(item) for item in value]  # pyright: ignore[reportUnknownVariableType]
    return value
