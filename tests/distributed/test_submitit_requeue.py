"""A sweep job through the submitit launcher (``submitit_local``), run as 2 tasks that train as 2 ranks, and
pre-empted: it checkpoints, submitit requeues it, and the requeued job resumes from that checkpoint.

This is the path of a SLURM sweep with ``tasks_per_node=2``, on this machine: submitit's local executor starts
the tasks with ``SUBMITIT_LOCAL_*`` variables (SLURM's executor: ``SLURM_*``, read the same way), sends USR2
before the time limit as sbatch's ``--signal`` does, and restarts the job when it asks to be requeued. Here
rank 1 alone gets USR2 after step 1 (a pre-emption); both ranks stop at step 2, rank 0 saves, submitit requeues.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from distributed_support import TINY, Finished, checkpoint_steps, read_json, run, step_rows

SWEEP = [
    "-m",
    "hydra/launcher=submitit_local",
    "hydra.launcher.tasks_per_node=2",
    *TINY,
    "training.duration=2:epoch",
    "callbacks=none",
    "+callbacks.metrics._target_=train.callbacks.MetricsFile",
    "+callbacks.checkpoint._target_=train.callbacks.Checkpointing",
    "+callbacks.checkpoint.keep_last=10",
    "+callbacks.signal._target_=distributed_support.SignalRankAt",
    "+callbacks.signal.step=1",
    "+callbacks.signal.rank=1",
    "+callbacks.signal.signal_name=SIGUSR2",
]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Finished, Path]:
    cwd = tmp_path_factory.mktemp("submitit")
    finished = run([sys.executable, "-m", "train", *SWEEP], cwd)
    assert finished.returncode == 0, finished.describe()
    sweeps = sorted((cwd / "outputs" / "autoencoder" / "multirun").iterdir())
    assert len(sweeps) == 1, sweeps
    return finished, sweeps[0]


def test_the_job_ran_as_two_tasks_in_its_sweep_directory(sweep: tuple[Finished, Path]) -> None:
    _, sweep_dir = sweep
    assert sorted(path.name for path in sweep_dir.iterdir() if path.name.isdigit()) == ["0"]
    (job,) = [path for path in (sweep_dir / ".submitit").iterdir() if path.name.isdigit()]
    assert sorted(path.name for path in job.glob("*_log.out")) == [f"{job.name}_0_log.out", f"{job.name}_1_log.out"]
    rows = (sweep_dir / "summary.csv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 2 and ",completed," in rows[1], rows


def test_the_preempted_job_is_requeued_and_resumes_from_its_checkpoint(sweep: tuple[Finished, Path]) -> None:
    _, sweep_dir = sweep
    run_dir = sweep_dir / "0"  # the same directory before and after the requeue
    result = read_json(run_dir / "result.json")
    assert result["status"] == "completed" and result["steps"] == 8, result
    log = (run_dir / "train.log").read_text(encoding="utf-8")
    assert "Training finished (received SIGUSR2): 0 epochs, 2 iterations, 2 steps" in log
    assert f"Resuming from {run_dir / 'checkpoints' / 'step_00000002'} (step 2, epoch 0)" in log
    assert log.count("Run directory: ") == 2, "one job, started twice"
    (job,) = [path for path in (sweep_dir / ".submitit").iterdir() if path.name.isdigit()]
    assert "this job is preempted" in (job / f"{job.name}_0_log.err").read_text(encoding="utf-8")
    assert checkpoint_steps(run_dir) == [2, 4, 8]
    assert [row["step"] for row in step_rows(run_dir)] == list(range(1, 9)), "each step logged once, by rank 0"
