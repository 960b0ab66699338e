"""Distributed data-parallel training: which rank this process is, and the few collectives the loop needs.

A process learns its place from its environment (:meth:`DistributedContext.from_environment`):

- ``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
- SLURM tasks (``srun``, and submitit's sbatch scripts, which start one task per GPU through ``srun``) have
  ``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS`` (``SLURM_NTASKS`` inside a step) and ``SLURM_LOCALID``; the
  master is the first host of the step's node list and the port is derived from the job id unless
  ``MASTER_PORT`` is set;
- the tasks of a local submitit job (``hydra/launcher=submitit_local`` with ``tasks_per_node>1``) have
  ``SUBMITIT_LOCAL_GLOBALID``, ``SUBMITIT_LOCAL_NTASKS`` and ``SUBMITIT_LOCAL_LOCALID``.

:meth:`DistributedContext.initialize` exports the torchrun variables (so user code can read them whatever
the launcher) and starts the process group: gloo on the CPU, NCCL for CUDA tensors (with gloo beside it for
CPU tensors), each rank on GPU ``LOCAL_RANK``.

One process (world size 1) has no process group: every helper here returns at once, and the Trainer does
not even call them, so single-process training is unchanged in behaviour and cost.
"""

from __future__ import annotations

import atexit
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, cast

import torch
import torch.distributed as dist
from loguru import logger
from torch import nn

T = TypeVar("T")

BACKEND_VARIABLE = "TRAIN_DISTRIBUTED_BACKEND"
"""Overrides the backend (e.g. ``gloo`` on a machine with GPUs)."""
TIMEOUT_VARIABLE = "TRAIN_DISTRIBUTED_TIMEOUT_S"
"""How long a collective waits for the other ranks before failing (default: 30 minutes, torch's)."""
DEFAULT_PORT = 29500
BUCKET_BYTES = 25 * 2**20  # the size of DistributedDataParallel's gradient buckets


