"""Exact resume of real runs killed by SIGKILL or stopped by SIGTERM: bit-identical to an uninterrupted run.

Every run has the config of :func:`checkpoint_helpers.tiny`: 3 epochs of 8 steps, gradient accumulation over
2 steps, AdamW with warmup then cosine decay, checkpoints at steps 4, 6, 10, 12, 16, 18, 22, 24, all kept.

To keep the suite fast, the interruptions form one chain of processes on one run directory, each resuming
where the previous one died: SIGKILL at step 11 (inside an accumulation window), at step 14 (inside an
epoch), at step 16 (the end of an epoch), SIGTERM at step 19, then a resume to the end. Each resume is checked
on its own: the checkpoints the resumed process writes (weights, optimizer moments, schedule, clock, RNG
states) equal, bit for bit, those the uninterrupted reference run wrote at the same steps, and so do its
logged losses. The reference, the chain and an externally signalled run start with the session's other runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from checkpoint_helpers import (
    MODEL_FILE,
    STEPS_PER_EPOCH,
    TOTAL_STEPS,
    Finished,
    Scenarios,
    assert_same_state,
    assert_same_tensors,
    checkpoint_steps,
    kill_at,
    load_tensors,
    load_trainer_state,
    read_json,
    read_jsonl,
    run_train,
    scenario,
    signal_at,
    sigterm_once_training,
    single_run_dir,
    step_losses,
    tiny,
)

from train.checkpointing import checkpoint_name, latest_checkpoint


@dataclass(frozen=True)
class Stop:
    """One process of the chain: stopped at the end of ``stop_step`` (SIGKILL or SIGTERM), after resuming."""

    name: str
    stop_step: int
    checkpoint_step: int
    """The newest checkpoint the process leaves, which the next process must resume from."""
    next_checkpoint: int
    """The first checkpoint the next (resumed) process writes, compared to the reference's."""
    overrides: tuple[str, ...]


CHAIN = (
    # Between the two steps of the window (11, 12): step 11's gradient was accumulated, then lost.
    Stop("inside_accumulation_window", 11, 10, 12, tuple(kill_at(11))),
    # Inside epoch 1 (its step 6 of 8), at an update boundary, two steps after the checkpoint of step 12.
    Stop("inside_epoch", 14, 12, 16, ("+callbacks.killer.step=14",)),
    # The last step of epoch 1. Its checkpoint is taken before the epoch's end runs (evaluation, epoch hooks),
    # so the next process starts exactly at the boundary, with nothing left of the epoch but its end.
    Stop("epoch_boundary", 16, 16, 18, ("+callbacks.killer.step=16",)),
)
SIGKILL_CASES = {stop.name: stop for stop in CHAIN}
# SIGTERM inside the window (19, 20): the checkpoint waits for the update of step 20 (not a regular one).
SIGTERM = Stop("sigterm", 19, 20, 22, tuple(signal_at(19)))


@dataclass(frozen=True)
class Link:
    """A process of the chain, with what the run directory held right after it ended."""

    finished: Finished
    result: dict[str, Any] | None
    checkpoints: list[int]
    has_final_weights: bool
    metric_rows: int


@scenario("chain", priority=0)
def _run_chain(cwd: Path, runs: Scenarios) -> list[Link]:
    links: list[Link] = []
    for stop in (*CHAIN, SIGTERM, None):
        if not links:
            args = [*tiny(), *(stop.overrides if stop else ())]
        else:
            args = [f"resume={single_run_dir(cwd)}", *(stop.overrides if stop else ("~callbacks.killer",))]
        finished = run_train(args, cwd)
        run_dir = single_run_dir(cwd)
        result = read_json(run_dir / "result.json") if (run_dir / "result.json").is_file() else None
        rows = len(read_jsonl(run_dir / "metrics.jsonl"))
        links.append(Link(finished, result, checkpoint_steps(run_dir), (run_dir / MODEL_FILE).exists(), rows))
    return links


@scenario("external_sigterm")
def _external_sigterm(cwd: Path, runs: Scenarios) -> Finished:
    return sigterm_once_training(tiny(duration="40:epoch"), cwd)  # it cannot finish before the signal comes


@pytest.fixture(scope="module")
def chain(scenarios: Scenarios) -> list[Link]:
    return scenarios.result("chain")


def _link(chain: list[Link], stop: Stop) -> tuple[Link, Link]:
    """The process stopped by ``stop`` and the one that resumed after it."""
    index = [*CHAIN, SIGTERM].index(stop)
    return chain[index], chain[index + 1]


def _state_without_run_specifics(checkpoint: Path) -> dict[str, Any]:
    state = load_trainer_state(checkpoint)
    del state["clock"]["time_elapsed"]  # wall-clock time
    state["callbacks"].pop("killer", None)  # only the chain's runs have it (and it has no state)
    return state


def assert_same_checkpoint(run_dir: Path, reference: Path, step: int) -> None:
    actual, expected = (
        run_dir / "checkpoints" / checkpoint_name(step),
        reference / "checkpoints" / checkpoint_name(step),
    )
    what = f"checkpoint of step {step}"
    actual_weights = load_tensors(actual / "autoencoder.safetensors")
    assert_same_tensors(actual_weights, load_tensors(expected / "autoencoder.safetensors"), f"weights of the {what}")
    assert_same_state(
        _state_without_run_specifics(actual), _state_without_run_specifics(expected), f"state of the {what}"
    )


