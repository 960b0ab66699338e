"""Optimizer groups per model, warmup counted in updates, schedules after warmup, and gradient clipping."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from tiny import TinyTrainer, linear_factory, run, tiny_config

from train import LRSchedulerConfig, LRSchedulerType, ModelConfig, OptimizerConfig, Optimizers
from train.trainer import Metrics

SGD_LR_1 = OptimizerConfig(optimizer=Optimizers.SGD, learning_rate=1.0)


def lrs_used(
    lr_scheduler: LRSchedulerConfig, *, duration: str = "1:epoch", n_items: int = 16, **training: Any
) -> tuple[list[float], float]:
    """The lr each optimizer update used (read at on_optimizer_step_begin), and the lr left after training.

    16 items in batches of 2 with accumulation 2: 8 steps = 4 updates per epoch.
    """
    training.setdefault("gradient_accumulation", "2:step")
    config = tiny_config(duration=duration, optimizer=SGD_LR_1, lr_scheduler=lr_scheduler, **training)
    trainer, recorder = run(config, n_items=n_items)
    return recorder.first_group_lrs, float(trainer.optimizer.param_groups[0]["lr"])


def cosine(step: int, length: int, eta_min: float, lr: float = 1.0) -> float:
    return eta_min + (lr - eta_min) * (1 + math.cos(math.pi * step / length)) / 2


# -- warmup ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("warmup", ["4:iteration", "8:step", "1:epoch"])
def test_warmup_counts_optimizer_updates_with_accumulation(warmup: str) -> None:
    """Update k of 4 uses k/4 of the lr, whatever the unit of the same warmup (4 updates = 8 steps = 1 epoch)."""
    used, _ = lrs_used(LRSchedulerConfig(warmup=warmup), duration="6:iteration")
    assert used == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])


def test_warmup_without_accumulation() -> None:
    used, _ = lrs_used(LRSchedulerConfig(warmup="2:iteration"), duration="4:iteration", gradient_accumulation="1:step")
    assert used == pytest.approx([0.5, 1.0, 1.0, 1.0])


def test_step_lr_starts_after_warmup() -> None:
    schedule = LRSchedulerConfig(type=LRSchedulerType.STEP_LR, step_size=1, gamma=0.5, warmup="4:iteration")
    used, last = lrs_used(schedule, duration="7:iteration")
    assert used == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 0.5, 0.25])
    assert last == pytest.approx(0.125)


def test_step_lr_without_warmup_and_update_interval() -> None:
    schedule = LRSchedulerConfig(type=LRSchedulerType.STEP_LR, step_size=1, gamma=0.5, update_interval="2:iteration")
    used, _ = lrs_used(schedule, duration="6:iteration")
    assert used == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25, 0.25])


def test_multi_step_lr_milestones_count_scheduler_updates() -> None:
    schedule = LRSchedulerConfig(type=LRSchedulerType.MULTI_STEP_LR, milestones=[2, 3], gamma=0.1)
    used, _ = lrs_used(schedule, duration="5:iteration")
    assert used == pytest.approx([1.0, 1.0, 0.1, 0.01, 0.01])


def test_epoch_interval_schedule_steps_after_each_epoch() -> None:
    schedule = LRSchedulerConfig(type=LRSchedulerType.EXPONENTIAL_LR, gamma=0.5, update_interval="1:epoch")
    used, last = lrs_used(schedule, duration="3:epoch", n_items=4)  # 2 steps = 1 update per epoch
    assert used == pytest.approx([1.0, 0.5, 0.25])
    assert last == pytest.approx(0.125)


def test_cosine_length_comes_from_the_duration() -> None:
    """2 epochs = 8 updates; no warmup: the schedule has 8 steps and reaches eta_min after the last update."""
    schedule = LRSchedulerConfig(type=LRSchedulerType.COSINE_ANNEALING_LR, eta_min=0.1)
    used, last = lrs_used(schedule, duration="2:epoch")
    assert used == pytest.approx([cosine(k, 8, 0.1) for k in range(8)])
    assert used[-1] == pytest.approx(0.13425, abs=1e-5)  # within 4% of the range above eta_min
    assert last == pytest.approx(0.1)


def test_cosine_length_excludes_warmup() -> None:
    schedule = LRSchedulerConfig(type=LRSchedulerType.COSINE_ANNEALING_LR, eta_min=0.1, warmup="2:iteration")
    used, last = lrs_used(schedule, duration="2:epoch")
    assert used == pytest.approx([0.5, 1.0] + [cosine(k, 6, 0.1) for k in range(6)])
    assert last == pytest.approx(0.1)


def test_cosine_total_iters_overrides_the_length() -> None:
    schedule = LRSchedulerConfig(type=LRSchedulerType.COSINE_ANNEALING_LR, total_iters=4)
    used, _ = lrs_used(schedule, duration="5:iteration")
    assert used == pytest.approx([cosine(k, 4, 0.0) for k in range(5)], abs=1e-12)


def test_epoch_schedule_starts_at_the_full_rate_after_a_whole_epoch_of_warmup() -> None:
    """Warmup fills epoch 1 (4 updates): the epoch's end must not step the schedule before update 5 used 1.0."""
    schedule = LRSchedulerConfig(
        type=LRSchedulerType.STEP_LR, step_size=1, gamma=0.5, update_interval="1:epoch", warmup="1:epoch"
    )
    used, last = lrs_used(schedule, duration="3:epoch")
    assert used == pytest.approx([0.25, 0.5, 0.75, 1.0] + [1.0] * 4 + [0.5] * 4)
    assert last == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("warmup", "expected"),
    [
        # warmup ends inside epoch 1: the schedule steps at the end of epochs 1-4 (length 4)
        ("2:iteration", [0.5, 1.0, 1.0, 1.0] + [v for k in (1, 2, 3) for v in [cosine(k, 4, 0.0)] * 4]),
        # warmup fills epoch 1: the schedule steps at the end of epochs 2-4 (length 3)
        ("1:epoch", [0.25, 0.5, 0.75, 1.0] + [v for k in (0, 1, 2) for v in [cosine(k, 3, 0.0)] * 4]),
    ],
)
def test_epoch_cosine_with_warmup_ends_at_eta_min(warmup: str, expected: list[float]) -> None:
    schedule = LRSchedulerConfig(type=LRSchedulerType.COSINE_ANNEALING_LR, update_interval="1:epoch", warmup=warmup)
    used, last = lrs_used(schedule, duration="4:epoch")
    assert used == pytest.approx(expected)
    assert last == pytest.approx(0.0, abs=1e-12)


