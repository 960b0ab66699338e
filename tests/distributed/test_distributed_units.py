"""The pieces of distributed training that need no second process: environments, shards, guards, refusals."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
from distributed_support import LossRecorder, make_trainer
from hydra import compose, initialize_config_dir

from train import distributed
from train.app.errors import InvalidConfig
from train.app.experiment import build_experiment
from train.app.main import CONFIG_DIR
from train.callbacks import Checkpointing, Curves, EarlyStopping, MetricsFile, ProgressBar
from train.callbacks.checkpoint import requeue_signal
from train.checkpointing import CheckpointMismatch, load_checkpoint, read_meta, save_checkpoint, write_json
from train.data import EpochSampler
from train.distributed import DistributedContext, first_host
from train.trainer import rank_batch_size


# -- who am I: torchrun, SLURM tasks, a local submitit job, or alone ----------------------------------------
def test_torchrun_environment() -> None:
    env = {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "MASTER_ADDR": "node1", "MASTER_PORT": "29400"}
    context = DistributedContext.from_environment(env)
    assert context == DistributedContext(3, 1, 4, "node1", 29400, "torchrun")
    assert context.is_distributed and not context.is_main
    assert context.environment() == env


def test_slurm_tasks_environment() -> None:
    env = {
        "SLURM_PROCID": "5",
        "SLURM_LOCALID": "1",
        "SLURM_STEP_NUM_TASKS": "8",
        "SLURM_NTASKS": "8",
        "SLURM_STEP_NODELIST": "gpu[07-08,12]",
        "SLURM_JOB_NODELIST": "gpu[07-08,12]",
        "SLURM_JOB_ID": "123456",
    }
    context = DistributedContext.from_environment(env)
    assert (context.rank, context.local_rank, context.world_size) == (5, 1, 8)
    assert context.master_addr == "gpu07"
    assert context.master_port == 20000 + 123456 % 10000  # the same for every task of the job, and its requeues
    assert context.launcher == "slurm"
    assert DistributedContext.from_environment({**env, "MASTER_PORT": "29999"}).master_port == 29999
    # torchrun inside a SLURM job: torchrun's variables describe the process
    assert DistributedContext.from_environment({**env, "RANK": "0", "WORLD_SIZE": "2"}).launcher == "torchrun"


def test_a_slurm_batch_script_outside_srun_is_one_process() -> None:
    # sbatch --ntasks=4 running `python -m train` directly (no srun): one process, not rank 0 of 4 waiting forever.
    env = {"SLURM_PROCID": "0", "SLURM_NTASKS": "4", "SLURM_LOCALID": "0", "SLURM_JOB_NODELIST": "n1"}
    assert DistributedContext.from_environment(env) == DistributedContext()


def test_local_submitit_tasks_environment() -> None:
    env = {
        "SUBMITIT_EXECUTOR": "local",
        "SUBMITIT_LOCAL_GLOBALID": "1",
        "SUBMITIT_LOCAL_LOCALID": "1",
        "SUBMITIT_LOCAL_NTASKS": "2",
        "SUBMITIT_LOCAL_JOB_ID": "4242",
    }
    context = DistributedContext.from_environment(env)
    assert (context.rank, context.world_size, context.master_port) == (1, 2, 24242)
    assert DistributedContext.from_environment({}) == DistributedContext()
    assert not DistributedContext().is_distributed and DistributedContext().is_main


@pytest.mark.parametrize(
    ("nodelist", "host"),
    [
        ("gpu07", "gpu07"),
        ("gpu[07-08,12]", "gpu07"),
        ("a1,b[2-3]", "a1"),
        ("gpu[3,5-6],cpu[1-2]", "gpu3"),
        ("rack[1-2]-node[07,9]", "rack1-node07"),
        ("", None),
    ],
)
def test_first_host_of_a_slurm_node_list(nodelist: str, host: str | None) -> None:
    assert first_host(nodelist) == host


def test_each_rank_gets_its_own_gpu_only_when_distributed() -> None:
    cpu = torch.device("cpu")
    assert DistributedContext(rank=1, local_rank=1, world_size=2).device(cpu) == cpu
    assert DistributedContext().device(torch.device("cuda")) == torch.device("cuda")


# -- the data: each rank its shard of the same permutation ----------------------------------------------
def batches(indices: list[int], size: int) -> list[list[int]]:
    return [indices[start : start + size] for start in range(0, len(indices), size)]


@pytest.mark.parametrize("length", [16, 15, 13])
def test_the_ranks_batches_together_are_the_single_process_batches(length: int) -> None:
    alone = EpochSampler(length, seed=3, shuffle=True)
    alone.set_epoch(2)
    ranks = [EpochSampler(length, seed=3, shuffle=True, rank=rank, world_size=2) for rank in (0, 1)]
    for sampler in ranks:
        sampler.set_epoch(2)
    single = batches(list(alone), 8)
    per_rank = [batches(list(sampler), 4) for sampler in ranks]
    assert len(per_rank[0]) == len(per_rank[1]) == len(single) == -(-length // 8)
    # The epoch is padded to a multiple of the ranks by repeating its start; rank r takes every other index.
    padded = batches(alone.order() + alone.order()[: -length % 2], 8)
    for k, batch in enumerate(single):
        together = per_rank[0][k] + per_rank[1][k]
        assert sorted(together) == sorted(padded[k])
        assert padded[k][: len(batch)] == batch  # the same items as one process's batch (plus the padding)


def test_a_single_process_sampler_is_unchanged() -> None:
    sampler = EpochSampler(10, seed=0, shuffle=True)
    sampler.set_epoch(1, start=4)
    assert list(sampler) == sampler.order()[4:]
    assert len(sampler) == 6


def test_resuming_a_shard_skips_this_ranks_trained_items() -> None:
    sampler = EpochSampler(16, seed=1, shuffle=True, rank=1, world_size=2)
    sampler.set_epoch(0)
    shard = list(sampler)
    assert shard == sampler.order()[1::2] and len(sampler) == 8
    sampler.set_epoch(0, start=4)  # 1 step of 4 items per rank done
    assert list(sampler) == shard[4:] and len(sampler) == 4


def test_fewer_items_than_ranks() -> None:
    shards = []
    for rank in range(3):
        sampler = EpochSampler(2, seed=0, shuffle=False, rank=rank, world_size=3)
        shards.append(list(sampler))
    assert shards == [[0], [1], [0]]


def test_the_batch_size_is_global_and_must_divide_by_the_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    assert rank_batch_size(32, 4) == 8
    with pytest.raises(ValueError, match=r"training.batch_size=10 cannot be split across 4 ranks"):
        rank_batch_size(10, 4)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["training.batch_size=32"])
    with pytest.raises(InvalidConfig, match=r"^training.batch_size=32 cannot be split across 3 ranks: expected"):
        build_experiment(cfg)


# -- one process: no process group, the helpers return at once ---------------------------------------------
def test_helpers_do_nothing_in_one_process() -> None:
    assert not distributed.is_active()
    assert (distributed.get_rank(), distributed.get_world_size()) == (0, 1)
    tensor = torch.tensor([1.0, 2.0])
    assert distributed.all_reduce_mean(tensor) is tensor
    marker = object()
    assert distributed.broadcast_object(marker) is marker
    assert distributed.all_gather_object(marker) == [marker]
    assert distributed.max_over_ranks([0, 15]) == [0, 15]
    assert distributed.average_metrics({"a": 1.5}) == {"a": 1.5}
    layer = torch.nn.Linear(2, 1)
    layer(torch.ones(1, 2)).sum().backward()
    assert layer.weight.grad is not None
    before = layer.weight.grad.clone()
    distributed.average_gradients(layer.parameters())
    assert torch.equal(layer.weight.grad, before)
    distributed.barrier()
    DistributedContext().initialize()  # a single process starts no process group
    assert not torch.distributed.is_initialized()


def test_a_single_process_trainer_wraps_nothing() -> None:
    trainer = make_trainer("ddp_forward", LossRecorder())
    assert trainer.is_main_process and trainer.distributed.world_size == 1
    trainer.synced_steps = []
    trainer.train()
    assert trainer.ddp("net") is trainer.net  # no DistributedDataParallel wrapper in one process
    assert trainer.synced_steps == [False] * 8  # the plain module has no DDP flag


# -- rank 0 writes -------------------------------------------------------------------------------------------
def test_file_writing_callbacks_get_no_hooks_on_other_ranks(tmp_path: Path) -> None:
    trainer = make_trainer("forward", LossRecorder())
    trainer.callbacks.update(
        metrics=MetricsFile(),
        checkpoint=Checkpointing(),
        progress=ProgressBar(mode="lines"),
        curves=Curves(),
        early_stopping=EarlyStopping(monitor="mse"),
    )

    def owners(hook: str) -> list[str]:
        return [type(getattr(method, "__self__")).__name__ for method in trainer._overriding(hook)]  # noqa: B009

    assert owners("on_batch_end") == ["LossRecorder", "MetricsFile", "Checkpointing", "ProgressBar"]
    assert owners("on_train_end") == ["TrainingClock", "MetricsFile", "Checkpointing", "ProgressBar", "Curves"]
    trainer.distributed = DistributedContext(rank=1, local_rank=1, world_size=2)  # as rank 1 sees itself
    assert owners("on_batch_end") == ["LossRecorder", "Checkpointing"]
    assert owners("on_train_end") == ["Checkpointing"]
    assert owners("on_evaluate_end") == ["Checkpointing", "EarlyStopping"]


def test_checkpointing_on_another_rank_writes_nothing(tmp_path: Path) -> None:
    trainer = make_trainer("forward", LossRecorder())
    trainer.run_dir = tmp_path
    trainer.distributed = DistributedContext(rank=1, local_rank=1, world_size=2)
    callback = Checkpointing(save_on_signal=False)
    callback.on_train_begin(trainer)
    assert callback.save(trainer) is None
    callback.on_train_end(trainer)
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_resumes_only_on_as_many_ranks(tmp_path: Path) -> None:
    trainer = make_trainer("forward", LossRecorder())
    trainer.train()
    checkpoint = save_checkpoint(trainer, tmp_path)
    assert checkpoint is not None
    meta = read_meta(checkpoint)
    assert meta["world_size"] == 1
    load_checkpoint(make_trainer("forward", LossRecorder()), checkpoint)  # the same number: fine
    write_json(checkpoint / "meta.json", {**meta, "world_size": 2})
    expected = r"written by a run on 2 ranks, this one has 1 process: resume it on 2 ranks \(torchrun"
    with pytest.raises(CheckpointMismatch, match=expected):
        load_checkpoint(make_trainer("forward", LossRecorder()), checkpoint)


def test_submitits_requeue_signal_is_caught_only_in_submitit_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)
    assert requeue_signal() is None
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    assert requeue_signal() == signal.SIGUSR2
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "USR1")
    assert requeue_signal() == signal.SIGUSR1
