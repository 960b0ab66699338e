"""The metrics file: the rows and columns a short run writes, read back as written, and by read_metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from callbacks_support import TinyTrainer, tiny_config, train_in

from train.callbacks import MetricsFile
from train.callbacks.metrics_file import read_metrics

STEP_COLUMNS = {"kind", "step", "epoch", "iteration", "time", "loss", "lr", "samples_per_second"}


def raw_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def score(trainer: TinyTrainer) -> dict[str, float]:
    return {"score": 1.0 / (1 + trainer.clock.step), "val_loss": 0.5}


def test_short_run_writes_every_step_and_evaluation_with_all_columns(tmp_path: Path) -> None:
    """2 epochs of 4 steps, accumulation 2: updates at steps 2, 4, 6, 8; evaluations after each epoch."""
    config = tiny_config(duration="2:epoch", gradient_accumulation="2:step", evaluation_interval="1:epoch")
    trainer, recorder = train_in(tmp_path, config, [MetricsFile()], evaluation_fn=score)
    rows = raw_rows(tmp_path / "metrics.jsonl")

    steps = [row for row in rows if row["kind"] == "step"]
    assert [row["step"] for row in steps] == [1, 2, 3, 4, 5, 6, 7, 8]
    for row in steps:
        has_update = row["step"] % 2 == 0
        assert set(row) == STEP_COLUMNS | ({"grad_norm"} if has_update else set()), row
        assert row["iteration"] == row["step"] // 2
        assert row["epoch"] == (row["step"] - 1) // 4  # completed epochs: it advances after the epoch's last step
        assert row["samples_per_second"] > 0
        assert row["time"] >= 0
    assert [row["loss"] for row in steps] == pytest.approx(recorder.losses)
    # The learning rate and gradient norm of each update, as the optimizer saw them at on_optimizer_step_begin.
    updates = [row for row in steps if "grad_norm" in row]
    assert [row["lr"] for row in updates] == recorder.lrs
    assert [row["grad_norm"] for row in updates] == pytest.approx([total for total, _ in recorder.grad_norms])
    assert [row["time"] for row in steps] == sorted(row["time"] for row in steps)

    evaluations = [row for row in rows if row["kind"] == "evaluation"]
    assert [(row["step"], row["epoch"], row["iteration"]) for row in evaluations] == [(4, 1, 2), (8, 2, 4)]
    assert [row["score"] for row in evaluations] == pytest.approx([1 / 5, 1 / 9])
    assert all(set(row) == {"kind", "step", "epoch", "iteration", "time", "score", "val_loss"} for row in evaluations)
    assert trainer.clock.step == 8


def test_clipped_runs_log_the_norm_clipping_computed(tmp_path: Path) -> None:
    config = tiny_config(duration="4:step", gradient_clipping_max_norm=1e-3)
    _, recorder = train_in(tmp_path, config, [MetricsFile()])
    norms = [row["grad_norm"] for row in raw_rows(tmp_path / "metrics.jsonl") if row["kind"] == "step"]
    before_clipping = [clip for _, clip in recorder.grad_norms]
    assert norms == pytest.approx(before_clipping)
    assert all(norm > 1e-2 for norm in norms)  # the unclipped norm, not the 1e-3 it was clipped to


def test_every_n_steps_writes_only_those_rows_and_their_norms(tmp_path: Path) -> None:
    config = tiny_config(duration="2:epoch", gradient_accumulation="2:step")
    train_in(tmp_path, config, [MetricsFile("m.jsonl", every_n_steps=3)])
    steps = [row for row in raw_rows(tmp_path / "m.jsonl") if row["kind"] == "step"]
    assert [row["step"] for row in steps] == [3, 6, 8]  # and the last step
    assert ["grad_norm" in row for row in steps] == [False, True, True]  # step 3 ends no update


def test_grad_norm_can_be_left_out(tmp_path: Path) -> None:
    train_in(tmp_path, tiny_config(duration="2:step"), [MetricsFile(grad_norm=False)])
    assert all("grad_norm" not in row for row in raw_rows(tmp_path / "metrics.jsonl"))


def test_rows_are_on_disk_while_training_runs(tmp_path: Path) -> None:
    """Each row is flushed as it is written: a run killed at any point keeps what it logged."""
    seen: list[int] = []

    def count_rows(trainer: TinyTrainer) -> None:
        seen.append(len(raw_rows(tmp_path / "metrics.jsonl")))

    config = tiny_config(duration="2:epoch", evaluation_interval="1:epoch")
    train_in(tmp_path, config, [MetricsFile()], evaluation_fn=count_rows)
    assert seen == [4, 9]  # 4 step rows before the first evaluation; 4 more and its row before the second


def test_read_metrics_splits_kinds_and_skips_a_cut_last_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    lines = [
        {"kind": "step", "step": 1, "epoch": 0, "iteration": 1, "time": 0.1, "loss": 2.0, "lr": [0.1]},
        {"kind": "step", "step": 2, "epoch": 0, "iteration": 2, "time": 0.2, "loss": None, "lr": [0.1]},
        {"kind": "evaluation", "step": 2, "epoch": 1, "iteration": 2, "time": 0.3, "iou": 0.5},
    ]
    text = "".join(json.dumps(line) + "\n" for line in lines) + '{"kind": "step", "step": 3, "lo'
    path.write_text(text, encoding="utf-8")
    log = read_metrics(path)
    assert [row["step"] for row in log.steps] == [1, 2]
    assert log.evaluation_names == ["iou"]
    assert log.last_evaluation() == {"iou": 0.5}
    assert read_metrics(tmp_path / "absent.jsonl").steps == []


def test_read_metrics_keeps_the_later_rows_of_a_resumed_run(tmp_path: Path) -> None:
    """Killed after step 5, resumed from a checkpoint at step 3: steps 4 and 5 are logged twice."""
    first = [{"kind": "step", "step": step, "loss": 1.0} for step in range(1, 6)]
    second = [{"kind": "step", "step": step, "loss": 2.0} for step in range(4, 8)]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in first + second), encoding="utf-8")
    log = read_metrics(path)
    assert [(row["step"], row["loss"]) for row in log.steps] == [(1, 1.0), (2, 1.0), (3, 1.0)] + [
        (step, 2.0) for step in range(4, 8)
    ]
