"""Helpers of the checkpoint tests: run ``python -m train`` in subprocesses, read and compare what runs wrote.

A plain module (imported as ``checkpoint_helpers``), so its name cannot clash with another folder's helpers.
Runs use the tiny autoencoder of :func:`tiny` (3 epochs of 8 steps of 8 masks of 16x16, gradient accumulation
over 2 steps, so 12 updates) and see ``tests/support`` on their ``PYTHONPATH``, where :mod:`killer` lives.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from safetensors.torch import load_file

if TYPE_CHECKING:
    from train.app.experiment import Experiment

REPO = Path(__file__).resolve().parents[2]
SUPPORT = REPO / "tests" / "support"
MODEL_FILE = Path("models") / "autoencoder.safetensors"
"""The final weights of a run of the tiny autoencoder, relative to its run directory."""
TIMEOUT_S = 180.0
EXPERIMENT = "autoencoder"

STEPS_PER_EPOCH = 8
TOTAL_STEPS = 24
SHRUNK = (
    "task.epoch_size=64",
    "task.image_size=16",
    "task.validation_size=8",
    "training.batch_size=8",
    "training.gradient_accumulation=2:step",
    # Warmup for 3 updates, then cosine decay: the resumed schedule has a state to get right.
    "lr_scheduler=cosine_warmup",
    "lr_scheduler.warmup=3:iteration",
)
"""Epochs of 8 steps of 8 masks of 16x16, an update every 2 steps, AdamW (the default optimizer)."""


def tiny(
    *,
    duration: str = "3:epoch",
    interval: str = "3:step",
    keep_last: int = 100,
    checkpointing: str = "train.callbacks.Checkpointing",
) -> list[str]:
    """The tiny run's overrides (by default 3 epochs: 24 steps, 12 updates), with only two callbacks.

    ``callbacks=none`` first, so that whatever the default set holds (progress bars, plots...) neither slows
    these runs nor changes what they test. With the default ``interval`` of 3 steps, checkpoints are taken at
    the first update boundary at or after each multiple of 3: steps 4, 6, 10, 12, 16, 18, 22, 24 (odd steps
    lie inside an accumulation window and are never saved).
    """
    return [
        *SHRUNK,
        f"training.duration={duration}",
        "callbacks=none",
        "+callbacks.metrics._target_=train.callbacks.MetricsFile",
        f"+callbacks.checkpoint._target_={checkpointing}",
        f"+callbacks.checkpoint.interval={interval}",
        f"+callbacks.checkpoint.keep_last={keep_last}",
        "+callbacks.checkpoint.best_metric=iou",
    ]


def kill_at(step: int) -> list[str]:
    """Overrides adding a callback that SIGKILLs the run at the end of ``step`` (after the checkpoint callback)."""
    return ["+callbacks.killer._target_=killer.KillAtStep", f"+callbacks.killer.step={step}"]


def signal_at(step: int, name: str = "SIGTERM") -> list[str]:
    return [
        "+callbacks.killer._target_=killer.SignalAtStep",
        f"+callbacks.killer.step={step}",
        f"+callbacks.killer.signal_name={name}",
    ]


# -- running ---------------------------------------------------------------------------------------------
def train_env() -> dict[str, str]:
    """This environment, unbuffered, one torch thread, ``tests/support`` importable, no HYDRA_FULL_ERROR."""
    env = {key: value for key, value in os.environ.items() if key not in ("HYDRA_FULL_ERROR", "PYTHONPATH")}
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = "1"  # runs share the cores: one thread each avoids oversubscription
    env["PYTHONPATH"] = str(SUPPORT)
    return env


@dataclass(frozen=True)
class Finished:
    """A finished ``python -m train`` process: where it ran, its arguments, exit status and output."""

    cwd: Path
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def describe(self) -> str:
        """For assertion messages: the command, its status and the end of what it printed."""
        return (
            f"python -m train {' '.join(self.args)} (in {self.cwd}) -> exit {self.returncode}\n"
            f"--- stdout\n{self.stdout[-4000:]}\n--- stderr\n{self.stderr[-6000:]}"
        )


def run_train(args: Sequence[str], cwd: Path, *, timeout: float = TIMEOUT_S) -> Finished:
    """``python -m train *args`` in ``cwd`` (created if needed); never raises on a non-zero exit."""
    cwd.mkdir(parents=True, exist_ok=True)
    process = subprocess.run(
        [sys.executable, "-m", "train", *args],
        cwd=cwd,
        env=train_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Finished(cwd, tuple(args), process.returncode, process.stdout, process.stderr)


def start_train(args: Sequence[str], cwd: Path) -> subprocess.Popen[str]:
    """``python -m train *args`` started in ``cwd``, its output going to ``cwd/stdout.txt`` and ``stderr.txt``."""
    cwd.mkdir(parents=True, exist_ok=True)
    with (cwd / "stdout.txt").open("w") as stdout, (cwd / "stderr.txt").open("w") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "train", *args], cwd=cwd, env=train_env(), stdout=stdout, stderr=stderr, text=True
        )


def sigterm_once_training(args: Sequence[str], cwd: Path, *, timeout: float = TIMEOUT_S) -> Finished:
    """Start a run, wait until ``metrics.jsonl`` holds a step row, send SIGTERM from here, wait for the exit."""
    process = start_train(args, cwd)
    deadline = time.monotonic() + timeout
    try:
        while True:
            assert process.poll() is None, f"the run exited ({process.returncode}) before logging a step"
            assert time.monotonic() < deadline, "no step row in metrics.jsonl before the timeout"
            rows = [row for path in cwd.glob(f"outputs/{EXPERIMENT}/*/metrics.jsonl") for row in read_jsonl(path)]
            if any(row["kind"] == "step" for row in rows):
                break
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stdout = (cwd / "stdout.txt").read_text(encoding="utf-8")
    stderr = (cwd / "stderr.txt").read_text(encoding="utf-8")
    return Finished(cwd, tuple(args), returncode, stdout, stderr)


ScenarioFunction = Callable[[Path, "Scenarios"], Any]
"""A scenario: subprocess runs in a fresh working directory; it may wait for other scenarios' results."""

