"""`torchrun --nproc_per_node=2 -m train` on the CPU (gloo): one run, two ranks; and resuming such a run.

The runs of this module start together (their start-up, mostly imports, overlaps) and are read back by name:

- ``ddp``: 2 epochs of 4 steps on 2 ranks (global batches of 8, 4 per rank), every rank dumping its final
  weights, every write of the checkpoint callback recorded with the rank that made it, and a run directory
  named to the microsecond (``${now:...%f}``: ranks resolving it each for itself could not agree on it);
- ``single``: the same run in one process (the same global batches);
- ``interrupted``: as ``ddp``, but rank 1 alone gets SIGTERM at step 2;
- ``refused``: ``python -m train resume=<interrupted>`` in one process (refused: it was a 2-rank run);
- ``resumed``: ``torchrun ... -m train resume=<interrupted>`` on 2 ranks, to the end.

Tolerance of the comparison with one process: 1e-5 on each logged loss (about 0.7) and each final weight.
Both runs see the same 8 items per update, but the 2-rank run averages two 4-item means and all-reduces the
gradients, a different float32 summation order than one 8-item mean: each such reordering moves a result by a
few units in the last place (about 1e-7), and over 8 AdamW updates the runs stay that close (measured: at most
a few 1e-7). A real error (an unsynchronised gradient, a wrong shard) moves losses by 1e-3 or more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from distributed_support import (
    TINY,
    Finished,
    assert_same_weights,
    checkpoint_steps,
    final_weights,
    max_difference,
    read_json,
    run_dirs,
    run_single,
    run_torchrun,
    single_run_dir,
    step_rows,
)
from safetensors.torch import load_file

TOLERANCE = 1e-5
STEPS = 8  # 2 epochs of 32 items in global batches of 8

TRAINING = [
    *TINY,
    "training.duration=2:epoch",
    "callbacks=none",
    "+callbacks.metrics._target_=train.callbacks.MetricsFile",
]
CHECKPOINTS = [
    "+callbacks.checkpoint._target_=train.callbacks.Checkpointing",
    "+callbacks.checkpoint.keep_last=10",
]


def observers(directory: Path) -> list[str]:
    """Overrides adding the weight dump of every rank and the record of who wrote (before the checkpoint callback)."""
    return [
        "+callbacks.record._target_=distributed_support.RecordWrites",
        f"+callbacks.record.path={directory / 'writes.txt'}",
        "+callbacks.dump._target_=distributed_support.DumpWeights",
        f"+callbacks.dump.directory={directory / 'ranks'}",
    ]


class Runs:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._pool = ThreadPoolExecutor(max_workers=3)
        self._futures: dict[str, Future[Finished]] = {}

    def start(self, name: str, function: Callable[..., Finished], *args: object) -> None:
        self._futures[name] = self._pool.submit(function, *args)

    def result(self, name: str) -> Finished:
        return self._futures[name].result()

    def cwd(self, name: str) -> Path:
        return self.root / name

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _interrupted_then_resumed(runs: Runs) -> Finished:
    """The interrupted run, then (in order) the refused one-process resume and the 2-rank resume."""
    cwd = runs.cwd("interrupted")
    signal = [
        "+callbacks.signal._target_=distributed_support.SignalRankAt",
        "+callbacks.signal.step=2",
        "+callbacks.signal.rank=1",
    ]
    interrupted = run_torchrun([*TRAINING, *observers(cwd), *CHECKPOINTS, *signal], cwd)
    if run_dirs(cwd):
        run_dir = single_run_dir(cwd)
        runs.start("refused", run_single, [f"resume={run_dir}"], runs.cwd("refused"))
        runs.result("refused")  # before the resume adds checkpoints
        runs.start("resumed", run_torchrun, [f"resume={run_dir}", *observers(runs.cwd("resumed"))], runs.cwd("resumed"))
    return interrupted


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    pool = Runs(tmp_path_factory.mktemp("ddp_runs"))
    ddp_cwd = pool.cwd("ddp")
    microseconds = "hydra.run.dir=outputs/autoencoder/${now:%Y-%m-%d_%H-%M-%S-%f}"
    pool.start("ddp", run_torchrun, [*TRAINING, *observers(ddp_cwd), *CHECKPOINTS, microseconds], ddp_cwd)
    pool.start("single", run_single, [*TRAINING, *CHECKPOINTS], pool.cwd("single"))
    pool.start("interrupted", _interrupted_then_resumed, pool)
    yield pool
    pool.close()


def completed(run: Finished, cwd: Path | None = None) -> Path:
    """The run's directory (in ``cwd``, by default where it ran), checked to hold a completed run."""
    assert run.returncode == 0, run.describe()
    run_dir = single_run_dir(cwd or run.cwd)
    assert read_json(run_dir / "result.json")["status"] == "completed", run.describe()
    return run_dir


def rank_weights(directory: Path, rank: int) -> dict[str, torch.Tensor]:
    return load_file(directory / "ranks" / f"rank{rank}_autoencoder.safetensors")


