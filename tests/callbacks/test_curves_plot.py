"""Curves and train.plots: the PNGs exist, are valid images, and have their fixed sizes."""

from __future__ import annotations

from pathlib import Path

from callbacks_support import TinyTrainer, captured_logs, tiny_config, train_in
from PIL import Image

from train.callbacks import Curves, MetricsFile
from train.callbacks.metrics_file import MetricsLog, read_metrics
from train.plots import COMPARISON_SIZE, CURVES_SIZE, JobCurves, render_comparison, render_curves, smooth


def assert_png(path: Path, size: tuple[int, int]) -> None:
    assert path.is_file(), f"{path} was not written"
    with Image.open(path) as image:
        image.verify()  # a complete, uncorrupted PNG
    with Image.open(path) as image:
        assert (image.format, image.size) == ("PNG", size)
    assert not list(path.parent.glob(f".{path.name}.*")), "a temporary file was left behind"


def metrics(trainer: TinyTrainer) -> dict[str, float]:
    return {"val_loss": 1.0 / trainer.clock.step, "iou": trainer.clock.step / 100}


def test_curves_png_is_drawn_from_the_metrics_file_at_the_end(tmp_path: Path) -> None:
    config = tiny_config(duration="3:epoch", evaluation_interval="1:epoch")
    with captured_logs() as logs:
        train_in(tmp_path, config, [MetricsFile("m.jsonl"), Curves()], evaluation_fn=metrics)
    assert_png(tmp_path / "curves.png", CURVES_SIZE)
    assert f"Training curves: {tmp_path / 'curves.png'}" in logs


def test_curves_without_a_metrics_file_warn_and_draw_nothing(tmp_path: Path) -> None:
    with captured_logs() as logs:
        train_in(tmp_path, tiny_config(duration="1:step"), [Curves()])
    assert not (tmp_path / "curves.png").exists()
    assert any(line.startswith("No curves drawn: there is no metrics file") for line in logs), logs


def test_render_curves_of_many_steps_groups_and_no_evaluation(tmp_path: Path) -> None:
    log = MetricsLog(
        steps=[{"step": s, "loss": 1.0 / s, "lr": [1e-3 * 0.9**s, 1e-5]} for s in range(1, 301)],
        evaluations=[],
    )
    assert_png(render_curves(log, tmp_path / "a.png", title="many"), CURVES_SIZE)
    assert_png(render_curves(MetricsLog(), tmp_path / "empty.png"), CURVES_SIZE)  # a run with nothing logged yet


def test_render_comparison_has_its_fixed_size(tmp_path: Path) -> None:
    def job(label: str, scale: float, final: float | None) -> JobCurves:
        rows = [{"step": s, "loss": scale / s} for s in range(1, 60)]
        return JobCurves(label, MetricsLog(steps=rows), final)

    jobs = [job("0: lr=1e-3", 1.0, 0.5), job("1: lr=1e-4", 2.0, 0.7), job("2: lr=1e-5", 3.0, None)]
    assert_png(render_comparison(jobs, tmp_path / "c.png", metric="iou", mode="max"), COMPARISON_SIZE)
    assert_png(render_comparison([], tmp_path / "none.png", metric=None), COMPARISON_SIZE)


def test_smooth_follows_the_trend_and_keeps_short_series() -> None:
    assert smooth([3.0, 1.0]) == [3.0, 1.0]
    values = [float(i % 2) for i in range(100)]
    smoothed = smooth(values)
    assert len(smoothed) == 100
    assert all(0.2 < value < 0.8 for value in smoothed[20:])


def test_a_real_metrics_file_round_trips_into_a_plot(tmp_path: Path) -> None:
    config = tiny_config(duration="2:epoch", evaluation_interval="2:step")
    train_in(tmp_path, config, [MetricsFile()], evaluation_fn=metrics)
    log = read_metrics(tmp_path / "metrics.jsonl")
    assert log.evaluation_names == ["val_loss", "iou"]
    assert [row["step"] for row in log.evaluations] == [2, 4, 6, 8]
    assert_png(render_curves(log, tmp_path / "again.png"), CURVES_SIZE)
