"""EarlyStopping: patience, min_delta and stop_at end a run at the expected evaluation, and say why."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from callbacks_support import TinyTrainer, captured_logs, tiny_config, train_in

from train.callbacks import EarlyStopping

Evaluation = Callable[[TinyTrainer], dict[str, float]]


def scripted(values: Sequence[float], name: str = "val_loss") -> tuple[list[int], Evaluation]:
    """An evaluation returning ``values`` in turn; the list collects the step of each evaluation."""
    steps: list[int] = []

    def evaluate(trainer: TinyTrainer) -> dict[str, float]:
        steps.append(trainer.clock.step)
        return {name: values[len(steps) - 1], "other": 0.0}

    return steps, evaluate


def run_with(
    tmp_path: Path, stopper: EarlyStopping, values: Sequence[float], evaluation_interval: str = "1:epoch"
) -> tuple[TinyTrainer, list[int], list[str]]:
    """10 epochs of 2 steps, evaluated every ``evaluation_interval``, the evaluations returning ``values``."""
    steps, evaluate = scripted(values, stopper.monitor)
    config = tiny_config(duration="10:epoch", evaluation_interval=evaluation_interval)
    with captured_logs() as logs:
        trainer, _ = train_in(tmp_path, config, [stopper], n_items=4, evaluation_fn=evaluate)
    return trainer, steps, logs


def test_patience_stops_at_the_evaluation_that_exhausts_it(tmp_path: Path) -> None:
    """Best 0.5 at the 2nd evaluation; the 3rd and 4th do not improve: patience 2 stops after the 4th."""
    stopper = EarlyStopping(monitor="val_loss", mode="min", patience=2)
    trainer, steps, logs = run_with(tmp_path, stopper, [1.0, 0.5, 0.6, 0.55, 0.1, 0.1])
    assert steps == [2, 4, 6, 8]  # 2 steps an epoch; no final evaluation: the 4th was at the last step
    assert trainer.clock.step == 8 and trainer.clock.epoch == 4
    reason = trainer.clock.stop_reason
    assert reason is not None and reason.startswith("early stopping: val_loss did not improve")
    assert "in 2 evaluations (best 0.5 at step 4)" in reason
    assert any(line == f"Stopping at step 8: {reason}" for line in logs), logs
    assert stopper.state_dict() == {"best": 0.5, "best_step": 4, "evaluations_without_improvement": 2}


def test_min_delta_counts_small_improvements_as_none(tmp_path: Path) -> None:
    stopper = EarlyStopping(monitor="val_loss", mode="min", patience=2, min_delta=0.1)
    trainer, steps, _ = run_with(tmp_path, stopper, [1.0, 0.95, 0.92, 0.5])
    assert steps == [2, 4, 6]
    assert trainer.clock.step == 6


def test_max_mode_and_improvements_reset_the_count(tmp_path: Path) -> None:
    stopper = EarlyStopping(monitor="iou", mode="max", patience=2)
    trainer, steps, _ = run_with(tmp_path, stopper, [0.1, 0.05, 0.2, 0.1, 0.15, 0.9])
    assert steps == [2, 4, 6, 8, 10]
    assert trainer.clock.stop_reason is not None and "best 0.2 at step 6" in trainer.clock.stop_reason


def test_stop_at_threshold_stops_at_the_first_evaluation_reaching_it(tmp_path: Path) -> None:
    stopper = EarlyStopping(monitor="iou", mode="max", patience=None, stop_at=0.8)
    trainer, steps, logs = run_with(tmp_path, stopper, [0.1, 0.5, 0.85, 0.9])
    assert steps == [2, 4, 6]
    assert trainer.clock.stop_reason == "iou=0.85 reached stop_at: >= 0.8"
    assert "Stopping at step 6: iou=0.85 reached stop_at: >= 0.8" in logs


def test_a_step_interval_evaluation_stops_inside_an_epoch(tmp_path: Path) -> None:
    """Evaluation every 3 steps with 2-step epochs: a stop at step 9 ends the run mid-epoch, at step 9."""
    stopper = EarlyStopping(monitor="val_loss", mode="min", patience=1)
    trainer, steps, _ = run_with(tmp_path, stopper, [1.0, 0.5, 0.7, 0.1], evaluation_interval="3:step")
    assert steps == [3, 6, 9]
    assert trainer.clock.step == 9


def test_nan_counts_as_no_improvement(tmp_path: Path) -> None:
    nan = float("nan")
    stopper = EarlyStopping(monitor="val_loss", patience=2)
    trainer, steps, _ = run_with(tmp_path, stopper, [nan, 1.0, nan, nan, 0.1])
    assert steps == [2, 4, 6, 8]
    assert trainer.clock.stop_reason is not None and "best 1 at step 4" in trainer.clock.stop_reason


def test_a_monitor_the_evaluation_does_not_return_is_an_error(tmp_path: Path) -> None:
    stopper = EarlyStopping(monitor="accuracy", patience=1)
    steps, evaluate = scripted([1.0], name="val_loss")
    with pytest.raises(ValueError, match=r"monitor='accuracy' is not an evaluation metric.*\['other', 'val_loss'\]"):
        train_in(tmp_path, tiny_config(duration="1:epoch"), [stopper], n_items=4, evaluation_fn=evaluate)
    assert steps == [2]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"monitor": ""}, "monitor is empty"),
        ({"monitor": "x", "mode": "up"}, "mode='up'"),
        ({"monitor": "x", "patience": 0}, "patience=0"),
        ({"monitor": "x", "min_delta": -1.0}, "min_delta=-1.0"),
        ({"monitor": "x", "patience": None}, "patience and stop_at are both null"),
    ],
)
def test_invalid_options_are_refused(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EarlyStopping(**arguments)  # type: ignore[arg-type]


def test_state_dict_round_trip_keeps_counting() -> None:
    stopper = EarlyStopping(monitor="m", patience=3)
    stopper.load_state_dict({"best": 0.25, "best_step": 40, "evaluations_without_improvement": 2})
    assert (stopper.best, stopper.best_step, stopper.evaluations_without_improvement) == (0.25, 40, 2)
