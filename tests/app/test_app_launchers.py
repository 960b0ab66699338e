"""Sweeps through Hydra's launcher and sweeper plugins: joblib, submitit (local) and Optuna."""

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
    children,
    job_dirs,
    job_overrides,
    read_json,
    read_mapping,
    run_to_end,
    sweep_dir,
)

MISSING_WEIGHTS = "/nonexistent/weights.safetensors"
FAIL_SOME = f"model.autoencoder.checkpoint=null,{MISSING_WEIGHTS}"  # the second job fails when its model loads
LR_RANGE = (1e-4, 1e-2)  # conf/hydra/sweeper/optuna_lr_wd.yaml
WD_RANGE = (1e-6, 1e-1)
TRIALS = 3


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunPool]:
    pool = RunPool()
    pool.start(
        "joblib", ["-m", "hydra/launcher=local_parallel", "optimizer=adamw,sgd", *TINY], tmp_path_factory.mktemp("jl")
    )
    pool.start("submitit", ["-m", "hydra/launcher=submitit_local", *TINY], tmp_path_factory.mktemp("submitit"))
    pool.start(
        "optuna",
        ["-m", "hydra/sweeper=optuna_lr_wd", f"hydra.sweeper.n_trials={TRIALS}", *TINY],
        tmp_path_factory.mktemp("optuna"),
    )
    pool.start(
        "optuna-failing",
        ["-m", "hydra/sweeper=optuna_lr_wd", "hydra.sweeper.n_trials=4", FAIL_SOME, *TINY],
        tmp_path_factory.mktemp("optuna-failing"),
    )
    yield pool
    pool.close()


def summary_rows(sweep: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO((sweep / "summary.csv").read_text(encoding="utf-8"))))


def completed_sweep(run: Finished, jobs: int) -> Path:
    assert run.returncode == 0, run.describe()
    sweep = sweep_dir(run.cwd, "autoencoder")
    assert [job.name for job in job_dirs(sweep)] == [str(number) for number in range(jobs)]
    for job in job_dirs(sweep):
        result = read_json(job / "result.json")
        assert result["status"] == "completed", result
        assert result["steps"] == 2
    return sweep


def launcher_target(job: Path) -> str:
    return str(read_mapping(job / ".hydra" / "hydra.yaml")["hydra"]["launcher"]["_target_"])


def test_joblib_launcher_runs_the_jobs_and_summarises_them(runs: RunPool) -> None:
    sweep = completed_sweep(runs.result("joblib"), jobs=2)
    first, second = job_dirs(sweep)
    assert launcher_target(first).endswith("JoblibLauncher")
    assert "optimizer=adamw" in job_overrides(first)
    assert "optimizer=sgd" in job_overrides(second)
    assert read_mapping(second / "resolved_config.yaml")["optimizer"]["optimizer"] == "SGD"
    summary = (sweep / "summary.csv").read_text(encoding="utf-8").splitlines()
    assert summary[0].startswith("job,status,overrides,")
    assert [line.split(",")[:3] for line in summary[1:]] == [
        ["0", "completed", "optimizer=adamw"],
        ["1", "completed", "optimizer=sgd"],
    ]


def test_submitit_local_launcher_runs_the_job(runs: RunPool) -> None:
    sweep = completed_sweep(runs.result("submitit"), jobs=1)
    (job,) = job_dirs(sweep)
    assert launcher_target(job).endswith("LocalLauncher")
    assert "submitit" in launcher_target(job)
    assert children(sweep / ".submitit"), "submitit kept no record of its job"
    assert (sweep / "summary.csv").read_text(encoding="utf-8").splitlines()[1].startswith("0,completed,")


def test_optuna_sweeper_maximises_the_experiment_metric(runs: RunPool) -> None:
    run = runs.result("optuna")
    sweep = completed_sweep(run, jobs=TRIALS)
    results = read_mapping(sweep / "optimization_results.yaml")
    best = results["best_params"]
    assert set(best) == {"optimizer.learning_rate", "optimizer.weight_decay"}
    assert LR_RANGE[0] <= best["optimizer.learning_rate"] <= LR_RANGE[1]
    assert WD_RANGE[0] <= best["optimizer.weight_decay"] <= WD_RANGE[1]
    ious: dict[tuple[float, float], float] = {}
    for job in job_dirs(sweep):
        result = read_json(job / "result.json")
        assert result["objective"] == "iou"
        assert result["objective_value"] == result["metrics"]["iou"]
        optimizer = read_mapping(job / "resolved_config.yaml")["optimizer"]
        assert LR_RANGE[0] <= optimizer["learning_rate"] <= LR_RANGE[1]
        assert WD_RANGE[0] <= optimizer["weight_decay"] <= WD_RANGE[1]
        ious[(optimizer["learning_rate"], optimizer["weight_decay"])] = result["metrics"]["iou"]
    assert results["best_value"] == pytest.approx(max(ious.values()))  # direction: maximize (experiment.mode)
    best_key = (best["optimizer.learning_rate"], best["optimizer.weight_decay"])
    assert ious[best_key] == pytest.approx(results["best_value"])
    summary = (sweep / "summary.csv").read_text(encoding="utf-8").splitlines()[1:]
    assert [line.split(",")[:2] for line in summary] == [[str(job), "completed"] for job in range(TRIALS)]
    assert f"Best value: {results['best_value']}" in run.output


@pytest.mark.slow
def test_failing_job_in_a_joblib_sweep_is_reported_by_the_parent(tmp_path: Path) -> None:
    run = run_to_end(["-m", "hydra/launcher=local_parallel", FAIL_SOME, *TINY], tmp_path)
    assert run.returncode != 0, run.describe()  # the job failed in a worker process; the parent still knows
    sweep = sweep_dir(tmp_path, "autoencoder")
    rows = summary_rows(sweep)
    assert [(row["job"], row["status"]) for row in rows] == [("0", "completed"), ("1", "failed")]
    assert MISSING_WEIGHTS in rows[1]["error"]
    assert read_json(sweep / "1" / "result.json")["status"] == "failed"


def test_failing_trial_does_not_stop_an_optuna_sweep(runs: RunPool) -> None:
    run = runs.result("optuna-failing")
    assert "Values were told" not in run.output, run.describe()
    sweep = sweep_dir(run.cwd, "autoencoder")
    assert [job.name for job in job_dirs(sweep)] == ["0", "1", "2", "3"], "the sweep stopped early"
    rows = summary_rows(sweep)
    assert len(rows) == 4
    completed = [row for row in rows if row["status"] == "completed"]
    failed = [row for row in rows if row["status"] == "failed"]
    assert completed and failed and len(completed) + len(failed) == 4
    for row in failed:
        assert MISSING_WEIGHTS in row["error"]
    results = read_mapping(sweep / "optimization_results.yaml")
    ious = [read_json(sweep / row["job"] / "result.json")["metrics"]["iou"] for row in completed]
    assert results["best_value"] == pytest.approx(max(ious))
    assert run.returncode != 0  # a job failed
