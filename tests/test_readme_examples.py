"""The README's code is run as written: the library example and the "add your own experiment" recipe."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def _block_named(language: str, marker: str) -> str:
    matches = [block for block in _blocks(language) if marker in block]
    assert len(matches) == 1, f"expected one {language} block containing {marker!r} in README.md"
    return matches[0]


def _run(arguments: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(arguments, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_library_example_trains(tmp_path: Path) -> None:
    (tmp_path / "example.py").write_text(_block_named("python", "MyTrainer(config).train()"), encoding="utf-8")
    completed = _run([sys.executable, "example.py"], tmp_path)
    assert completed.returncode == 0, completed.stderr
    # 64 items in batches of 8 with accumulation 2: 8 steps and 4 updates an epoch, for 10 epochs.
    assert "Training finished: 10 epochs, 40 iterations, 80 steps" in completed.stderr


def test_own_experiment_recipe_runs_from_outside_the_package(tmp_path: Path) -> None:
    (tmp_path / "my_experiment.py").write_text(_block_named("python", "class RegressionTrainer"), encoding="utf-8")
    for name in ("model", "experiment"):
        (tmp_path / "my_conf" / name).mkdir(parents=True)
        block = _block_named("yaml", f"my_conf/{name}/regression.yaml")
        (tmp_path / "my_conf" / name / "regression.yaml").write_text(block, encoding="utf-8")
    command = _block_named("bash", "--config-dir my_conf").strip().split()
    assert command[:3] == ["PYTHONPATH=.", "python", "-m"], command
    completed = _run([sys.executable, *command[2:]], tmp_path)
    assert completed.returncode == 0, completed.stderr
    (run_dir,) = (tmp_path / "outputs" / "regression").iterdir()
    result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    assert result["status"] == "completed"
    assert result["objective"] == "mse"
    # y = 3x - 1 on x in [0, 1): a learnt line gets close; the untrained one is far off (mse ~ 1 or more).
    assert 0.0 <= result["objective_value"] < 0.05
    assert (run_dir / "models" / "net.safetensors").is_file()
