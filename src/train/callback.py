"""The Callback base class: one no-op method per hook point of the training loop.

Each hook is called as ``hook(trainer)``. The order within ``Trainer.train()`` is::

    on_init_begin, on_init_end                      (in Trainer.__init__, around model registration)
    on_train_begin
      on_epoch_begin                                (each epoch)
        on_batch_begin                              (each step)
          on_compute_loss_begin, on_compute_loss_end
                                                    (first step of an accumulation window: the last
                                                     update's gradients are cleared to None here)
          on_backward_begin, on_backward_end        (skipped for a non-finite loss under the "skip" policy)
          on_optimizer_step_begin, on_optimizer_step_end      (when an accumulation window is complete)
            on_lr_scheduler_step_begin, on_lr_scheduler_step_end  (when the schedule is due)
          on_evaluate_begin, on_evaluate_end        (when evaluation is due in steps or iterations)
        on_batch_end                                (everything of this step is done: a consistent point)
        on_lr_scheduler_step_begin, on_lr_scheduler_step_end  (epoch-interval schedules)
        on_evaluate_begin, on_evaluate_end          (when evaluation is due in epochs)
      on_epoch_end                                  (everything of this epoch is done)
    on_evaluate_begin, on_evaluate_end              (a final evaluation, unless one just ran)
    on_train_end
    on_exception                                    (instead, if train() raises: release what you hold;
                                                     the exception is in sys.exc_info() and is re-raised)

Clock counters count completed units and advance before the hooks that follow them: ``step`` right after
``on_backward_end``, ``iteration`` right after the optimizer update (so ``on_optimizer_step_end`` sees it),
``epoch`` as soon as the data pass ends (before the epoch's schedule step and evaluation). At
``on_batch_end`` and ``on_epoch_end`` the trainer is in a consistent state: checkpoints are taken there.
Callbacks run in registration order: the clock first, then those of ``@register_callback`` methods in
class order, then factory-built ones.
"""

from __future__ import annotations

from typing import Any, ClassVar, Generic, TypeVar

TrainerT = TypeVar("TrainerT")

HOOKS: tuple[str, ...] = (
    "on_init_begin",
    "on_init_end",
    "on_train_begin",
    "on_train_end",
    "on_epoch_begin",
    "on_epoch_end",
    "on_batch_begin",
    "on_batch_end",
    "on_backward_begin",
    "on_backward_end",
    "on_optimizer_step_begin",
    "on_optimizer_step_end",
    "on_compute_loss_begin",
    "on_compute_loss_end",
    "on_evaluate_begin",
    "on_evaluate_end",
    "on_lr_scheduler_step_begin",
    "on_lr_scheduler_step_end",
    "on_exception",
)
"""The guide's 18 hooks, plus ``on_exception`` so callbacks can clean up after a failed run."""


class Callback(Generic[TrainerT]):
    """Override any hook; the rest do nothing. ``state_dict`` holds what a restart must restore.

    In distributed training every rank runs the callbacks, except those whose class sets
    ``main_process_only = True``: they get hooks on rank 0 only. Set it on a callback that writes files
    or talks to a tracker (the built-in metrics file, plots, progress bar, TensorBoard and MLflow do);
    leave it ``False`` on one that changes training (e.g. requests a stop), which every rank must do alike.
    """

    main_process_only: ClassVar[bool] = False

    def on_init_begin(self, trainer: TrainerT) -> None: ...
    def on_init_end(self, trainer: TrainerT) -> None: ...
    def on_train_begin(self, trainer: TrainerT) -> None: ...
    def on_train_end(self, trainer: TrainerT) -> None: ...
    def on_epoch_begin(self, trainer: TrainerT) -> None: ...
    def on_epoch_end(self, trainer: TrainerT) -> None: ...
    def on_batch_begin(self, trainer: TrainerT) -> None: ...
    def on_batch_end(self, trainer: TrainerT) -> None: ...
    def on_backward_begin(self, trainer: TrainerT) -> None: ...
    def on_backward_end(self, trainer: TrainerT) -> None: ...
    def on_optimizer_step_begin(self, trainer: TrainerT) -> None: ...
    def on_optimizer_step_end(self, trainer: TrainerT) -> None: ...
    def on_compute_loss_begin(self, trainer: TrainerT) -> None: ...
    def on_compute_loss_end(self, trainer: TrainerT) -> None: ...
    def on_evaluate_begin(self, trainer: TrainerT) -> None: ...
    def on_evaluate_end(self, trainer: TrainerT) -> None: ...
    def on_lr_scheduler_step_begin(self, trainer: TrainerT) -> None: ...
    def on_lr_scheduler_step_end(self, trainer: TrainerT) -> None: ...
    def on_exception(self, trainer: TrainerT) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state
