"""The clock: final counts with gradient accumulation, accumulation windows, due-ness, stopping and state."""

from __future__ import annotations

import pytest
import torch
from tiny import Batch, TinyTrainer, run, tiny_config

from train import Callback, StepPlan, TimeUnit, TimeValue, TrainingClock

# 10 items in batches of 4: 3 steps per epoch; accumulation 2: windows of 2 steps then 1, so 2 updates per epoch.
N_ITEMS, BATCH, ACCUMULATION = 10, 4, "2:step"


@pytest.mark.parametrize(
    ("duration", "steps", "iterations", "epochs"),
    [
        ("2:epoch", 6, 4, 2),
        ("5:step", 5, 3, 1),
        ("3:iteration", 5, 3, 1),
        ("4:step", 4, 3, 1),  # the run ends inside a window: that cut-short window still ends in an update
        ("1:iteration", 2, 1, 0),
        ("1:epoch", 3, 2, 1),
    ],
)
def test_clock_counts_with_gradient_accumulation(duration: str, steps: int, iterations: int, epochs: int) -> None:
    config = tiny_config(duration=duration, batch_size=BATCH, gradient_accumulation=ACCUMULATION)
    trainer, recorder = run(config, n_items=N_ITEMS)
    clock = trainer.clock
    assert (clock.step, clock.iteration, clock.epoch) == (steps, iterations, epochs)
    assert len(recorder.hooks("on_optimizer_step_end")) == iterations
    assert len(recorder.hooks("on_batch_end")) == steps
    assert len(recorder.hooks("on_epoch_end")) == epochs
    assert trainer.total_steps == steps
    assert clock.done and clock.stop_reason is None


def test_updates_happen_at_window_ends() -> None:
    config = tiny_config(duration="2:epoch", batch_size=BATCH, gradient_accumulation=ACCUMULATION)
    _, recorder = run(config, n_items=N_ITEMS)
    # (step, iteration) as on_optimizer_step_end sees them: the iteration has already advanced.
    assert [(e.step, e.iteration) for e in recorder.hooks("on_optimizer_step_end")] == [(2, 1), (3, 2), (5, 3), (6, 4)]


def test_windows_restart_each_epoch_and_losses_are_averaged() -> None:
    """Each step's loss is divided by its window's size, so every update averages its window's gradients."""
    gradients: list[float] = []

    class BiasGrad(Callback[TinyTrainer]):
        def on_backward_end(self, trainer: TinyTrainer) -> None:
            grad = trainer.net.bias.grad
            assert grad is not None
            gradients.append(float(grad))

    def bias_loss(trainer: TinyTrainer, batch: Batch) -> torch.Tensor:
        return trainer.net.bias.sum()  # d loss / d bias = 1 at every step

    config = tiny_config(duration="2:epoch", batch_size=BATCH, gradient_accumulation=ACCUMULATION)
    trainer = TinyTrainer(config, n_items=N_ITEMS, callbacks=[BiasGrad()], loss_fn=bias_loss)
    initial_bias = float(trainer.net.bias.detach())
    trainer.train()
    # Epoch 1: window of 2 (1/2, then 1/2 + 1/2 accumulated), window of 1 (1, not divided); epoch 2 alike.
    assert gradients == [0.5, 1.0, 1.0, 0.5, 1.0, 1.0]
    # 4 SGD updates of lr 0.1 with a gradient of 1 each.
    assert float(trainer.net.bias.detach()) == pytest.approx(initial_bias - 0.4, abs=1e-6)


def test_accumulation_window_sizes() -> None:
    clock = TrainingClock(verbose=False)
    clock.start(StepPlan(steps_per_epoch=3, accumulation=2), total_steps=5)
    windows: list[tuple[int, int]] = []
    for _ in range(5):
        windows.append(clock.accumulation_window())
        clock.advance_step()
        if clock.step_in_epoch == 3:
            clock.advance_epoch()
    # epoch 1: steps 1-2 (size 2, ends at 2), step 3 (size 1, ends at 3); epoch 2: steps 4-5 (size 2, ends at 5).
    assert windows == [(2, 2), (2, 2), (1, 3), (2, 5), (2, 5)]


def test_accumulation_window_is_cut_by_the_end_of_training() -> None:
    clock = TrainingClock(verbose=False)
    clock.start(StepPlan(steps_per_epoch=8, accumulation=4), total_steps=6)
    for _ in range(4):
        clock.advance_step()
    assert clock.accumulation_window() == (2, 6)


