"""The SLURM launcher preset (``hydra/launcher=slurm``): its composed config and the sbatch script it submits.

No cluster here: the launcher runs for real up to the submission, where ``submitit.AutoExecutor.map_array`` is
replaced by a function that keeps the sbatch script submitit would hand to ``sbatch`` (a stand-in ``srun`` on
PATH lets submitit's SLURM executor start).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import submitit
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig
from submitit.slurm.slurm import SlurmExecutor

from train.app.main import CONFIG_DIR


def compose_slurm(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name="train"):
        return compose(config_name="train", overrides=["hydra/launcher=slurm", *overrides], return_hydra_config=True)


def test_the_preset_runs_one_task_per_gpu_and_requeues() -> None:
    launcher = compose_slurm().hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node) == (1, 1, 1)
    assert (launcher.timeout_min, launcher.signal_delay_s, launcher.max_num_timeout) == (60, 120, 3)
    assert launcher.partition is None
    assert dict(launcher.additional_parameters) == {"requeue": True}
    four = compose_slurm("hydra.launcher.gpus_per_node=4").hydra.launcher
    assert four.tasks_per_node == 4  # follows gpus_per_node
    cpu = compose_slurm("hydra.launcher.gpus_per_node=null", "hydra.launcher.tasks_per_node=2").hydra.launcher
    assert (cpu.gpus_per_node, cpu.tasks_per_node) == (None, 2)


def test_the_preset_submits_one_srun_task_per_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = compose_slurm(
        "hydra.launcher.partition=gpu",
        "hydra.launcher.timeout_min=240",
        "hydra.launcher.nodes=2",
        "hydra.launcher.gpus_per_node=4",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path('/usr/bin')}:{Path('/bin')}")
    submitted: dict[str, Any] = {}

    def keep_the_script(executor: submitit.AutoExecutor, function: Any, *arguments: Any) -> list[Any]:
        slurm = executor._executor
        assert isinstance(slurm, SlurmExecutor)
        submitted["script"] = slurm._make_submission_file_text("python -u -m submitit.core._submit FOLDER", "uid")
        submitted["max_num_timeout"] = slurm.max_num_timeout
        submitted["jobs"] = [list(values) for values in zip(*arguments, strict=True)]
        return []

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", keep_the_script)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.config = cfg
    launcher.launch([["optimizer=sgd"], ["optimizer=adam"]], initial_job_idx=0)

    script = submitted["script"].splitlines()
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --time=240",
        "#SBATCH --nodes=2",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --ntasks-per-node=4",  # one task per GPU: 8 ranks over 2 nodes
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32GB",
        "#SBATCH --signal=USR2@120",  # the warning before the time limit: checkpoint, then requeue
        "#SBATCH --requeue",
        "export SUBMITIT_EXECUTOR=slurm",
    ):
        assert line in script, f"{line!r} is not in the sbatch script:\n" + "\n".join(script)
    assert any(line.startswith("srun ") for line in script), "the tasks are started by srun"
    assert submitted["max_num_timeout"] == 3
    # One array job per sweep job, each with its own job number (its directory: <sweep dir>/<number>).
    assert [job[0] for job in submitted["jobs"]] == [["optimizer=sgd"], ["optimizer=adam"]]
    assert [job[2] for job in submitted["jobs"]] == [0, 1]