def test_linear_lr_length_comes_from_the_duration() -> None:
    schedule = LRSchedulerConfig(type=LRSchedulerType.LINEAR_LR, start_factor=0.5, end_factor=1.0)
    used, last = lrs_used(schedule, duration="1:epoch")
    assert used == pytest.approx([0.5, 0.625, 0.75, 0.875])
    assert last == pytest.approx(1.0)


def plateau_run(**schedule: Any) -> tuple[list[float], float, int]:
    """8 items in batches of 2, evaluated after every step with a constant metric ``loss``."""

    def constant(trainer: TinyTrainer) -> Metrics:
        return {"loss": 1.0, "other": 2.0}

    config = tiny_config(
        duration="1:epoch",
        optimizer=SGD_LR_1,
        lr_scheduler=LRSchedulerConfig(
            type=LRSchedulerType.REDUCE_LR_ON_PLATEAU,
            factor=0.5,
            patience=0,
            **schedule,
        ),
        evaluation_interval="1:step",
    )
    trainer, recorder = run(config, evaluation_fn=constant)
    return recorder.first_group_lrs, float(trainer.optimizer.param_groups[0]["lr"]), trainer.evaluation_calls


def test_reduce_on_plateau_halves_the_lr_after_each_stale_evaluation() -> None:
    used, last, evaluations = plateau_run(monitor="loss")
    # Evaluation 1 sets the best value; each later one is no better, and patience 0 halves the lr at once.
    assert used == [1.0, 1.0, 0.5, 0.25]
    assert (last, evaluations) == (0.125, 4)


def test_reduce_on_plateau_waits_for_the_end_of_warmup() -> None:
    used, last, _ = plateau_run(monitor="loss", warmup="2:iteration")
    # Updates 1-2 warm up; the evaluation after update 2 is the first the schedule sees (the best so far).
    assert used == [0.5, 1.0, 1.0, 0.5]
    assert last == 0.25


def test_reduce_on_plateau_monitor_must_name_a_metric() -> None:
    with pytest.raises(ValueError) as error:
        plateau_run(monitor="accuracy")
    assert str(error.value) == (
        "lr_scheduler.monitor='accuracy' does not name an evaluation metric: "
        "REDUCE_LR_ON_PLATEAU needs one of ['loss', 'other']"
    )


def test_reduce_on_plateau_needs_a_monitor_among_several_metrics() -> None:
    with pytest.raises(ValueError, match=r"lr_scheduler\.monitor=None does not name an evaluation metric"):
        plateau_run()


# -- parameter groups -----------------------------------------------------------------------------------------


def test_per_model_overrides_land_in_param_groups() -> None:
    optimizer = OptimizerConfig(optimizer=Optimizers.AdamW, learning_rate=1e-3, weight_decay=0.01, eps=1e-7)
    head = linear_factory(learning_rate=0.05, weight_decay=0.2, betas=(0.8, 0.9), eps=1e-5)
    trainer = TinyTrainer(tiny_config(optimizer=optimizer), models={"head": head})
    groups = trainer.optimizer.param_groups
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    assert [group["name"] for group in groups] == ["net", "head"]
    picked = [{k: group[k] for k in ("lr", "weight_decay", "betas", "eps")} for group in groups]
    assert picked == [
        {"lr": 1e-3, "weight_decay": 0.01, "betas": (0.9, 0.999), "eps": 1e-7},
        {"lr": 0.05, "weight_decay": 0.2, "betas": (0.8, 0.9), "eps": 1e-5},
    ]
    assert groups[0]["params"] == list(trainer.net.parameters())
    assert groups[1]["params"] == list(trainer.models["head"].parameters())