def test_kill_points_are_what_they_claim() -> None:
    window, inside, boundary = CHAIN
    assert window.stop_step % 2 == 1 and window.checkpoint_step == window.stop_step - 1  # accumulation: 2
    assert inside.stop_step % STEPS_PER_EPOCH != 0 and inside.stop_step % 2 == 0
    assert inside.checkpoint_step < inside.stop_step  # it resumes two steps back
    assert boundary.stop_step % STEPS_PER_EPOCH == 0 and boundary.checkpoint_step == boundary.stop_step


# -- 1. SIGKILL at three points, each resumed ---------------------------------------------------------------
@pytest.mark.parametrize("name", list(SIGKILL_CASES))
def test_sigkilled_run_resumes_bit_identically(name: str, chain: list[Link], reference: Path) -> None:
    stop = SIGKILL_CASES[name]
    killed, resumed = _link(chain, stop)
    run_dir = single_run_dir(killed.finished.cwd)
    assert killed.finished.returncode == -9, killed.finished.describe()  # SIGKILL: nothing ran after it
    assert killed.checkpoints[-1] == stop.checkpoint_step
    assert killed.result is None  # no process of the chain has ended by itself yet
    assert not killed.has_final_weights

    assert (
        f"Resuming from {run_dir / 'checkpoints' / checkpoint_name(stop.checkpoint_step)} " in resumed.finished.stderr
    )
    # What the resumed process trained is what the uninterrupted run trained: its first checkpoint holds the
    # same weights, optimizer moments, schedule, clock and RNG states, and the losses it logged are the same.
    assert_same_checkpoint(run_dir, reference, stop.next_checkpoint)
    appended = read_jsonl(run_dir / "metrics.jsonl")[killed.metric_rows : resumed.metric_rows]
    if stop.checkpoint_step % STEPS_PER_EPOCH == 0:  # resumed at an epoch's end: its evaluation comes first
        assert (appended[0]["kind"], appended[0]["step"]) == ("evaluation", stop.checkpoint_step)
    rows = [row for row in appended if row["kind"] == "step"]
    assert rows[0]["step"] == stop.checkpoint_step + 1
    expected = step_losses(reference)
    assert [row["loss"] for row in rows] == [expected[row["step"]] for row in rows]
    lrs = {int(row["step"]): row["lr"] for row in read_jsonl(reference / "metrics.jsonl") if row["kind"] == "step"}
    assert [row["lr"] for row in rows] == [lrs[row["step"]] for row in rows]


# -- 3. SIGTERM: a checkpoint at the next update boundary, exit 143, then resume -----------------------------
def test_sigterm_checkpoints_at_next_update_boundary(chain: list[Link]) -> None:
    signalled, _ = _link(chain, SIGTERM)
    run_dir = single_run_dir(signalled.finished.cwd)
    assert signalled.finished.returncode == 143, signalled.finished.describe()
    assert "Received SIGTERM" in signalled.finished.stderr
    assert signalled.checkpoints[-1] == SIGTERM.checkpoint_step  # step 20; the regular ones are 18 and 22
    state = load_trainer_state(run_dir / "checkpoints" / checkpoint_name(SIGTERM.checkpoint_step))
    assert state["clock"]["step"] == SIGTERM.checkpoint_step and state["clock"]["iteration"] == 10
    assert signalled.result is not None
    assert signalled.result["status"] == "interrupted"
    assert signalled.result["steps"] == SIGTERM.checkpoint_step
    assert signalled.result["error"] == "received SIGTERM"
    assert not signalled.has_final_weights  # an interrupted run writes no final weights
    assert f"python -m train resume={run_dir}" in signalled.finished.stderr


def test_resume_after_sigterm_finishes_with_the_uninterrupted_weights(chain: list[Link], reference: Path) -> None:
    _, last = _link(chain, SIGTERM)
    run_dir = single_run_dir(last.finished.cwd)
    assert last.finished.returncode == 0, last.finished.describe()
    checkpoint = run_dir / "checkpoints" / checkpoint_name(SIGTERM.checkpoint_step)
    assert f"Resuming from {checkpoint} " in last.finished.stderr
    assert last.result is not None and last.result["status"] == "completed" and last.result["steps"] == TOTAL_STEPS
    for step in (22, 24):
        assert_same_checkpoint(run_dir, reference, step)
    assert_same_tensors(load_tensors(run_dir / MODEL_FILE), load_tensors(reference / MODEL_FILE), "final weights")
    # Across the whole chain, the last logged loss of every step is the uninterrupted run's.
    assert step_losses(run_dir) == step_losses(reference)
    evaluations = [row for row in read_jsonl(run_dir / "metrics.jsonl") if row["kind"] == "evaluation"]
    reference_evaluations = [row for row in read_jsonl(reference / "metrics.jsonl") if row["kind"] == "evaluation"]
    assert {row["step"]: row["iou"] for row in evaluations} == {
        row["step"]: row["iou"] for row in reference_evaluations
    }


def test_sigterm_from_outside_checkpoints_and_exits_143(scenarios: Scenarios) -> None:
    finished: Finished = scenarios.result("external_sigterm")
    assert finished.returncode == 143, finished.describe()
    run_dir = single_run_dir(finished.cwd)
    result = read_json(run_dir / "result.json")
    assert result["status"] == "interrupted" and result["error"] == "received SIGTERM"
    latest = latest_checkpoint(run_dir / "checkpoints")
    assert latest is not None and latest.name == checkpoint_name(result["steps"])
    assert result["steps"] % 2 == 0  # an update boundary
    assert load_trainer_state(latest)["clock"]["step"] == result["steps"]
    assert max(step_losses(run_dir)) == result["steps"]  # it stopped right after that step
