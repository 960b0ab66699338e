"""`python -m train resume=...` on the command line: refusing a config that does not fit, resuming a sweep.

The sweep's two processes (the killed one, then the resume) and the refused resume start with the session's
other runs.
"""

from __future__ import annotations

import csv
import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from checkpoint_helpers import (
    MODEL_FILE,
    Finished,
    Scenarios,
    assert_same_tensors,
    checkpoint_steps,
    load_tensors,
    nonblank_lines,
    read_json,
    read_jsonl,
    run_train,
    scenario,
    single_run_dir,
    snapshot,
    sweep_dir,
    tiny,
)
from omegaconf import OmegaConf

from train.app import resume
from train.checkpointing import checkpoint_name


# -- 4. a resume whose config changes the model is refused, and writes nothing ---------------------------------
@dataclass(frozen=True)
class Refused:
    finished: Finished
    run_dir: Path
    before: dict[str, tuple[int, int, bytes]]
    after: dict[str, tuple[int, int, bytes]]


@scenario("refused_resume")
def _refused_resume(cwd: Path, runs: Scenarios) -> Refused:
    # A copy of the reference run: the reference must stay as it is for the other tests.
    run_dir = cwd / "run"
    reference: Finished = runs.result("reference")
    shutil.copytree(single_run_dir(reference.cwd), run_dir)
    before = snapshot(run_dir)
    finished = run_train([f"resume={run_dir}", "model.autoencoder.latent_dim=128"], run_dir.parent)
    return Refused(finished, run_dir, before, snapshot(run_dir))


# -- 7. an interrupted sweep -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sweep:
    killed: Finished
    directory: Path
    job0_before: dict[str, tuple[int, int, bytes]]
    job1_checkpoints: list[int]
    resumed: Finished


SWEEP_DURATION = "1:epoch"  # 8 steps: checkpoints at 4, 6, 8


@scenario("sweep")
def _interrupted_sweep(cwd: Path, runs: Scenarios) -> Sweep:
    # Job 0 never reaches step 1000; job 1 is SIGKILLed at step 5, which ends the whole sweep (one process).
    overrides = [*tiny(duration=SWEEP_DURATION), "+callbacks.killer._target_=killer.KillAtStep"]
    killed = run_train(["-m", *overrides, "+callbacks.killer.step=1000,5"], cwd)
    directory = sweep_dir(cwd)
    job0_before = snapshot(directory / "0")
    job1_checkpoints = checkpoint_steps(directory / "1")
    resumed = run_train(["-m", f"resume={directory}", "~callbacks.killer"], cwd)
    return Sweep(killed, directory, job0_before, job1_checkpoints, resumed)


def test_resume_with_another_model_shape_is_refused_and_writes_nothing(scenarios: Scenarios) -> None:
    refused: Refused = scenarios.result("refused_resume")
    finished = refused.finished
    assert finished.returncode == 2, finished.describe()
    lines = nonblank_lines(finished.stderr)
    assert len(lines) == 1, finished.describe()
    assert lines[0] == (
        f"error: cannot resume {refused.run_dir}: model differs from the run's "
        "(model.autoencoder.latent_dim was 256, now 128); its checkpoints would not fit"
    )
    assert refused.after == refused.before  # the same files, sizes, modification times and contents
    assert sorted(path.name for path in refused.run_dir.parent.iterdir()) == ["run"]  # no outputs/ either


@pytest.fixture(scope="module")
def sweep(scenarios: Scenarios) -> Sweep:
    return scenarios.result("sweep")


def test_killed_sweep_left_one_finished_and_one_interrupted_job(sweep: Sweep) -> None:
    assert sweep.killed.returncode == -9, sweep.killed.describe()
    assert "result.json" in sweep.job0_before
    assert read_json(sweep.directory / "0" / "result.json")["status"] == "completed"
    assert sweep.job1_checkpoints == [4]  # killed at step 5


def test_resumed_sweep_skips_the_finished_job_and_resumes_the_other(sweep: Sweep) -> None:
    assert sweep.resumed.returncode == 0, sweep.resumed.describe()
    job0, job1 = sweep.directory / "0", sweep.directory / "1"
    # Job 0 was not run again: its result, metrics, log, checkpoints and weights are untouched (only its .hydra/
    # files are rewritten: Hydra writes them for every job it launches, before the job can decide to skip).
    after = snapshot(job0)
    for name in ("result.json", "metrics.jsonl", "train.log", str(MODEL_FILE)):
        assert after[name] == sweep.job0_before[name], f"{name} of the finished job changed"
    assert {k: v for k, v in after.items() if not k.startswith(".hydra")} == {
        k: v for k, v in sweep.job0_before.items() if not k.startswith(".hydra")
    }
    assert f"Job in {job0} already completed: not run again" in sweep.resumed.stderr

    # Job 1 picked up its checkpoint and finished.
    log = (job1 / "train.log").read_text(encoding="utf-8")
    assert f"Resuming from {job1 / 'checkpoints' / checkpoint_name(4)} (step 4," in log
    result = read_json(job1 / "result.json")
    assert result["status"] == "completed" and result["steps"] == 8
    steps = [row["step"] for row in read_jsonl(job1 / "metrics.jsonl") if row["kind"] == "step"]
    assert steps == [1, 2, 3, 4, 5, 5, 6, 7, 8]  # step 5 ran twice: killed after it, redone after the resume
    # The two jobs differ only by the killer's step: the resumed job ends with job 0's weights, bit for bit.
    assert_same_tensors(load_tensors(job1 / MODEL_FILE), load_tensors(job0 / MODEL_FILE), "final weights of job 1")

    rows = list(csv.DictReader(io.StringIO((sweep.directory / "summary.csv").read_text(encoding="utf-8"))))
    assert [(row["job"], row["status"]) for row in rows] == [("0", "completed"), ("1", "completed")]
    assert "| 0 | completed |" in (sweep.directory / "summary.md").read_text(encoding="utf-8")


# -- the command lines a resume builds (in process) ---------------------------------------------------------
def _fake_run(run_dir: Path, overrides: list[str]) -> None:
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), run_dir / ".hydra" / "overrides.yaml")
    checkpoint = run_dir / "checkpoints" / checkpoint_name(4)
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.pt").write_bytes(b"")
    (checkpoint / "meta.json").write_text("{}", encoding="utf-8")


def test_run_command_line_replaces_adds_and_deletes(tmp_path: Path) -> None:
    _fake_run(tmp_path, ["training.duration=3:epoch", "+callbacks.killer._target_=killer.KillAtStep", "+x.y=1"])
    line = resume.run_command_line(str(tmp_path), ["training.duration=5:epoch", "~callbacks.killer", "~x.y"])
    assert line[:3] == ["+callbacks.killer._target_=killer.KillAtStep", "+x.y=1", "training.duration=5:epoch"]
    # A deletion follows the saved addition it undoes (Hydra cannot delete a key nothing added).
    assert line[3:5] == ["~callbacks.killer", "~x.y"]
    assert line[5:7] == [f"hydra.run.dir={tmp_path}", line[6]] and line[6].startswith("hydra.output_subdir=.hydra/")
    assert line[7:] == [f"resume={tmp_path / 'checkpoints' / checkpoint_name(4)}"]
