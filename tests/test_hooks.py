"""The exact hook sequence of short runs, when the clock's counters advance, and the order of callbacks."""

from __future__ import annotations

from typing import Any

from tiny import Event, Recorder, TinyConfig, TinyTrainer, run, tiny_config

from train import HOOKS, Callback, CallbackConfig, LRSchedulerConfig, LRSchedulerType, register_callback


def test_recorder_implements_every_hook() -> None:
    assert len(HOOKS) == 19  # the guide's 18 and on_exception
    assert HOOKS[-1] == "on_exception"
    overridden = {name for name in vars(Recorder) if name.startswith("on_")}
    assert overridden == set(HOOKS)
    assert set(HOOKS) == {name for name in vars(Callback) if name.startswith("on_")}


def test_one_epoch_with_accumulation_hook_sequence_and_counters() -> None:
    """4 items, batches of 2, accumulation 2: one epoch is one window of 2 steps, i.e. one update."""
    config = tiny_config(
        duration="1:epoch",
        batch_size=2,
        gradient_accumulation="2:step",
        evaluation_interval="1:epoch",
        lr_scheduler=LRSchedulerConfig(type=LRSchedulerType.STEP_LR),  # a constant schedule is never stepped
    )
    _, recorder = run(config, n_items=4)
    step_one = [
        Event("on_batch_begin", 0, 0, 0),
        Event("on_compute_loss_begin", 0, 0, 0),
        Event("on_compute_loss_end", 0, 0, 0),
        Event("on_backward_begin", 0, 0, 0),
        Event("on_backward_end", 0, 0, 0),
        Event("on_batch_end", 1, 0, 0),  # step advanced right after on_backward_end
    ]
    step_two = [
        Event("on_batch_begin", 1, 0, 0),
        Event("on_compute_loss_begin", 1, 0, 0),
        Event("on_compute_loss_end", 1, 0, 0),
        Event("on_backward_begin", 1, 0, 0),
        Event("on_backward_end", 1, 0, 0),
        Event("on_optimizer_step_begin", 2, 0, 0),
        Event("on_optimizer_step_end", 2, 1, 0),  # iteration advanced by the update
        Event("on_lr_scheduler_step_begin", 2, 1, 0),
        Event("on_lr_scheduler_step_end", 2, 1, 0),
        Event("on_batch_end", 2, 1, 0),
    ]
    assert recorder.events == [
        Event("on_init_begin", 0, 0, 0),
        Event("on_init_end", 0, 0, 0),
        Event("on_train_begin", 0, 0, 0),
        Event("on_epoch_begin", 0, 0, 0),
        *step_one,
        *step_two,
        Event("on_evaluate_begin", 2, 1, 1),  # epoch advanced when the data pass ended; its evaluation...
        Event("on_evaluate_end", 2, 1, 1),
        Event("on_epoch_end", 2, 1, 1),  # ...runs before on_epoch_end, when the epoch is fully done
        Event("on_train_end", 2, 1, 1),  # and no second, final evaluation at the same step
    ]


def test_step_evaluation_and_epoch_schedule_hook_sequence() -> None:
    """Step-interval evaluation runs inside its step (before on_batch_end); an epoch-interval schedule steps
    before on_epoch_end, so both hooks mark points where everything of the step/epoch is done."""
    config = tiny_config(
        duration="1:epoch",
        batch_size=2,
        evaluation_interval="2:step",
        lr_scheduler=LRSchedulerConfig(type=LRSchedulerType.STEP_LR, update_interval="1:epoch"),
    )
    _, recorder = run(config, n_items=4)
    per_step = [
        "on_batch_begin",
        "on_compute_loss_begin",
        "on_compute_loss_end",
        "on_backward_begin",
        "on_backward_end",
        "on_optimizer_step_begin",
        "on_optimizer_step_end",
    ]
    assert recorder.hook_names == [
        "on_init_begin",
        "on_init_end",
        "on_train_begin",
        "on_epoch_begin",
        *per_step,
        "on_batch_end",
        *per_step,
        "on_evaluate_begin",
        "on_evaluate_end",
        "on_batch_end",
        "on_lr_scheduler_step_begin",
        "on_lr_scheduler_step_end",
        "on_epoch_end",
        "on_train_end",
    ]
    assert recorder.hooks("on_evaluate_begin") == [Event("on_evaluate_begin", 2, 2, 0)]
    assert recorder.hooks("on_lr_scheduler_step_begin") == [Event("on_lr_scheduler_step_begin", 2, 2, 1)]


def test_hooks_receive_the_trainer() -> None:
    seen: list[object] = []

    class Spy(Callback[Any]):
        def on_train_begin(self, trainer: Any) -> None:
            seen.append(trainer)

    trainer = TinyTrainer(tiny_config(duration="1:step"), callbacks=[Spy()])
    trainer.train()
    assert seen == [trainer]


class Named(Callback[Any]):
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def on_train_begin(self, trainer: Any) -> None:
        self.log.append(self.name)

    def on_init_begin(self, trainer: Any) -> None:
        self.log.append(f"{self.name}:init")


class AuditConfig(TinyConfig):
    second: CallbackConfig = CallbackConfig()
    first: CallbackConfig = CallbackConfig()


class AuditTrainer(TinyTrainer):
    def __init__(self, config: TinyConfig, log: list[str], callbacks: list[Callback[Any]]) -> None:
        self.log = log
        super().__init__(config, callbacks=callbacks)

    @register_callback()
    def first(self, config: CallbackConfig) -> Named:
        return Named("first", self.log)

    @register_callback()
    def second(self, config: CallbackConfig) -> Named:
        return Named("second", self.log)


def test_callbacks_run_in_registration_order() -> None:
    """The clock first, then decorated callbacks in class order (not config order), then factory-built ones."""
    log: list[str] = []
    config = AuditConfig(training=tiny_config(duration="1:step").training, clock=tiny_config().clock)
    trainer = AuditTrainer(config, log, [Named("factory", log)])
    assert list(trainer.callbacks) == ["clock", "first", "second", "recorder_0"]
    assert trainer.first is trainer.callbacks["first"]
    trainer.train()
    assert log == ["first:init", "second:init", "factory:init", "first", "second", "factory"]