@dataclass(frozen=True)
class DistributedContext:
    """This process's place among the ranks of one training run (``world_size`` 1: a single process)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = DEFAULT_PORT
    launcher: str = "single"
    """What started the ranks: ``single``, ``torchrun``, ``slurm`` or ``submitit_local``."""

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> DistributedContext:
        """Read torchrun's variables, else SLURM's (inside an srun step), else a local submitit job's."""
        env = os.environ if environ is None else environ
        if "RANK" in env and "WORLD_SIZE" in env:
            return cls(
                rank=int(env["RANK"]),
                local_rank=int(env.get("LOCAL_RANK", env["RANK"])),
                world_size=int(env["WORLD_SIZE"]),
                master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
                master_port=int(env.get("MASTER_PORT", DEFAULT_PORT)),
                launcher="torchrun",
            )
        slurm_tasks = env.get("SLURM_STEP_NUM_TASKS") or (env.get("SLURM_NTASKS") if "SLURM_STEP_ID" in env else None)
        if slurm_tasks and "SLURM_PROCID" in env:
            nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST", "")
            return cls(
                rank=int(env["SLURM_PROCID"]),
                local_rank=int(env.get("SLURM_LOCALID", "0")),
                world_size=int(slurm_tasks),
                master_addr=env.get("MASTER_ADDR") or first_host(nodes) or "127.0.0.1",
                master_port=_port(env, env.get("SLURM_JOB_ID", "0")),
                launcher="slurm",
            )
        if env.get("SUBMITIT_EXECUTOR") == "local" and "SUBMITIT_LOCAL_GLOBALID" in env:
            return cls(
                rank=int(env["SUBMITIT_LOCAL_GLOBALID"]),
                local_rank=int(env.get("SUBMITIT_LOCAL_LOCALID", env["SUBMITIT_LOCAL_GLOBALID"])),
                world_size=int(env.get("SUBMITIT_LOCAL_NTASKS", "1")),
                master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
                master_port=_port(env, env.get("SUBMITIT_LOCAL_JOB_ID", "0")),
                launcher="submitit_local",
            )
        return cls()

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, writes metrics, plots and checkpoints."""
        return self.rank == 0

    def environment(self) -> dict[str, str]:
        """The torchrun variables describing this rank."""
        return {
            "RANK": str(self.rank),
            "LOCAL_RANK": str(self.local_rank),
            "WORLD_SIZE": str(self.world_size),
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
        }

    def initialize(self, backend: str | None = None) -> None:
        """Join the process group (idempotent; nothing at all for a single process).

        The group is left when the interpreter exits, if :func:`destroy` was not called before: a process
        exiting with its group still up may abort in torch's teardown.
        """
        if not self.is_distributed:
            return
        if dist.is_initialized():
            if (dist.get_rank(), dist.get_world_size()) != (self.rank, self.world_size):
                raise RuntimeError(
                    f"a process group of rank {dist.get_rank()} of {dist.get_world_size()} exists already, "
                    f"but the environment says rank {self.rank} of {self.world_size}"
                )
            return
        os.environ.update(self.environment())
        backend = backend or os.environ.get(BACKEND_VARIABLE) or default_backend()
        if "nccl" in backend:
            torch.cuda.set_device(self.cuda_index())
        timeout = os.environ.get(TIMEOUT_VARIABLE)
        dist.init_process_group(
            backend=backend,
            rank=self.rank,
            world_size=self.world_size,
            timeout=timedelta(seconds=float(timeout)) if timeout else None,
        )
        atexit.register(destroy)

    def cuda_index(self) -> int:
        """This rank's GPU: ``LOCAL_RANK``, or GPU 0 when the launcher shows each task only its own GPU."""
        count = torch.cuda.device_count()
        if count == 0:
            raise RuntimeError("distributed training on CUDA, but no CUDA device is visible")
        return self.local_rank if self.local_rank < count else self.local_rank % count

    def device(self, device: torch.device) -> torch.device:
        """``cuda`` (no index) becomes this rank's own GPU when distributed; other devices are kept."""
        if self.is_distributed and device.type == "cuda" and device.index is None:  # pyright: ignore[reportUnnecessaryComparison]
            return torch.device("cuda", self.cuda_index())
        return device


def default_backend() -> str:
    """gloo without GPUs; with GPUs, NCCL for CUDA tensors and gloo for CPU ones (a CPU model still works)."""
    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


def first_host(nodelist: str) -> str | None:
    """The first host of a SLURM node list: ``gpu[03-05,9],cpu1`` gives ``gpu03``."""
    text = nodelist.strip()
    if not text:
        return None
    host, depth = [], 0
    for character in text:  # the first entry: up to the first comma outside brackets
        if character == "," and depth == 0:
            break
        depth += {"[": 1, "]": -1}.get(character, 0)
        host.append(character)
    # Each bracketed range contributes its first value: "rack[1-2]-n[07,9]" gives "rack1-n07".
    return re.sub(r"\[([^\]]*)\]", lambda match: re.split(r"[,-]", match.group(1))[0], "".join(host))


def _port(env: Mapping[str, str], job_id: str) -> int:
    """``MASTER_PORT`` if set, else a port derived from the job id, shared by the job's tasks.

    It lies in 20000-29999, below Linux's ephemeral ports (32768 and up), which outgoing connections take.
    """
    if env.get("MASTER_PORT"):
        return int(env["MASTER_PORT"])
    digits = re.sub(r"\D", "", job_id) or "0"
    return 20000 + int(digits) % 10000


def destroy() -> None:
    """Leave the process group, if this process is in one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# -- collectives: each returns at once in a single process ---------------------------------------------------
def is_active() -> bool:
    """Whether a process group of more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_active() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_active() else 1


