"""One real ``python -m train`` run of the default experiment, shrunk to two steps, and every file it writes."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from app_support import (
    EVERY_STEP_ROWS,
    IMAGE_SIZE,
    TINY,
    Finished,
    RunPool,
    job_overrides,
    read_json,
    read_jsonl,
    read_mapping,
    run_to_end,
    single_run_dir,
    stamp_time,
)
from PIL import Image

from train.checkpointing import STATE_FILE, checkpoint_name
from train.examples.autoencoder import AutoencoderConfig, rectangle_mask

STEPS = 2
CLOCK_FIELDS = {"kind", "step", "epoch", "iteration", "time"}
LEARNING_RATE = 2e-3  # conf/optimizer/adamw.yaml; TINY makes the schedule constant


@pytest.fixture(scope="module")
def started() -> datetime:
    return datetime.now().replace(microsecond=0)


@pytest.fixture(scope="module")
def runs(started: datetime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunPool]:
    pool = RunPool()
    pool.start("single", TINY, tmp_path_factory.mktemp("single"))
    pool.start(
        "cfg", ["optimizer=adamw", "training.duration=1000:epoch", "--cfg", "job"], tmp_path_factory.mktemp("cfg")
    )
    pool.start("speed", [*TINY, "training.amp=fp16", "optimizer.fused=false"], tmp_path_factory.mktemp("speed"))
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def single(runs: RunPool) -> Finished:
    run = runs.result("single")
    assert run.returncode == 0, run.describe()
    return run


@pytest.fixture(scope="module")
def run_dir(single: Finished) -> Path:
    return single_run_dir(single.cwd, "autoencoder")


def test_one_stamped_run_directory_is_created_and_announced(single: Finished, run_dir: Path, started: datetime) -> None:
    assert started - timedelta(seconds=1) <= stamp_time(run_dir) <= datetime.now()
    assert f"Run directory: {run_dir.resolve()}" in single.output
    assert f"Outputs are in {run_dir.resolve()}" in single.output
    assert "Traceback" not in single.output


def test_hydra_files_record_the_command_line(run_dir: Path) -> None:
    hydra_dir = run_dir / ".hydra"
    assert job_overrides(run_dir) == list(TINY)
    config = read_mapping(hydra_dir / "config.yaml")
    assert config["training"]["duration"] == f"{STEPS}:step"
    assert config["model"]["autoencoder"]["image_size"] == "${task.image_size}"  # as composed, unresolved
    hydra = read_mapping(hydra_dir / "hydra.yaml")
    assert hydra["hydra"]["job"]["chdir"] is False
    assert hydra["hydra"]["overrides"]["task"] == list(TINY)


def test_resolved_config_holds_the_overrides_with_interpolations_resolved(run_dir: Path) -> None:
    text = (run_dir / "resolved_config.yaml").read_text(encoding="utf-8")
    assert "${" not in text
    resolved = read_mapping(run_dir / "resolved_config.yaml")
    assert "hydra" not in resolved
    assert resolved["training"]["duration"] == f"{STEPS}:step"
    assert resolved["task"]["epoch_size"] == 16
    assert resolved["task"]["validation_size"] == 4
    assert resolved["task"]["image_size"] == IMAGE_SIZE
    assert resolved["model"]["autoencoder"]["image_size"] == IMAGE_SIZE
    assert resolved["experiment"] == {
        "name": "autoencoder",
        "trainer": "train.examples.autoencoder.AutoencoderTrainer",
        "metric": "iou",
        "mode": "max",
    }
    assert resolved["optimizer"]["optimizer"] == "AdamW"


def test_metrics_file_has_every_step_and_evaluation(run_dir: Path) -> None:
    rows = read_jsonl(run_dir / "metrics.jsonl")
    steps = [row for row in rows if row["kind"] == "step"]
    evaluations = [row for row in rows if row["kind"] == "evaluation"]
    assert len(steps) + len(evaluations) == len(rows), f"unknown row kinds in {rows}"
    assert [row["step"] for row in steps] == list(range(1, STEPS + 1))
    for row in steps:
        assert isinstance(row["loss"], float) and math.isfinite(row["loss"]) and row["loss"] > 0
        assert row["lr"] == [pytest.approx(LEARNING_RATE)]
        assert row["time"] >= 0
    # One evaluation per epoch; an epoch is one batch of 16 masks (batch_size 16).
    assert [row["step"] for row in evaluations] == list(range(1, STEPS + 1))
    assert [row["epoch"] for row in evaluations] == list(range(1, STEPS + 1))
    for row in evaluations:
        assert 0.0 <= row["iou"] <= 1.0
        assert math.isfinite(row["val_loss"]) and row["val_loss"] > 0
    result = read_json(run_dir / "result.json")
    last = {key: value for key, value in evaluations[-1].items() if key not in CLOCK_FIELDS}
    assert result["metrics"] == last  # the final evaluation's metrics, iou and val_loss among them
    assert {"iou", "val_loss"} <= set(last)


def test_speed_options_from_the_command_line_reach_the_trainer(runs: RunPool) -> None:
    run = runs.result("speed")
    assert run.returncode == 0, run.describe()
    run_dir = single_run_dir(run.cwd, "autoencoder")
    resolved = read_mapping(run_dir / "resolved_config.yaml")
    assert resolved["training"]["amp"] == "fp16" and resolved["training"]["channels_last"] is True
    assert resolved["optimizer"]["fused"] is False
    rows = [row for row in read_jsonl(run_dir / "metrics.jsonl") if row["kind"] == "step"]
    assert len(rows) == STEPS and all(math.isfinite(row["loss"]) for row in rows)
    checkpoint = run_dir / "checkpoints" / checkpoint_name(STEPS)
    state = torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=True)
    assert state["grad_scaler"]["scale"] > 1.0  # the float16 run kept a loss scale, and its checkpoint holds it


def test_result_file_records_a_completed_job(run_dir: Path) -> None:
    result = read_json(run_dir / "result.json")
    assert result["status"] == "completed"
    assert result["error"] is None
    assert result["steps"] == STEPS
    assert result["objective"] == "iou"
    assert result["objective_value"] == result["metrics"]["iou"]
    assert [override.replace("\\:", ":") for override in result["overrides"]] == list(TINY)
    assert result["elapsed_seconds"] > 0


def test_train_log_copies_what_loguru_printed(single: Finished, run_dir: Path) -> None:
    log = (run_dir / "train.log").read_text(encoding="utf-8")
    assert f"Run directory: {run_dir.resolve()}" in log
    assert re.search(rf"Training for {STEPS} steps\b", log), log
    evaluations = [row for row in read_jsonl(run_dir / "metrics.jsonl") if row["kind"] == "evaluation"]
    for row in evaluations:
        values = f"val_loss={row['val_loss']:.4f} iou={row['iou']:.4f}"
        line = f"Evaluation at step {row['step']} (epoch {row['epoch']}): {values}"
        assert line in log
        assert line in single.stderr  # loguru prints to stderr, and the file holds the same lines
    assert "Training finished" in log


def _tile(grid: Image.Image, left: int, top: int, size: int, scale: int) -> list[int]:
    """The ``size`` x ``size`` tile at (left, top) of the unscaled grid, read from the scaled ``L`` image."""
    pixels = grid.tobytes()
    return [pixels[scale * (top + y) * grid.width + scale * (left + x)] for y in range(size) for x in range(size)]


def test_evaluation_grids_show_validation_masks(run_dir: Path) -> None:
    evaluations = [row for row in read_jsonl(run_dir / "metrics.jsonl") if row["kind"] == "evaluation"]
    images = sorted((run_dir / "evaluations").glob("*.png"))
    assert [image.name for image in images] == [f"step_{row['step']:07d}.png" for row in evaluations]
    config = AutoencoderConfig()
    rows = min(config.grid_rows, 4)  # grid_rows (4) of the 4 validation masks
    size = IMAGE_SIZE
    for path in images:
        with Image.open(path) as opened:
            opened.load()
            image = opened
        assert image.mode == "L"
        # Mask and reconstruction side by side with a gap, one validation mask a row, then scaled up.
        scale = 2
        gap = image.width // scale - 2 * size
        assert gap >= 0
        assert image.size == (scale * (2 * size + gap), scale * (rows * size + (rows - 1) * gap))
        assert set(image.tobytes()) <= {0, 128, 255}  # binary masks on a grey background
        for row in range(rows):
            mask = rectangle_mask(size, config.validation_seed, row)[0]
            expected = [255 if value > 0.5 else 0 for value in mask.flatten().tolist()]
            assert _tile(image, 0, row * (size + gap), size, scale) == expected, f"{path.name}: row {row}"


def test_cfg_job_prints_the_composed_config_verbatim(runs: RunPool) -> None:
    run = runs.result("cfg")
    assert run.returncode == 0, run.describe()
    printed: Any = yaml.safe_load(run.stdout)
    assert printed["training"]["duration"] == "1000:epoch"
    assert printed["optimizer"]["optimizer"] == "AdamW"
    assert "hydra" not in printed
    assert not (run.cwd / "outputs").exists()


@pytest.mark.slow
def test_autoencoder_learns_under_a_warmup_cosine_schedule(tmp_path: Path) -> None:
    """128 steps of 16x16 masks: the learning rate follows the schedule and the validation loss falls."""
    warmup, steps_per_epoch, epochs = 20, 32, 4
    run = run_to_end(
        [
            f"training.duration={epochs}:epoch",
            "training.batch_size=32",
            f"task.epoch_size={32 * steps_per_epoch}",
            f"task.image_size={IMAGE_SIZE}",
            "task.validation_size=64",
            "lr_scheduler=cosine_warmup",  # warmup: 20 updates, then cosine decay to eta_min 0
            EVERY_STEP_ROWS,
        ],
        tmp_path,
    )
    assert run.returncode == 0, run.describe()
    run_dir = single_run_dir(tmp_path, "autoencoder")
    rows = read_jsonl(run_dir / "metrics.jsonl")
    lrs = [row["lr"][0] for row in rows if row["kind"] == "step"]
    assert len(lrs) == epochs * steps_per_epoch
    assert lrs[:warmup] == pytest.approx([LEARNING_RATE * step / warmup for step in range(1, warmup + 1)])
    decay = lrs[warmup:]
    assert decay[0] == pytest.approx(LEARNING_RATE, rel=1e-3)
    assert all(later <= earlier + 1e-12 for earlier, later in itertools.pairwise(decay))
    assert decay[-1] < LEARNING_RATE / 100
    val_losses = [row["val_loss"] for row in rows if row["kind"] == "evaluation"]
    assert len(val_losses) == epochs
    assert val_losses == sorted(val_losses, reverse=True), f"validation loss did not fall: {val_losses}"
    assert val_losses[-1] < 0.9 * val_losses[0]
    result = read_json(run_dir / "result.json")
    assert result["metrics"]["iou"] > 0.3, result
