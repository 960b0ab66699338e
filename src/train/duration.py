"""Durations such as ``"1000:epoch"``: parsing, units and conversion to steps."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum


class TimeUnit(StrEnum):
    """The three clocks of a training run.

    - ``step``: one batch through forward and backward.
    - ``iteration``: one optimizer update, i.e. ``gradient_accumulation`` steps.
    - ``epoch``: one pass over the dataset.
    """

    STEP = "step"
    ITERATION = "iteration"
    EPOCH = "epoch"


_PATTERN = re.compile(r"^\s*(?P<number>\d+)\s*:\s*(?P<unit>[A-Za-z]+)\s*$")
_UNITS_HELP = "'N:step', 'N:iteration' or 'N:epoch' with N a non-negative integer (e.g. '1000:epoch')"


@dataclass(frozen=True)
class TimeValue:
    """An amount of training time: a whole number of steps, iterations or epochs."""

    number: int
    unit: TimeUnit

    def __post_init__(self) -> None:
        if self.number < 0:
            raise ValueError(f"time value {self.number}:{self.unit.value} is negative; expected {_UNITS_HELP}")

    @classmethod
    def parse(cls, text: str | TimeValue) -> TimeValue:
        """Parse ``"N:unit"``, case-insensitively, with optional spaces and plural units."""
        if isinstance(text, TimeValue):
            return text
        if not isinstance(text, str):  # pyright: ignore[reportUnnecessaryIsInstance] - configs come from YAML
            raise ValueError(f"invalid time value {text!r}: expected a string {_UNITS_HELP}")
        match = _PATTERN.match(text)
        if match is None:
            raise ValueError(f"invalid time value {text!r}: expected {_UNITS_HELP}")
        unit_text = match["unit"].lower()
        singular = unit_text[:-1] if unit_text.endswith("s") else unit_text
        try:
            unit = TimeUnit(singular)
        except ValueError:
            raise ValueError(f"invalid time unit {match['unit']!r} in {text!r}: expected {_UNITS_HELP}") from None
        return cls(number=int(match["number"]), unit=unit)

    def __str__(self) -> str:
        return f"{self.number}:{self.unit.value}"


@dataclass(frozen=True)
class StepPlan:
    """How steps group into iterations and epochs for one run.

    Gradient accumulation restarts at every epoch: an epoch of ``steps_per_epoch`` batches is cut into
    windows of ``accumulation`` steps, the last one possibly shorter, and every window ends with one
    optimizer update. So each epoch ends on an update and no gradient leaks from one epoch into the next.
    """

    steps_per_epoch: int
    accumulation: int

    def __post_init__(self) -> None:
        if self.steps_per_epoch < 1:
            raise ValueError(f"an epoch must hold at least one batch, got steps_per_epoch={self.steps_per_epoch}")
        if self.accumulation < 1:
            raise ValueError(f"gradient accumulation must be at least 1 step, got {self.accumulation}")

    @property
    def iterations_per_epoch(self) -> int:
        return math.ceil(self.steps_per_epoch / self.accumulation)

    def to_steps(self, value: TimeValue) -> int:
        """The number of steps after which ``value`` has elapsed, counted from the start of training."""
        match value.unit:
            case TimeUnit.STEP:
                return value.number
            case TimeUnit.EPOCH:
                return value.number * self.steps_per_epoch
            case TimeUnit.ITERATION:
                epochs, iterations = divmod(value.number, self.iterations_per_epoch)
                return epochs * self.steps_per_epoch + iterations * self.accumulation

    def iterations_in(self, steps: int) -> int:
        """How many optimizer updates the first ``steps`` steps contain (a cut-short window counts)."""
        epochs, rest = divmod(steps, self.steps_per_epoch)
        return epochs * self.iterations_per_epoch + math.ceil(rest / self.accumulation)

    def to_iterations(self, value: TimeValue) -> int:
        return self.iterations_in(self.to_steps(value))