def test_sgd_groups_carry_no_betas() -> None:
    optimizer = OptimizerConfig(optimizer=Optimizers.SGD, learning_rate=0.1, momentum=0.9, nesterov=True)
    trainer = TinyTrainer(
        tiny_config(optimizer=optimizer, net=ModelConfig(learning_rate=0.3, betas=(0.5, 0.5))),
        models={"head": linear_factory()},
    )
    assert isinstance(trainer.optimizer, torch.optim.SGD)
    groups = trainer.optimizer.param_groups
    assert all("betas" not in group for group in groups)
    assert [(group["lr"], group["momentum"], group["nesterov"]) for group in groups] == [
        (0.3, 0.9, True),
        (0.1, 0.9, True),
    ]


def test_frozen_model_has_no_group_and_does_not_change() -> None:
    trainer = TinyTrainer(tiny_config(duration="2:epoch"), models={"frozen": linear_factory(requires_grad=False)})
    frozen, net = trainer.models["frozen"], trainer.net
    frozen_before = {k: v.clone() for k, v in frozen.state_dict().items()}
    net_before = {k: v.clone() for k, v in net.state_dict().items()}
    assert [group["name"] for group in trainer.optimizer.param_groups] == ["net"]
    assert all(not p.requires_grad for p in frozen.parameters())
    trainer.train()
    assert all(torch.equal(frozen.state_dict()[k], v) for k, v in frozen_before.items())
    assert all(p.grad is None for p in frozen.parameters())
    assert not torch.equal(net.weight.detach(), net_before["weight"])
    assert not torch.equal(net.bias.detach(), net_before["bias"])


def test_nothing_to_optimize() -> None:
    trainer = TinyTrainer(tiny_config(net=ModelConfig(requires_grad=False)))
    with pytest.raises(
        ValueError, match="nothing to optimize: no registered model has parameters with requires_grad=True"
    ):
        trainer.train()


# -- gradient clipping ----------------------------------------------------------------------------------------


def test_gradient_clipping_limits_the_norm_the_optimizer_sees() -> None:
    config = tiny_config(duration="1:epoch", gradient_clipping_max_norm=0.1)
    trainer, recorder = run(config, models={"head": linear_factory()}, loss_scale=1e4)
    assert len(recorder.grad_norms) == 4
    for clipped, before in recorder.grad_norms:
        assert before is not None
        assert clipped <= 0.1 + 1e-6
        assert clipped == pytest.approx(0.1, rel=1e-4)
        assert before > 0.1
    assert trainer.grad_norm is not None
    assert float(trainer.grad_norm) == recorder.grad_norms[-1][1]


def test_no_clipping_by_default() -> None:
    trainer, recorder = run(tiny_config(duration="1:epoch"), loss_scale=1e4)
    assert trainer.grad_norm is None
    assert all(norm > 0.1 and unclipped is None for norm, unclipped in recorder.grad_norms)


def test_constant_schedule_is_never_stepped_after_warmup() -> None:
    trainer, recorder = run(tiny_config(duration="2:epoch", lr_scheduler=LRSchedulerConfig(warmup="2:iteration")))
    # Two warmup steps (after updates 1 and 2 is the second; update 1's rate is set at build time), then none.
    steps = recorder.hooks("on_lr_scheduler_step_end")
    assert [event.iteration for event in steps] == [1]
    assert trainer.lr_scheduler.get_last_lr() == [pytest.approx(0.1)]


def test_resumed_cosine_stretches_to_a_longer_duration() -> None:
    from train.duration import StepPlan
    from train.optim import LRSchedule

    def schedule(total_steps: int) -> LRSchedule:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        config = LRSchedulerConfig(type=LRSchedulerType.COSINE_ANNEALING_LR)
        return LRSchedule(optimizer, config, StepPlan(steps_per_epoch=10, accumulation=1), total_steps)

    short = schedule(total_steps=10)
    for update in range(1, 6):
        short.optimizer.step()
        short.step(update)
    state = short.state_dict()
    longer = schedule(total_steps=40)
    longer.load_state_dict(state)
    assert longer.length == 40
    assert isinstance(longer.scheduler, torch.optim.lr_scheduler.CosineAnnealingLR)
    assert longer.scheduler.T_max == 40  # the saved T_max was 10: the schedule would end early
    before = longer.get_last_lr()[0]
    longer.optimizer.step()
    longer.step(6)
    assert 0.0 < longer.get_last_lr()[0] < before  # still decaying, towards the new end


@pytest.mark.parametrize(
    ("choice", "expected"),
    [(Optimizers.SGD, torch.optim.SGD), (Optimizers.Adam, torch.optim.Adam), (Optimizers.AdamW, torch.optim.AdamW)],
)
def test_each_optimizer_choice_builds_its_torch_class(
    choice: Optimizers, expected: type[torch.optim.Optimizer]
) -> None:
    trainer = TinyTrainer(tiny_config(optimizer=OptimizerConfig(optimizer=choice, learning_rate=0.1)))
    assert type(trainer.optimizer) is expected
