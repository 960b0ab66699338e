"""Fixtures of the checkpoint tests: every subprocess scenario, started together, and the reference run.

Each test module registers its scenarios with :func:`checkpoint_helpers.scenario` when pytest imports it;
the first test that needs one starts them all at once, so the whole suite's runs overlap. Modules put their
in-process tests first and those reading subprocess runs last.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:  # `tiny` lives in tests/, which pytest only adds when it collects a test there
    sys.path.insert(0, str(TESTS))

from checkpoint_helpers import (  # noqa: E402
    TOTAL_STEPS,
    Finished,
    Scenarios,
    checkpoint_steps,
    read_json,
    run_train,
    scenario,
    single_run_dir,
    step_losses,
    tiny,
)


@scenario("reference", priority=0)
def _reference(cwd: Path, runs: Scenarios) -> Finished:
    """The uninterrupted run that resumed runs are compared to."""
    return run_train(tiny(), cwd)


@pytest.fixture(scope="session")
def scenarios(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenarios]:
    """Every registered scenario, started when the first test needs one (so ``-k`` on in-process tests starts none)."""
    runs = Scenarios(tmp_path_factory.mktemp)
    yield runs
    runs.close()


@pytest.fixture(scope="session")
def reference(scenarios: Scenarios) -> Path:
    """The reference run's directory: checkpoints at steps 4, 6, 10, 12, 16, 18, 22, 24, all kept."""
    finished: Finished = scenarios.result("reference")
    assert finished.returncode == 0, finished.describe()
    run_dir = single_run_dir(finished.cwd)
    assert read_json(run_dir / "result.json")["status"] == "completed"
    assert checkpoint_steps(run_dir) == [4, 6, 10, 12, 16, 18, 22, 24]
    assert sorted(step_losses(run_dir)) == list(range(1, TOTAL_STEPS + 1))
    return run_dir
