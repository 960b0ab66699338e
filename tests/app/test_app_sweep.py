"""Multiruns with Hydra's basic launcher: job folders, the sweep summary, a failing job, up-front validation."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from app_support import (
    TINY,
    Finished,
    RunPool,
    job_dirs,
    job_overrides,
    nonblank_lines,
    read_json,
    read_mapping,
    sweep_dir,
)

SHRUNK = TINY[1:]  # the sizes, without the duration: each sweep sets its own
MISSING_WEIGHTS = "/nonexistent/weights.safetensors"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunPool]:
    pool = RunPool()
    pool.start(
        "grid",
        ["-m", "optimizer=adamw,sgd", "optimizer.learning_rate=1e-3,1e-4", "training.duration=2:epoch", *SHRUNK],
        tmp_path_factory.mktemp("grid"),
    )
    pool.start(
        "failing",
        ["-m", f"model.autoencoder.checkpoint=null,{MISSING_WEIGHTS}", "training.duration=2:step", *SHRUNK],
        tmp_path_factory.mktemp("failing"),
    )
    pool.start("invalid", ["-m", *TINY, "training.batch_size=4,0"], tmp_path_factory.mktemp("invalid"))
    yield pool
    pool.close()


def read_summary(sweep: Path) -> list[dict[str, str]]:
    text = (sweep / "summary.csv").read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


# -- a 2 x 2 grid ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def grid(runs: RunPool) -> Finished:
    run = runs.result("grid")
    assert run.returncode == 0, run.describe()
    return run


def test_grid_sweep_runs_one_job_per_combination(grid: Finished) -> None:
    sweep = sweep_dir(grid.cwd, "autoencoder")
    jobs = job_dirs(sweep)
    assert [job.name for job in jobs] == ["0", "1", "2", "3"]
    combinations: set[tuple[str, float]] = set()
    for job in jobs:
        result = read_json(job / "result.json")
        assert result["status"] == "completed", result
        assert result["steps"] == 2  # 2 epochs of one batch
        overrides = job_overrides(job)
        resolved = read_mapping(job / "resolved_config.yaml")
        optimizer, learning_rate = resolved["optimizer"]["optimizer"], resolved["optimizer"]["learning_rate"]
        combinations.add((optimizer, learning_rate))
        assert f"optimizer={optimizer.lower()}" in overrides
        assert f"optimizer.learning_rate={learning_rate}" in overrides
        assert "training.duration=2:epoch" in overrides
        assert resolved["training"]["duration"] == "2:epoch"
        assert [o.replace("\\:", ":") for o in result["overrides"]] == overrides
    assert combinations == {("AdamW", 1e-3), ("AdamW", 1e-4), ("SGD", 1e-3), ("SGD", 1e-4)}


def test_grid_summary_lists_every_job_with_its_metrics(grid: Finished) -> None:
    sweep = sweep_dir(grid.cwd, "autoencoder")
    rows = read_summary(sweep)
    assert [row["job"] for row in rows] == ["0", "1", "2", "3"]
    for row in rows:
        result = read_json(sweep / row["job"] / "result.json")
        assert row["status"] == "completed"
        assert row["error"] == ""
        assert row["steps"] == "2"
        assert float(row["iou"]) == pytest.approx(result["metrics"]["iou"], rel=1e-5, abs=1e-12)
        assert float(row["val_loss"]) == pytest.approx(result["metrics"]["val_loss"], rel=1e-5)
        # Only the swept overrides are listed; those shared by every job are left out.
        swept = sorted(row["overrides"].split())
        assert swept == sorted(o for o in job_overrides(sweep / row["job"]) if o.startswith("optimizer"))
        assert len(swept) == 2
    markdown = (sweep / "summary.md").read_text(encoding="utf-8")
    lines = nonblank_lines(markdown)
    assert lines[0].split("|")[1:-1] == [f" {column} " for column in rows[0]]
    assert len(lines) == 2 + len(rows)
    for line in lines:  # the table is printed too
        assert line in grid.output
    summary_paths = (sweep.relative_to(grid.cwd) / "summary.md", sweep / "summary.md")
    assert any(f"summary in {path}" in grid.output for path in summary_paths), grid.describe()


# -- one job of two fails at run time ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def failing(runs: RunPool) -> Finished:
    return runs.result("failing")


def test_failing_job_does_not_stop_the_sweep(failing: Finished) -> None:
    assert failing.returncode != 0, failing.describe()
    sweep = sweep_dir(failing.cwd, "autoencoder")
    completed, failed = job_dirs(sweep)
    assert "model.autoencoder.checkpoint=null" in job_overrides(completed)
    assert f"model.autoencoder.checkpoint={MISSING_WEIGHTS}" in job_overrides(failed)
    good = read_json(completed / "result.json")
    assert good["status"] == "completed"
    assert good["steps"] == 2
    bad = read_json(failed / "result.json")
    assert bad["status"] == "failed"
    assert bad["steps"] == 0
    assert bad["metrics"] == {}
    assert bad["objective_value"] is None
    assert MISSING_WEIGHTS in bad["error"] and "FileNotFoundError" in bad["error"]
    assert "Job failed" in (failed / "train.log").read_text(encoding="utf-8")


def test_failing_job_is_in_the_summary_with_its_error(failing: Finished) -> None:
    sweep = sweep_dir(failing.cwd, "autoencoder")
    rows = read_summary(sweep)
    assert [(row["job"], row["status"]) for row in rows] == [("0", "completed"), ("1", "failed")]
    assert rows[0]["error"] == ""
    assert rows[0]["iou"] != ""
    assert rows[1]["iou"] == ""
    assert rows[1]["error"] == read_json(sweep / "1" / "result.json")["error"]
    assert "Sweep of 2 jobs, 1 failed" in failing.output


# -- every job is validated before the first one trains -----------------------------------------------------
def test_invalid_job_of_a_sweep_fails_before_any_training(runs: RunPool) -> None:
    run = runs.result("invalid")
    assert run.returncode != 0, run.describe()
    lines = nonblank_lines(run.stderr)
    assert len(lines) == 1, run.describe()
    assert lines[0].startswith("error: training.batch_size=0 "), lines[0]
    assert "Traceback" not in run.output
    assert not (run.cwd / "outputs").exists(), "a job ran although the sweep holds an invalid one"
