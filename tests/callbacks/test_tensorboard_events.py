"""TensorBoardLogger: the event files read back through TensorBoard's own event reader."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest
from callbacks_support import TinyTrainer, linear_factory, save_grid, tiny_config, train_in

from train.callbacks import TensorBoardLogger

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def evaluate_and_save(trainer: TinyTrainer) -> dict[str, float]:
    save_grid(trainer)
    return {"score": float(trainer.clock.step), "val_loss": 1.0 / trainer.clock.step}


def read_events(directory: Path) -> EventAccumulator:
    events = EventAccumulator(str(directory), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def test_scalars_evaluation_metrics_and_images_are_in_the_run_directory(tmp_path: Path) -> None:
    """2 epochs of 4 steps, accumulation 2, evaluation every epoch, which saves a 12x8 image."""
    config = tiny_config(duration="2:epoch", gradient_accumulation="2:step", evaluation_interval="1:epoch")
    _, recorder = train_in(tmp_path, config, [TensorBoardLogger()], evaluation_fn=evaluate_and_save)
    assert list(tmp_path.glob("events.out.tfevents.*")), sorted(p.name for p in tmp_path.iterdir())

    events = read_events(tmp_path)
    tags = cast(dict[str, list[str]], events.Tags())
    expected_scalars = {"train/loss", "train/lr", "train/grad_norm", "train/samples_per_second", "train/epoch"}
    assert expected_scalars | {"evaluation/score", "evaluation/val_loss"} <= set(tags["scalars"])

    loss = events.Scalars("train/loss")
    assert [event.step for event in loss] == list(range(1, 9))
    assert [event.value for event in loss] == pytest.approx(recorder.losses, rel=1e-6)
    assert [event.step for event in events.Scalars("train/grad_norm")] == [2, 4, 6, 8]  # the updates only
    assert [event.value for event in events.Scalars("train/lr")] == pytest.approx([0.1] * 8)
    assert [(e.step, e.value) for e in events.Scalars("evaluation/score")] == [(4, 4.0), (8, 8.0)]

    assert tags["images"] == ["evaluations"]
    images = events.Images("evaluations")
    assert [(image.step, image.width, image.height) for image in images] == [(4, 12, 8), (8, 12, 8)]


def test_parameter_groups_get_one_learning_rate_each_and_a_subfolder_works(tmp_path: Path) -> None:
    config = tiny_config(duration="2:step")
    trainer = TinyTrainer(
        config,
        models={"other": linear_factory(learning_rate=0.01)},
        callbacks=[TensorBoardLogger(log_dir="tb", images_dir=None)],
    )
    trainer.run_dir = tmp_path
    trainer.train()
    scalars = set(cast(dict[str, list[str]], read_events(tmp_path / "tb").Tags())["scalars"])
    assert {"train/lr/group_0", "train/lr/group_1"} <= scalars
    assert "train/lr" not in scalars


def test_a_resumed_run_drops_the_events_after_its_checkpoint(tmp_path: Path) -> None:
    """Steps 1-4 logged, then a restart at step 2 logs 3-4 again: TensorBoard keeps one value per step."""
    train_in(tmp_path, tiny_config(duration="4:step"), [TensorBoardLogger()])

    def restart_at_step_two(trainer: TinyTrainer) -> None:
        trainer.clock.step = trainer.clock.step_in_epoch = trainer.clock.iteration = 2

    train_in(tmp_path, tiny_config(duration="4:step"), [TensorBoardLogger()], prepare=restart_at_step_two)
    assert [event.step for event in read_events(tmp_path).Scalars("train/loss")] == [1, 2, 3, 4]