# -- one run on two ranks ------------------------------------------------------------------------------------
def test_two_ranks_make_one_run_directory_with_one_metrics_file(runs: Runs) -> None:
    run = runs.result("ddp")
    run_dir = completed(run)  # exactly one directory under outputs/autoencoder
    assert [path.name for path in run_dir.glob("*.jsonl")] == ["metrics.jsonl"]
    assert [row["step"] for row in step_rows(run_dir)] == list(range(1, STEPS + 1)), "each step logged once"
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert sorted(path.name for path in (run_dir / "evaluations").iterdir()) == ["step_0000004.png", "step_0000008.png"]
    # Rank 0 alone logs to the terminal: each line once, and nothing from rank 1 but errors (there were none).
    assert run.output.count("Training for 8 steps") == 1, run.describe()
    assert run.output.count("Done. Outputs are in") == 1, run.describe()
    assert "[rank 1]" not in run.output, run.describe()
    assert (run_dir / "train.log").read_text(encoding="utf-8").count("Training for 8 steps") == 1


def test_only_rank_0_writes_checkpoints(runs: Runs) -> None:
    run_dir = completed(runs.result("ddp"))
    writes = (runs.cwd("ddp") / "writes.txt").read_text(encoding="utf-8").splitlines()
    assert writes == ["0 checkpoint 4", "0 checkpoint 8", "0 weights autoencoder.safetensors"], writes
    assert checkpoint_steps(run_dir) == [4, 8]
    meta = read_json(run_dir / "checkpoints" / "step_00000008" / "meta.json")
    assert meta["world_size"] == 2


def test_both_ranks_end_with_identical_weights(runs: Runs) -> None:
    run_dir = completed(runs.result("ddp"))
    rank0, rank1 = rank_weights(runs.cwd("ddp"), 0), rank_weights(runs.cwd("ddp"), 1)
    assert_same_weights(rank0, rank1, "rank 0 and rank 1")
    assert_same_weights(rank0, final_weights(run_dir), "rank 0 and models/autoencoder.safetensors")


def test_loss_curve_matches_one_process_with_the_same_global_batch(runs: Runs) -> None:
    ddp_dir, single_dir = completed(runs.result("ddp")), completed(runs.result("single"))
    ddp_losses = [row["loss"] for row in step_rows(ddp_dir)]
    single_losses = [row["loss"] for row in step_rows(single_dir)]
    assert len(ddp_losses) == len(single_losses) == STEPS
    differences = [abs(a - b) for a, b in zip(ddp_losses, single_losses, strict=True)]
    assert max(differences) <= TOLERANCE, f"losses differ by up to {max(differences):.3g}: {differences}"
    assert max_difference(final_weights(ddp_dir), final_weights(single_dir)) <= TOLERANCE
    ddp_result, single_result = read_json(ddp_dir / "result.json"), read_json(single_dir / "result.json")
    for name, value in single_result["metrics"].items():  # evaluation metrics: averaged over the ranks
        assert abs(ddp_result["metrics"][name] - value) <= TOLERANCE, (name, ddp_result["metrics"], value)


# -- interrupting and resuming a 2-rank run -----------------------------------------------------------------------
def test_a_signal_on_one_rank_stops_both_at_the_same_step(runs: Runs) -> None:
    run = runs.result("interrupted")
    assert run.returncode != 0, run.describe()
    run_dir = single_run_dir(run.cwd)
    result = read_json(run_dir / "result.json")
    assert result["status"] == "interrupted" and result["steps"] == 3, result
    assert "SIGTERM" in result["error"]
    # Rank 1 noted the signal at step 2's end, asked to stop at step 3's; both ranks stopped there, rank 0 saved.
    assert checkpoint_steps(run_dir) == [3]
    writes = (run.cwd / "writes.txt").read_text(encoding="utf-8").splitlines()
    assert writes == ["0 checkpoint 3"], writes
    rank0, rank1 = rank_weights(run.cwd, 0), rank_weights(run.cwd, 1)
    assert_same_weights(rank0, rank1, "rank 0 and rank 1 when stopped")


def test_a_2_rank_checkpoint_is_refused_in_one_process(runs: Runs) -> None:
    runs.result("interrupted")
    refused = runs.result("refused")
    assert refused.returncode == 2, refused.describe()
    message = refused.stderr.strip().splitlines()[-1]
    assert message.startswith("error: cannot resume "), message
    assert "written by a run on 2 ranks, this one has 1 process" in message
    assert "torchrun --nproc_per_node=2" in message


def test_resuming_on_2_ranks_ends_as_the_uninterrupted_run(runs: Runs) -> None:
    runs.result("interrupted")
    resumed = runs.result("resumed")
    run_dir = completed(resumed, runs.cwd("interrupted"))  # it continued in the interrupted run's directory
    assert not (runs.cwd("resumed") / "outputs").exists()
    assert "Resuming from" in resumed.output and "step_00000003" in resumed.output, resumed.describe()
    reference_dir = completed(runs.result("ddp"))
    # Bit-identical: same batches on the same ranks, and the RNG, optimizer and clock states restored.
    assert_same_weights(final_weights(run_dir), final_weights(reference_dir), "resumed and uninterrupted runs")
    rank0, rank1 = rank_weights(runs.cwd("resumed"), 0), rank_weights(runs.cwd("resumed"), 1)
    assert_same_weights(rank0, rank1, "rank 0 and rank 1 after the resume")
    resumed_rows, reference_rows = step_rows(run_dir), step_rows(reference_dir)
    assert [row["step"] for row in resumed_rows] == list(range(1, STEPS + 1))
    assert [row["loss"] for row in resumed_rows] == [row["loss"] for row in reference_rows]
    assert checkpoint_steps(run_dir) == [3, 4, 8]
