"""A real 2-job multirun: each job's metrics, curves and evaluation grids, the sweep's comparison plot,
and `train.report` re-rendering them."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from app_support import EVERY_STEP_ROWS
from PIL import Image

from train import report
from train.plots import COMPARISON_SIZE, CURVES_SIZE

STEPS = 3
SWEEP = (
    "-m",
    "optimizer=adam,sgd",
    f"training.duration={STEPS}:step",
    "task.epoch_size=16",  # one batch of 32 holds the epoch: one step an epoch, evaluated after each
    "task.image_size=16",
    "task.validation_size=4",
    EVERY_STEP_ROWS,
)
# The example's grid: 4 masks beside their reconstructions, 16 px with 2 px gaps, doubled.
GRID_SIZE = ((2 * 16 + 2) * 2, (4 * 16 + 3 * 2) * 2)


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    cwd = tmp_path_factory.mktemp("sweep")
    env = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
    completed = subprocess.run(
        [sys.executable, "-m", "train", *SWEEP],
        cwd=cwd,
        env={**env, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    (sweep_dir,) = (cwd / "outputs" / "autoencoder" / "multirun").iterdir()
    return sweep_dir, output


def test_each_job_writes_metrics_curves_and_evaluation_grids(sweep: tuple[Path, str]) -> None:
    sweep_dir, output = sweep
    for job in ("0", "1"):
        job_dir = sweep_dir / job
        rows: list[dict[str, Any]] = [json.loads(line) for line in (job_dir / "metrics.jsonl").read_text().splitlines()]
        steps = [row for row in rows if row["kind"] == "step"]
        assert [row["step"] for row in steps] == [1, 2, 3]
        assert all(
            {"loss", "lr", "grad_norm", "samples_per_second", "epoch", "iteration", "time"} <= set(row) for row in steps
        )
        evaluations = [row for row in rows if row["kind"] == "evaluation"]
        assert [row["step"] for row in evaluations] == [1, 2, 3]
        assert png_size(job_dir / "curves.png") == CURVES_SIZE
        grids = sorted((job_dir / "evaluations").glob("*.png"))
        assert [grid.name for grid in grids] == [f"step_{step:07d}.png" for step in (1, 2, 3)]
        assert all(png_size(grid) == GRID_SIZE for grid in grids)
    # Sweep jobs log progress lines (no bar), the last step included.
    assert output.count(f" - step {STEPS}/{STEPS} (100%) | epoch {STEPS}/{STEPS} | loss ") == 2, output
    assert "%|" not in output


def test_comparison_plot_is_beside_the_summary(sweep: tuple[Path, str]) -> None:
    sweep_dir, output = sweep
    assert png_size(sweep_dir / "comparison.png") == COMPARISON_SIZE
    assert f"Comparison of the jobs: {sweep_dir.relative_to(sweep_dir.parents[3]) / 'comparison.png'}" in output
    summary = list(csv.DictReader(io.StringIO((sweep_dir / "summary.csv").read_text(encoding="utf-8"))))
    assert [(row["job"], row["status"], row["overrides"]) for row in summary] == [
        ("0", "completed", "optimizer=adam"),
        ("1", "completed", "optimizer=sgd"),
    ]


def test_report_re_renders_the_sweep(sweep: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    sweep_dir, _ = sweep
    (sweep_dir / "comparison.png").unlink()
    (sweep_dir / "summary.md").unlink()
    (sweep_dir / "1" / "curves.png").unlink()
    assert report.main([str(sweep_dir)]) == 0
    output = capsys.readouterr().out
    assert output.startswith(f"Sweep {sweep_dir}: 2 jobs\n")
    table = (sweep_dir / "summary.md").read_text(encoding="utf-8")
    assert table in output
    assert "| 0 | completed | optimizer=adam |" in table and "| 1 | completed | optimizer=sgd |" in table
    assert png_size(sweep_dir / "comparison.png") == COMPARISON_SIZE
    assert png_size(sweep_dir / "1" / "curves.png") == CURVES_SIZE
