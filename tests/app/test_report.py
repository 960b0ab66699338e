"""`python -m train.report` on a run killed mid-training: the plots and the summary from its saved metrics."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from app_support import EVERY_STEP_ROWS
from PIL import Image

from train import report
from train.plots import COMPARISON_SIZE, CURVES_SIZE

TIMEOUT_S = 180.0
KILLED_RUN = (
    "training.duration=500:step",  # far longer than the test waits
    "training.batch_size=4",
    "training.evaluation_interval=2:step",
    "task.epoch_size=16",
    "task.image_size=16",
    "task.validation_size=4",
    EVERY_STEP_ROWS,
)


def env() -> dict[str, str]:
    variables = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
    return {**variables, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    parsed: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a line being written
            parsed.append(json.loads(line))
    return parsed


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A real run, SIGKILLed once its metrics file holds two evaluations: no result.json, no curves.png."""
    cwd = tmp_path_factory.mktemp("killed")
    process = subprocess.Popen(
        [sys.executable, "-m", "train", *KILLED_RUN],
        cwd=cwd,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + TIMEOUT_S
        run_dir: Path | None = None
        while time.monotonic() < deadline and process.poll() is None:
            found = sorted((cwd / "outputs" / "autoencoder").glob("*/metrics.jsonl"))
            if found and sum(row["kind"] == "evaluation" for row in rows(found[0])) >= 2:
                run_dir = found[0].parent
                break
            time.sleep(0.1)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        assert run_dir is not None, f"the run logged no two evaluations in {TIMEOUT_S} s (exit {process.returncode})"
        yield run_dir
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_killed_run_left_metrics_but_no_result(killed_run: Path) -> None:
    assert not (killed_run / "result.json").exists()
    assert not (killed_run / "curves.png").exists()
    assert any(row["kind"] == "step" for row in rows(killed_run / "metrics.jsonl"))


def test_report_command_redraws_curves_and_prints_the_summary(killed_run: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "train.report", str(killed_run)],
        capture_output=True,
        text=True,
        env=env(),
        timeout=TIMEOUT_S,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    logged = rows(killed_run / "metrics.jsonl")
    last_step = max(row["step"] for row in logged if row["kind"] == "step")
    last_evaluation = [row for row in logged if row["kind"] == "evaluation"][-1]

    lines = completed.stdout.splitlines()
    assert lines[0] == f"Run {killed_run}"
    header = next(line for line in lines if line.startswith("| run |"))
    row = lines[lines.index(header) + 2]
    cells = dict(zip(header.strip("|").split("|"), row.strip("|").split("|"), strict=True))
    cells = {key.strip(): value.strip() for key, value in cells.items()}
    assert cells["run"] == killed_run.name
    assert cells["status"] == "incomplete"
    assert cells["steps"] == str(last_step)
    assert cells["iou"] == f"{last_evaluation['iou']:.6g}"  # the last evaluation before the kill
    assert cells["val_loss"] == f"{last_evaluation['val_loss']:.6g}"
    assert cells["error"] == "no result.json: the job is still running, or it was killed"
    assert f"curves: {killed_run / 'curves.png'}" in lines

    with Image.open(killed_run / "curves.png") as image:
        assert (image.format, image.size) == ("PNG", CURVES_SIZE)


def test_report_without_plots_prints_only_the_table(
    killed_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / killed_run.name
    copy.mkdir()
    (copy / "metrics.jsonl").write_bytes((killed_run / "metrics.jsonl").read_bytes())
    assert report.main([str(copy), "--no-plots"]) == 0
    output = capsys.readouterr().out
    assert "| incomplete |" in output
    assert not (copy / "curves.png").exists()


def test_report_refuses_what_is_neither_a_run_nor_a_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report.main([str(tmp_path / "absent")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert report.main([str(tmp_path)]) == 2
    assert "holds neither a run" in capsys.readouterr().err


def write_job(job_dir: Path, result: dict[str, Any] | None, evaluations: list[float]) -> None:
    """A job folder: its overrides, metrics (a step row and an evaluation per value), and maybe a result."""
    (job_dir / ".hydra").mkdir(parents=True)
    (job_dir / ".hydra" / "overrides.yaml").write_text(f"- optimizer={job_dir.name}\n- seed=1\n", encoding="utf-8")
    lines: list[dict[str, Any]] = []
    for index, iou in enumerate(evaluations, start=1):
        lines.append({"kind": "step", "step": index, "time": index / 10, "loss": 1.0 / index, "lr": [0.1]})
        lines.append({"kind": "evaluation", "step": index, "time": index / 10 + 0.05, "iou": iou})
    (job_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    if result is not None:
        overrides = [f"optimizer={job_dir.name}", "seed=1"]
        full = {"overrides": overrides, "metrics": {}, "objective": "iou", "steps": len(evaluations), **result}
        (job_dir / "result.json").write_text(json.dumps(full), encoding="utf-8")


def test_report_of_a_sweep_with_finished_killed_and_interrupted_jobs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_job(tmp_path / "0", {"status": "completed", "metrics": {"iou": 0.75}}, [0.5, 0.75])
    write_job(tmp_path / "1", None, [0.25, 0.5, 0.625])  # killed: metrics, no result
    write_job(tmp_path / "2", {"status": "interrupted", "error": "SIGTERM"}, [0.125])
    write_job(tmp_path / "3", {"status": "failed", "error": "ValueError: bad"}, [])
    assert report.main([str(tmp_path)]) == 0
    output = capsys.readouterr().out
    table = [line for line in output.splitlines() if line.startswith("| ") and not line.startswith("| job")]
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in table]
    # job, status, overrides (only the swept one), iou, steps, seconds, error
    assert [row[:5] for row in cells] == [
        ["0", "completed", "optimizer=0", "0.75", "2"],
        ["1", "incomplete", "optimizer=1", "0.625", "3"],
        ["2", "interrupted", "optimizer=2", "0.125", "1"],
        ["3", "failed", "optimizer=3", "", "0"],
    ]
    assert cells[1][6] == "no result.json: the job is still running, or it was killed"
    with Image.open(tmp_path / "comparison.png") as image:
        assert image.size == COMPARISON_SIZE
    for job in ("0", "1", "2"):
        with Image.open(tmp_path / job / "curves.png") as image:
            assert image.size == CURVES_SIZE
