"""Durations: parsing ``"N:unit"`` strings, their canonical form, and converting them with a StepPlan."""

from __future__ import annotations

import re
from typing import Any

import pytest

from train import ConfigError, LRSchedulerConfig, StepPlan, TimeUnit, TimeValue, TrainingConfig

FORM = "'N:step', 'N:iteration' or 'N:epoch' with N a non-negative integer (e.g. '1000:epoch')"


@pytest.mark.parametrize(
    ("text", "number", "unit", "canonical"),
    [
        ("1000:epoch", 1000, TimeUnit.EPOCH, "1000:epoch"),
        ("10 : Epochs", 10, TimeUnit.EPOCH, "10:epoch"),
        ("3:STEPS", 3, TimeUnit.STEP, "3:step"),
        ("2:iteration", 2, TimeUnit.ITERATION, "2:iteration"),
        ("  7:Iterations ", 7, TimeUnit.ITERATION, "7:iteration"),
        ("0:step", 0, TimeUnit.STEP, "0:step"),
    ],
)
def test_parse_valid(text: str, number: int, unit: TimeUnit, canonical: str) -> None:
    value = TimeValue.parse(text)
    assert value == TimeValue(number=number, unit=unit)
    assert (value.number, value.unit) == (number, unit)
    assert str(value) == canonical
    assert TimeValue.parse(str(value)) == value
    assert TimeValue.parse(value) is value


@pytest.mark.parametrize("text", ["abc", "10", "10:fortnight", "-1:step", "1.5:epoch", ":epoch", "", "10:epoch:1"])
def test_parse_invalid_names_value_and_form(text: str) -> None:
    with pytest.raises(ValueError) as error:
        TimeValue.parse(text)
    message = str(error.value)
    assert repr(text) in message
    assert FORM in message


def test_parse_invalid_messages_exactly() -> None:
    with pytest.raises(ValueError, match=re.escape(f"invalid time value 'abc': expected {FORM}")):
        TimeValue.parse("abc")
    with pytest.raises(
        ValueError, match=re.escape(f"invalid time unit 'fortnight' in '10:fortnight': expected {FORM}")
    ):
        TimeValue.parse("10:fortnight")


def test_negative_time_value_rejected() -> None:
    with pytest.raises(ValueError, match=re.escape("time value -1:step is negative")):
        TimeValue(number=-1, unit=TimeUnit.STEP)


def test_config_fields_normalise_durations() -> None:
    config = TrainingConfig(duration="10 : Epochs", gradient_accumulation=" 4:Steps", evaluation_interval="0:EPOCH")
    assert config.duration == "10:epoch"
    assert config.gradient_accumulation == "4:step"
    assert config.evaluation_interval == "0:epoch"
    schedule = LRSchedulerConfig(update_interval="2 : iterations", warmup="8:STEPS")
    assert (schedule.update_interval, schedule.warmup) == ("2:iteration", "8:step")


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("duration", "abc", "'N:step' or 'N:iteration' or 'N:epoch' with N >= 1"),
        ("duration", "0:epoch", "'N:step' or 'N:iteration' or 'N:epoch' with N >= 1"),
        ("duration", "3", "'N:step' or 'N:iteration' or 'N:epoch' with N >= 1"),
        ("evaluation_interval", "1:fortnight", "'N:step' or 'N:iteration' or 'N:epoch' with N >= 0"),
        ("gradient_accumulation", "0:step", "'N:step' with N >= 1"),
    ],
)
def test_config_rejects_bad_durations(field: str, value: str, expected: str) -> None:
    kwargs: dict[str, Any] = {field: value}
    with pytest.raises(ConfigError) as error:
        TrainingConfig(**kwargs)
    assert str(error.value) == f"TrainingConfig.{field}={value!r} is invalid: expected {expected}"
    assert (error.value.owner, error.value.field, error.value.value) == ("TrainingConfig", field, value)


def test_config_error_for_abc_duration() -> None:
    with pytest.raises(ConfigError, match=re.escape("TrainingConfig.duration='abc' is invalid")):
        TrainingConfig(duration="abc")


# -- StepPlan: 10 items in batches of 4 = 3 steps per epoch; accumulation 2 = windows of 2 then 1 ---------------


def test_step_plan_iterations_per_epoch() -> None:
    assert StepPlan(steps_per_epoch=3, accumulation=2).iterations_per_epoch == 2
    assert StepPlan(steps_per_epoch=4, accumulation=2).iterations_per_epoch == 2
    assert StepPlan(steps_per_epoch=5, accumulation=1).iterations_per_epoch == 5
    assert StepPlan(steps_per_epoch=3, accumulation=8).iterations_per_epoch == 1


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        ("0:step", 0),
        ("5:step", 5),
        ("1:epoch", 3),
        ("2:epoch", 6),
        ("1:iteration", 2),  # the first window: steps 1-2
        ("2:iteration", 3),  # the short window closing epoch 1: step 3
        ("3:iteration", 5),  # 1 epoch (3 steps) + one window of 2
        ("4:iteration", 6),
        ("5:iteration", 8),
    ],
)
def test_step_plan_to_steps(text: str, steps: int) -> None:
    assert StepPlan(steps_per_epoch=3, accumulation=2).to_steps(TimeValue.parse(text)) == steps


@pytest.mark.parametrize(
    ("steps", "iterations"),
    [(0, 0), (1, 1), (2, 1), (3, 2), (4, 3), (5, 3), (6, 4), (7, 5), (9, 6)],
)
def test_step_plan_iterations_in(steps: int, iterations: int) -> None:
    assert StepPlan(steps_per_epoch=3, accumulation=2).iterations_in(steps) == iterations


def test_step_plan_to_iterations() -> None:
    plan = StepPlan(steps_per_epoch=8, accumulation=2)
    assert plan.to_iterations(TimeValue.parse("4:iteration")) == 4
    assert plan.to_iterations(TimeValue.parse("8:step")) == 4
    assert plan.to_iterations(TimeValue.parse("1:epoch")) == 4
    assert plan.to_iterations(TimeValue.parse("3:step")) == 2  # a started window counts


def test_step_plan_rejects_empty_epochs_and_accumulation() -> None:
    with pytest.raises(ValueError, match="an epoch must hold at least one batch, got steps_per_epoch=0"):
        StepPlan(steps_per_epoch=0, accumulation=1)
    with pytest.raises(ValueError, match="gradient accumulation must be at least 1 step, got 0"):
        StepPlan(steps_per_epoch=1, accumulation=0)
