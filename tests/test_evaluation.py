"""Evaluation: when it runs, in which mode, what it returns, and that it leaves the training stream alone."""

from __future__ import annotations

import pytest
import torch
from tiny import Batch, TinyTrainer, linear_factory, mse_loss, run, tiny_config

from train.trainer import Metrics

# 10 items in batches of 4: 3 steps per epoch (windows of 2 + 1 with accumulation 2).
N_ITEMS, BATCH = 10, 4


def evaluated_at(duration: str, interval: str, accumulation: str = "1:step") -> list[tuple[int, int, int]]:
    """(step, iteration, epoch) at each on_evaluate_begin; checks compute_evaluation ran once per evaluation."""
    config = tiny_config(
        duration=duration, batch_size=BATCH, gradient_accumulation=accumulation, evaluation_interval=interval
    )
    trainer, recorder = run(config, n_items=N_ITEMS)
    events = recorder.hooks("on_evaluate_begin")
    assert len(recorder.hooks("on_evaluate_end")) == len(events) == trainer.evaluation_calls
    return [(e.step, e.iteration, e.epoch) for e in events]


@pytest.mark.parametrize(
    ("duration", "interval", "accumulation", "expected"),
    [
        # every 2 steps; the last one (step 6) is also the end of training: no second evaluation
        ("2:epoch", "2:step", "1:step", [(2, 2, 0), (4, 4, 1), (6, 6, 1)]),
        # every 2 steps, then once more at the end (step 5)
        ("5:step", "2:step", "1:step", [(2, 2, 0), (4, 4, 1), (5, 5, 1)]),
        # after every update: windows end at steps 2, 3 (short window), 5, 6
        ("2:epoch", "1:iteration", "2:step", [(2, 1, 0), (3, 2, 0), (5, 3, 1), (6, 4, 1)]),
        # every 2 updates, then the end of training
        ("5:step", "2:iteration", "2:step", [(3, 2, 0), (5, 3, 1)]),
        # after each epoch (the counter has advanced), and no extra one at the end
        ("2:epoch", "1:epoch", "1:step", [(3, 3, 1), (6, 6, 2)]),
        # after epoch 1, then at the end of training, mid-epoch
        ("5:step", "1:epoch", "1:step", [(3, 3, 1), (5, 5, 1)]),
        # every 2 epochs: only epoch 2, which is the end
        ("3:epoch", "2:epoch", "2:step", [(6, 4, 2), (9, 6, 3)]),
        # 0 disables periodic evaluation: once, at the end
        ("2:epoch", "0:epoch", "1:step", [(6, 6, 2)]),
        ("2:epoch", "0:step", "2:step", [(6, 4, 2)]),
    ],
)
def test_evaluation_schedule(
    duration: str, interval: str, accumulation: str, expected: list[tuple[int, int, int]]
) -> None:
    assert evaluated_at(duration, interval, accumulation) == expected


def test_evaluation_runs_without_grad_in_eval_mode_and_restores_modes() -> None:
    inside: list[tuple[bool, dict[str, bool]]] = []
    during_training: list[dict[str, bool]] = []

    def evaluation(trainer: TinyTrainer) -> Metrics:
        inside.append((torch.is_grad_enabled(), {name: m.training for name, m in trainer.models.items()}))
        return {}

    def loss(trainer: TinyTrainer, batch: Batch) -> torch.Tensor:
        during_training.append({name: m.training for name, m in trainer.models.items()})
        return mse_loss(trainer, batch)

    config = tiny_config(duration="4:step", evaluation_interval="2:step")
    trainer = TinyTrainer(
        config, models={"frozen": linear_factory(requires_grad=False)}, evaluation_fn=evaluation, loss_fn=loss
    )
    assert (trainer.net.training, trainer.models["frozen"].training) == (True, False)
    trainer.train()
    assert inside == [(False, {"net": False, "frozen": False})] * 2
    # Steps 3 and 4 ran after the first evaluation: the trainable model was back in train mode.
    assert during_training == [{"net": True, "frozen": False}] * 4
    assert (trainer.net.training, trainer.models["frozen"].training) == (True, False)
    assert torch.is_grad_enabled()


def test_evaluation_metrics_are_floats() -> None:
    def evaluation(trainer: TinyTrainer) -> Metrics:
        return {"loss": torch.tensor(0.25), "count": 3, "ratio": 0.5, "scalar": torch.tensor([1.5])}

    trainer, _ = run(tiny_config(duration="1:step"), evaluation_fn=evaluation)
    assert trainer.evaluation_metrics == {"loss": 0.25, "count": 3.0, "ratio": 0.5, "scalar": 1.5}
    assert all(type(value) is float for value in trainer.evaluation_metrics.values())
    assert trainer.evaluate() == {"loss": 0.25, "count": 3.0, "ratio": 0.5, "scalar": 1.5}


def test_no_metrics_gives_an_empty_dict() -> None:
    trainer, _ = run(tiny_config(duration="1:step"))
    assert trainer.evaluation_calls == 1
    assert trainer.evaluation_metrics == {}


@pytest.mark.parametrize(
    ("value", "type_name"),
    [("high", "str"), (torch.tensor([1.0, 2.0]), "Tensor"), (None, "NoneType"), ([1.0], "list")],
)
def test_non_numeric_metric_raises_type_error_naming_it(value: object, type_name: str) -> None:
    def evaluation(trainer: TinyTrainer) -> Metrics:
        return {"loss": 1.0, "quality": value}  # pyright: ignore[reportReturnType] - a wrong metric on purpose

    trainer = TinyTrainer(tiny_config(duration="1:step"), evaluation_fn=evaluation)
    with pytest.raises(TypeError) as error:
        trainer.train()
    assert str(error.value) == f"compute_evaluation returned {type_name} for metric 'quality': expected a number"


def test_evaluation_does_not_shift_the_training_random_stream() -> None:
    """compute_loss draws from torch's global generator; evaluation draws too, but under its own seed."""

    def noisy_loss(trainer: TinyTrainer, batch: Batch) -> torch.Tensor:
        return mse_loss(trainer, batch) + torch.rand(())

    def noisy_evaluation(trainer: TinyTrainer) -> Metrics:
        return {"noise": torch.rand(()), "more": float(torch.randn(5).sum())}

    def losses(interval: str) -> tuple[list[float], int]:
        config = tiny_config(duration="3:epoch", evaluation_interval=interval)
        trainer, recorder = run(config, loss_fn=noisy_loss, evaluation_fn=noisy_evaluation)
        return recorder.losses, trainer.evaluation_calls

    every_step, evaluations_a = losses("1:step")
    never, evaluations_b = losses("0:step")
    assert (evaluations_a, evaluations_b) == (12, 1)
    assert len(every_step) == 12
    assert every_step == never
    assert len(set(every_step)) == 12  # the noise is real: no two steps share a loss


def test_evaluation_is_seeded_by_evaluation_seed() -> None:
    def noise(trainer: TinyTrainer) -> Metrics:
        return {"noise": torch.rand(())}

    def metrics(evaluation_seed: int) -> list[float]:
        trainer = TinyTrainer(tiny_config(duration="1:step", evaluation_seed=evaluation_seed), evaluation_fn=noise)
        return [trainer.evaluate()["noise"], trainer.evaluate()["noise"]]

    first, again, other = metrics(7), metrics(7), metrics(8)
    assert first[0] == first[1] == again[0]  # every evaluation starts from the same seed
    torch.manual_seed(7)
    assert first[0] == float(torch.rand(()))
    assert other[0] != first[0]