def test_accumulation_window_needs_a_plan() -> None:
    with pytest.raises(RuntimeError, match="the clock has no step plan yet"):
        TrainingClock().accumulation_window()


def test_is_due() -> None:
    clock = TrainingClock(verbose=False)
    clock.step, clock.iteration, clock.epoch = 6, 3, 2
    assert clock.is_due(TimeValue.parse("2:step"), TimeUnit.STEP)
    assert clock.is_due(TimeValue.parse("3:step"), TimeUnit.STEP)
    assert not clock.is_due(TimeValue.parse("4:step"), TimeUnit.STEP)
    assert not clock.is_due(TimeValue.parse("2:step"), TimeUnit.ITERATION)  # asked about the wrong unit
    assert clock.is_due(TimeValue.parse("3:iteration"), TimeUnit.ITERATION)
    assert not clock.is_due(TimeValue.parse("2:iteration"), TimeUnit.ITERATION)
    assert clock.is_due(TimeValue.parse("1:epoch"), TimeUnit.EPOCH)
    assert not clock.is_due(TimeValue.parse("0:epoch"), TimeUnit.EPOCH)  # 0 never falls due


def test_done_before_and_after_start() -> None:
    clock = TrainingClock(verbose=False)
    assert not clock.done  # no plan yet
    clock.start(StepPlan(steps_per_epoch=2, accumulation=1), total_steps=2)
    assert not clock.done
    clock.advance_step()
    clock.advance_step()
    assert clock.done


class StopAt(Callback[TinyTrainer]):
    """Requests a stop from ``hook`` once the clock's step reaches ``step``."""

    def __init__(self, hook: str, step: int) -> None:
        self.hook, self.step = hook, step

    def _maybe_stop(self, trainer: TinyTrainer, hook: str) -> None:
        if hook == self.hook and trainer.clock.step == self.step and trainer.clock.stop_reason is None:
            trainer.clock.request_stop("test")

    def on_optimizer_step_end(self, trainer: TinyTrainer) -> None:
        self._maybe_stop(trainer, "on_optimizer_step_end")

    def on_batch_end(self, trainer: TinyTrainer) -> None:
        self._maybe_stop(trainer, "on_batch_end")


def test_request_stop_after_an_update() -> None:
    config = tiny_config(duration="4:epoch", batch_size=BATCH, gradient_accumulation=ACCUMULATION)
    trainer, recorder = run(config, n_items=N_ITEMS, callbacks=[StopAt("on_optimizer_step_end", 2)])
    assert (trainer.clock.step, trainer.clock.iteration, trainer.clock.epoch) == (2, 1, 0)
    assert trainer.clock.stop_reason == "test"
    assert recorder.hooks("on_epoch_end") == []  # stopped inside the first epoch
    assert [e.step for e in recorder.hooks("on_evaluate_begin")] == [2]  # the final evaluation
    assert recorder.hook_names[-1] == "on_train_end"


def test_request_stop_mid_window_finishes_the_window() -> None:
    """A stop asked for between two updates takes effect after the current window's update, as documented."""
    config = tiny_config(duration="4:epoch", batch_size=BATCH, gradient_accumulation=ACCUMULATION)
    trainer, recorder = run(config, n_items=N_ITEMS, callbacks=[StopAt("on_batch_end", 4)])
    # Step 4 opens the window of steps 4-5 in epoch 2: stopping there would drop its accumulated gradients.
    assert (trainer.clock.step, trainer.clock.iteration, trainer.clock.epoch) == (5, 3, 1)
    assert len(recorder.hooks("on_optimizer_step_end")) == 3


def test_state_dict_round_trip() -> None:
    config = tiny_config(duration="5:step", batch_size=BATCH, gradient_accumulation=ACCUMULATION)
    trainer, _ = run(config, n_items=N_ITEMS)
    state = trainer.clock.state_dict()
    assert {k: state[k] for k in ("step", "iteration", "epoch", "step_in_epoch", "last_evaluated_step")} == {
        "step": 5,
        "iteration": 3,
        "epoch": 1,
        "step_in_epoch": 2,
        "last_evaluated_step": 5,
    }
    restored = TrainingClock(verbose=False)
    restored.load_state_dict(state)
    assert (restored.step, restored.iteration, restored.epoch, restored.step_in_epoch) == (5, 3, 1, 2)
    assert restored.time_elapsed == pytest.approx(state["time_elapsed"])
    restored.step = 5
    assert restored.evaluated_at_current_step