def _collective_device() -> torch.device:
    """Where small tensors for collectives live: the CPU with gloo, this rank's GPU with NCCL alone."""
    backend = str(dist.get_backend())
    if "gloo" in backend or "nccl" not in backend:
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over the ranks, as a new detached tensor (``tensor`` itself when alone)."""
    if not is_active():
        return tensor
    result = tensor.detach().clone()
    dist.all_reduce(result)
    return result.div_(dist.get_world_size())


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` (anything picklable), on every rank."""
    if not is_active():
        return obj
    box: list[Any] = [obj]
    dist.broadcast_object_list(box, src=src)
    return cast(T, box[0])


def all_gather_object(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order."""
    if not is_active():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return cast(list[T], gathered)


def barrier() -> None:
    if is_active():
        dist.barrier()


def max_over_ranks(values: list[int]) -> list[int]:
    """The element-wise maximum of small integer lists over the ranks (e.g. flags: any rank set it)."""
    if not is_active():
        return values
    tensor = torch.tensor(values, dtype=torch.int64, device=_collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return [int(value) for value in tensor.tolist()]


def average_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """Each metric averaged over the ranks that returned it (the same number on every rank)."""
    if not is_active():
        return dict(metrics)
    gathered = all_gather_object(dict(metrics))
    names: dict[str, None] = {}
    for rank_metrics in gathered:
        names.update((name, None) for name in rank_metrics)
    averaged: dict[str, float] = {}
    for name in names:
        values = [rank_metrics[name] for rank_metrics in gathered if name in rank_metrics]
        averaged[name] = math.fsum(values) / len(values)
    return averaged


def average_gradients(parameters: Iterable[nn.Parameter], bucket_bytes: int = BUCKET_BYTES) -> None:
    """Replace each gradient by its mean over the ranks, in buckets, as DistributedDataParallel would.

    A parameter without a gradient on this rank counts as zero when another rank has one, and keeps no
    gradient when no rank has one (so the optimizer skips it everywhere, as it would in one process).
    """
    if not is_active():
        return
    params = [p for p in parameters if p.requires_grad]
    if not params:
        return
    world_size = dist.get_world_size()
    device = _collective_device()
    present = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
    dist.all_reduce(present)
    with torch.no_grad():
        needed = [p for p, count in zip(params, present.tolist(), strict=True) if count > 0]
        for bucket in _buckets(needed, bucket_bytes):
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in bucket]
            if any(grad.is_sparse for grad in grads):
                raise RuntimeError("sparse gradients are not supported in distributed training")
            flat = torch.cat([grad.reshape(-1) for grad in grads]).div_(world_size)
            dist.all_reduce(flat)
            offset = 0
            for p, grad in zip(bucket, grads, strict=True):
                chunk = flat[offset : offset + grad.numel()].view_as(grad)
                offset += grad.numel()
                if p.grad is None:
                    p.grad = chunk.clone()
                else:
                    p.grad.copy_(chunk)


def _buckets(params: list[nn.Parameter], bucket_bytes: int) -> list[list[nn.Parameter]]:
    """Consecutive parameters of one device and dtype, each bucket holding about ``bucket_bytes``."""
    buckets: list[list[nn.Parameter]] = []
    size = 0
    for p in params:
        key = (p.device, p.dtype)
        nbytes = p.numel() * p.element_size()
        if not buckets or (buckets[-1][0].device, buckets[-1][0].dtype) != key or size + nbytes > bucket_bytes:
            buckets.append([])
            size = 0
        buckets[-1].append(p)
        size += nbytes
    return buckets


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (e.g. batch-norm statistics) into every rank's ``module``."""
    if not is_active():
        return
    with torch.no_grad():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=src)


def log_on_main_only(context: DistributedContext) -> None:
    """On ranks other than 0, replace loguru's sinks by one that shows errors only, tagged with the rank.

    Rank 0 logs as usual; the others would repeat the same lines ``world_size - 1`` times.
    """
    if context.is_main:
        return
    logger.remove()
    logger.add(sys.stderr, level="ERROR", format=f"[rank {context.rank}] {{level}}: {{message}}")
