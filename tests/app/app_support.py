"""Helpers of the runner's tests: run ``python -m train`` in a temporary directory, read what it wrote.

This is a plain module, not a ``conftest.py``: the tests of the core import their helpers with
``from conftest import ...`` and a second ``conftest`` module (this folder has no ``__init__.py``) would
replace theirs in ``sys.modules`` while pytest collects.

Every run is a real subprocess, with the working directory set to a temporary folder (so ``outputs/`` lands
there). Runs of one test module are started together in a :class:`RunPool` and read back by name, so that
the few seconds each spends importing torch and Hydra overlap.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from omegaconf import OmegaConf

IMAGE_SIZE = 16
EVERY_STEP_ROWS = "callbacks.metrics.every_n_steps=1"
"""The default callbacks write a metrics row every 50 steps; tests that read every step's row add this."""
TINY = (
    "training.duration=2:step",
    "task.epoch_size=16",
    f"task.image_size={IMAGE_SIZE}",
    "task.validation_size=4",
    "lr_scheduler=constant",
    EVERY_STEP_ROWS,
)
"""Overrides that shrink the default autoencoder run to seconds: two steps of one 16-mask batch each, at the
optimizer's constant learning rate (the default schedule warms up over 20 updates), each step in the metrics
file (the default writes every 10th)."""

TIMEOUT_S = 300.0
STAMP_FORMAT = "%Y-%m-%d_%H-%M-%S"
STAMP = re.compile(r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}")


def train_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a run: this one, unbuffered, one torch thread, and without HYDRA_FULL_ERROR."""
    env = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = "1"  # runs share the machine's cores: one thread each avoids oversubscription
    env.update(extra or {})
    return env


def run_train(
    args: Sequence[str],
    cwd: Path,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    """``python -m train *args`` in ``cwd``; never raises on a non-zero exit (the tests check it)."""
    return subprocess.run(
        [sys.executable, "-m", "train", *args],
        cwd=cwd,
        env=train_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass(frozen=True)
class Finished:
    """A finished run: where it ran and what it printed."""

    cwd: Path
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def describe(self) -> str:
        """For assertion messages: the command, its status and what it printed."""
        command = f"python -m train {' '.join(self.args)} (in {self.cwd}) -> exit {self.returncode}"
        return f"{command}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def run_to_end(args: Sequence[str], cwd: Path, *, env: Mapping[str, str] | None = None) -> Finished:
    """:func:`run_train`, its result as a :class:`Finished`."""
    process = run_train(args, cwd, env=env)
    return Finished(cwd, tuple(args), process.returncode, process.stdout, process.stderr)


class RunPool:
    """Runs of ``python -m train`` started at once, in worker threads, and read back by name."""

    def __init__(self, max_workers: int | None = None) -> None:
        workers = max_workers or max(2, min(4, os.cpu_count() or 2))
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="train-run")
        self._runs: dict[str, tuple[Path, tuple[str, ...], Future[subprocess.CompletedProcess[str]]]] = {}

    def start(self, name: str, args: Sequence[str], cwd: Path, *, env: Mapping[str, str] | None = None) -> None:
        cwd.mkdir(parents=True, exist_ok=True)
        future = self._executor.submit(run_train, list(args), cwd, env=env)
        self._runs[name] = (cwd, tuple(args), future)

    def result(self, name: str) -> Finished:
        cwd, args, future = self._runs[name]
        process = future.result()
        return Finished(cwd, args, process.returncode, process.stdout, process.stderr)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


# -- reading what a run wrote ------------------------------------------------------------------------------
def read_json(path: Path) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(path.read_text(encoding="utf-8")))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [cast(dict[str, Any], json.loads(line)) for line in lines if line.strip()]


def read_yaml(path: Path) -> Any:
    """A YAML file as plain Python data, read the way Hydra wrote it (interpolations left as text)."""
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def read_mapping(path: Path) -> dict[str, Any]:
    data = read_yaml(path)
    assert isinstance(data, dict), f"{path} holds a {type(data).__name__}, expected a mapping"
    return cast(dict[str, Any], data)


def nonblank_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def children(folder: Path) -> list[Path]:
    return sorted(folder.iterdir()) if folder.is_dir() else []


def stamped_dir(parent: Path) -> Path:
    """The one ``<YYYY-MM-DD>_<HH-MM-SS>`` folder in ``parent`` (and nothing else)."""
    entries = children(parent)
    assert len(entries) == 1, f"expected one run folder in {parent}, found {[entry.name for entry in entries]}"
    (entry,) = entries
    assert entry.is_dir() and STAMP.fullmatch(entry.name), f"{entry.name!r} is not a <YYYY-MM-DD>_<HH-MM-SS> folder"
    return entry


def stamp_time(folder: Path) -> datetime:
    return datetime.strptime(folder.name, STAMP_FORMAT)


def single_run_dir(cwd: Path, experiment: str) -> Path:
    """``outputs/<experiment>/<stamp>/``, checked to be the only thing under ``outputs/``."""
    outputs = cwd / "outputs"
    assert [entry.name for entry in children(outputs)] == [experiment], f"outputs/ holds {children(outputs)}"
    return stamped_dir(outputs / experiment)


def sweep_dir(cwd: Path, experiment: str) -> Path:
    """``outputs/<experiment>/multirun/<stamp>/``, checked to be the only thing under ``outputs/``."""
    outputs = cwd / "outputs"
    assert [entry.name for entry in children(outputs)] == [experiment], f"outputs/ holds {children(outputs)}"
    assert [entry.name for entry in children(outputs / experiment)] == ["multirun"]
    return stamped_dir(outputs / experiment / "multirun")


def job_dirs(sweep: Path) -> list[Path]:
    """The numbered job folders of a sweep, in job order."""
    numbered = [entry for entry in children(sweep) if entry.is_dir() and entry.name.isdigit()]
    return sorted(numbered, key=lambda entry: int(entry.name))


def job_overrides(job: Path) -> list[str]:
    """A job's ``.hydra/overrides.yaml``, with Hydra's escaping of ``:`` (``2\\:step``) undone."""
    overrides = read_yaml(job / ".hydra" / "overrides.yaml")
    assert isinstance(overrides, list)
    return [str(override).replace("\\:", ":") for override in cast(list[Any], overrides)]
