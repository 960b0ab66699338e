"""Bad command lines fail before anything is trained, with one line naming the key and the bad value.

Each case is its own ``python -m train`` process in its own folder; they all start together (module fixture).
The bad override comes last, after the sizes that shrink the run, so it is the one Hydra keeps; should a
case be accepted by mistake, the run it starts is a tiny one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch
from app_support import TINY, Finished, RunPool, nonblank_lines

CUDA = torch.cuda.is_available()


@dataclass(frozen=True)
class BadInput:
    id: str
    override: str
    key: str
    """What the message must name: the key (or the group)."""
    value: str
    """The bad value as the message shows it."""
    also: tuple[str, ...] = ()
    """Further text the message must hold."""
    bug: str | None = None
    """A known bug that makes this case fail (the test is then an expected failure)."""

    @property
    def runs_here(self) -> bool:
        return not (CUDA and self.override == "training.device=cuda")

    @property
    def marks(self) -> list[pytest.MarkDecorator]:
        marks = [pytest.mark.skipif(not self.runs_here, reason="CUDA is available: training.device=cuda is valid")]
        if self.bug:
            marks.append(pytest.mark.xfail(strict=True, reason=self.bug))
        return marks


BAD_INPUTS = [
    BadInput("duration-abc", "training.duration=abc", "training.duration", "abc"),
    BadInput("duration-unit", "training.duration=10:fortnight", "training.duration", "10:fortnight", ("step", "epoch")),
    BadInput("batch_size-0", "training.batch_size=0", "training.batch_size", "0", (">= 1",)),
    BadInput("batch_size-abc", "training.batch_size=abc", "training.batch_size", "abc", ("integer",)),
    BadInput("optimizer-group", "optimizer=nosuch", "optimizer", "nosuch", ("adam", "adamw", "sgd")),
    BadInput("learning_rate", "optimizer.learning_rate=-1", "optimizer.learning_rate", "-1"),
    BadInput("device-cuda", "training.device=cuda", "training.device", "cuda"),
    BadInput("dtype", "training.dtype=float8", "training.dtype", "float8", ("float32",)),
    BadInput("model-target", "model.autoencoder._target_=no.such.Thing", "model.autoencoder._target_", "no.such.Thing"),
    # An unknown key has no bad value besides its own name.
    BadInput("unknown-key", "training.nosuch=1", "training.nosuch", "nosuch", ("batch_size",)),
    BadInput(
        "added-unknown-key",
        "+training.nosuch=1",
        "training.nosuch",
        "nosuch",
        ("batch_size",),
    ),
    BadInput(
        "model-interpolation",
        "model.autoencoder.latent_dim=${task.nosuch}",
        "model.autoencoder.latent_dim",
        "task.nosuch",
    ),
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunPool]:
    pool = RunPool()
    for case in BAD_INPUTS:
        if case.runs_here:
            pool.start(case.id, [*TINY, case.override], tmp_path_factory.mktemp(case.id))
    pool.start(
        "full-error", [*TINY, "training.batch_size=0"], tmp_path_factory.mktemp("full"), env={"HYDRA_FULL_ERROR": "1"}
    )
    yield pool
    pool.close()


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id, marks=case.marks) for case in BAD_INPUTS])
def test_bad_input_fails_with_one_line_before_training(runs: RunPool, case: BadInput) -> None:
    run: Finished = runs.result(case.id)
    assert run.returncode != 0, run.describe()
    lines = nonblank_lines(run.stderr)
    assert len(lines) == 1, run.describe()
    (line,) = lines
    assert line.startswith("error: "), line
    assert case.key in line, line
    assert case.value in line, line
    for text in case.also:
        assert text in line, line
    assert "Traceback" not in run.output
    assert not (run.cwd / "outputs").exists(), "something ran: outputs/ was created"


def test_hydra_full_error_shows_the_traceback(runs: RunPool) -> None:
    run = runs.result("full-error")
    assert run.returncode != 0, run.describe()
    assert "Traceback (most recent call last)" in run.stderr
    assert "InvalidConfig: training.batch_size=0 is invalid" in run.stderr
    assert not (run.cwd / "outputs").exists()