_registered: dict[str, tuple[int, ScenarioFunction]] = {}


def scenario(name: str, *, priority: int = 1) -> Callable[[ScenarioFunction], ScenarioFunction]:
    """Register a function as the scenario ``name``: it starts with the first test that asks for any scenario.

    Test modules register their scenarios when pytest imports them (at collection), so all the scenarios of
    the session run at once, in worker threads, overlapping each other (most of a run is its own start-up:
    imports, composing the config). Lower ``priority`` values start first (the longest chain should).
    """

    def register(function: ScenarioFunction) -> ScenarioFunction:
        assert name not in _registered or _registered[name][1] is function, f"two scenarios named {name!r}"
        _registered[name] = (priority, function)
        return function

    return register


class Scenarios:
    """The registered scenarios, all started at once, read back by name (waiting for them as needed)."""

    def __init__(self, make_dir: Callable[[str], Path]) -> None:
        ordered = sorted(_registered.items(), key=lambda item: item[1][0])
        self._executor = ThreadPoolExecutor(max_workers=max(1, len(ordered)), thread_name_prefix="scenario")
        # Directories made here, in one thread: pytest's mktemp is not thread-safe.
        directories = {name: make_dir(name) for name, _ in ordered}
        self._futures: dict[str, Future[Any]] = {}
        for name, (_, function) in ordered:  # one by one: a scenario may ask for one submitted before it
            self._futures[name] = self._executor.submit(function, directories[name], self)

    def result(self, name: str) -> Any:
        assert name in self._futures, f"no scenario named {name!r} was registered (or collected)"
        return self._futures[name].result()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


# -- reading what runs wrote -----------------------------------------------------------------------------
def read_json(path: Path) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(path.read_text(encoding="utf-8")))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    # A line being written while a run is read may be incomplete: only whole lines count.
    return [cast(dict[str, Any], json.loads(line)) for line in lines if line.strip().endswith("}")]


def run_dirs(cwd: Path) -> list[Path]:
    """The run directories ``outputs/autoencoder/<stamp>/`` of single runs started in ``cwd``."""
    parent = cwd / "outputs" / EXPERIMENT
    if not parent.is_dir():
        return []
    return sorted(path for path in parent.iterdir() if path.is_dir() and path.name != "multirun")


def single_run_dir(cwd: Path) -> Path:
    found = run_dirs(cwd)
    assert len(found) == 1, f"expected one run directory under {cwd}/outputs, found {found}"
    return found[0]


def sweep_dir(cwd: Path) -> Path:
    parent = cwd / "outputs" / EXPERIMENT / "multirun"
    found = sorted(parent.iterdir()) if parent.is_dir() else []
    assert len(found) == 1, f"expected one sweep directory in {parent}, found {found}"
    return found[0]


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def assert_same_tensors(actual: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], what: str) -> None:
    """Same keys, and every tensor equal bit for bit (same dtype, shape and values)."""
    assert sorted(actual) == sorted(expected), f"{what}: the keys differ"
    differing = [
        key
        for key in expected
        if actual[key].dtype != expected[key].dtype or not torch.equal(actual[key], expected[key])
    ]
    assert not differing, f"{what}: {len(differing)} of {len(expected)} tensors differ, e.g. {differing[:3]}"


def step_losses(run_dir: Path) -> dict[int, float]:
    """Step -> loss from ``metrics.jsonl``, the last row of each step winning (a resumed run repeats steps)."""
    return {int(row["step"]): row["loss"] for row in read_jsonl(run_dir / "metrics.jsonl") if row["kind"] == "step"}


def evaluations(run_dir: Path) -> dict[int, dict[str, Any]]:
    """Step -> the last evaluation row of that step."""
    rows = read_jsonl(run_dir / "metrics.jsonl")
    return {int(row["step"]): row for row in rows if row["kind"] == "evaluation"}


def checkpoint_steps(run_dir: Path) -> list[int]:
    from train.checkpointing import list_checkpoints

    return [int(path.name.removeprefix("step_")) for path in list_checkpoints(run_dir / "checkpoints")]


def load_trainer_state(checkpoint: Path) -> dict[str, Any]:
    """A checkpoint's ``trainer_state.pt``, read the safe way (tensors and plain containers only)."""
    return cast(dict[str, Any], torch.load(checkpoint / "trainer_state.pt", map_location="cpu", weights_only=True))


def flat_tensors(data: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf of nested dicts and lists under a dotted path (to compare two states leaf by leaf)."""
    if isinstance(data, dict):
        items = cast(dict[Any, Any], data).items()
        return {k: v for key, value in items for k, v in flat_tensors(value, f"{prefix}{key}.").items()}
    if isinstance(data, list | tuple):
        values = cast(Sequence[Any], data)
        return {k: v for i, value in enumerate(values) for k, v in flat_tensors(value, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): data}


def assert_same_state(actual: Any, expected: Any, what: str) -> None:
    """Nested states equal leaf by leaf: tensors bit for bit, everything else by ``==``."""
    left, right = flat_tensors(actual), flat_tensors(expected)
    assert sorted(left) == sorted(right), f"{what}: the keys differ: {sorted(set(left) ^ set(right))[:5]}"
    for key, value in right.items():
        if isinstance(value, torch.Tensor):
            other = left[key]
            assert isinstance(other, torch.Tensor) and torch.equal(other, value), f"{what}: {key} differs"
        else:
            assert left[key] == value, f"{what}: {key} is {left[key]!r}, expected {value!r}"


def snapshot(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under ``folder``: relative path -> (size, mtime in ns, content)."""
    found: dict[str, tuple[int, int, bytes]] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            stat = path.stat()
            found[str(path.relative_to(folder))] = (stat.st_size, stat.st_mtime_ns, path.read_bytes())
    return found


def nonblank_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def compose_experiment(overrides: Sequence[str]) -> Experiment:
    """The experiment ``python -m train *overrides`` would run, composed and built in this process."""
    from hydra import compose, initialize_config_dir

    from train.app.experiment import build_experiment
    from train.app.main import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name="checkpoint_tests"):
        return build_experiment(compose(config_name="train", overrides=list(overrides)))
