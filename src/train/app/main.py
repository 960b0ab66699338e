"""The `python -m train` entry point: check the command line, then hand it to Hydra, which runs the job(s).

Under ``torchrun`` (``WORLD_SIZE`` > 1) every rank runs this: the process group starts before Hydra, rank 0
picks the run directory and every rank is pointed at it, and only rank 0 logs to the terminal and writes
the run's own files (``.hydra/``, ``train.log``, ``resolved_config.yaml``, ``result.json``). The tasks of a
SLURM (or local submitit) sweep job start their process group in :func:`run_job` instead.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Generator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
from hydra._internal.utils import get_args_parser  # Hydra's own parser: accepts exactly what hydra.main does
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from loguru import logger
from omegaconf import DictConfig

from train import distributed
from train.app import resume, sweep_summary
from train.app.errors import InvalidConfig
from train.app.experiment import build_experiment
from train.app.preflight import check_command_line, resolve_run_dir
from train.app.run_files import JobResult, add_log_file, write_resolved_config
from train.app.schema import register_schemas
from train.callbacks.checkpoint import requeue_signal
from train.checkpointing import load_checkpoint
from train.distributed import DistributedContext


def config_dir() -> Path:
    """The `conf/` folder: beside `src/` in a checkout (editable install), or packaged as `train/conf`."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package.parents[1] / "conf", package / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"no conf/train.yaml found beside {package}")


register_schemas()
CONFIG_DIR = config_dir()


@contextmanager
def _process_group(context: DistributedContext) -> Generator[None, None, None]:
    """The job's process group: started here for the tasks of a submitit job, left alone if torchrun's runs."""
    started = context.is_distributed and not distributed.is_active()
    if started:
        context.initialize()
        distributed.log_on_main_only(context)
    try:
        yield
    finally:
        if started:
            distributed.destroy()


def run_job(cfg: DictConfig) -> float | None:
    """One job: validate, build the Trainer, resume if there is a checkpoint, train, record the result.

    Every rank of a distributed job runs it; only rank 0 writes the run's files.
    """
    context = DistributedContext.from_environment()
    with _process_group(context):
        return _run_job(cfg, context.is_main)


def _run_job(cfg: DictConfig, main: bool) -> float | None:
    hydra_config = HydraConfig.get()
    run_dir = Path(hydra_config.runtime.output_dir)
    # For display: sweep jobs get their overrides escaped for re-parsing (`2\:epoch`); show them as typed.
    overrides = [re.sub(r"\\(.)", r"\1", o) for o in hydra_config.overrides.task if not o.startswith("resume=")]
    in_sweep = hydra_config.mode == RunMode.MULTIRUN
    metric: str | None = cfg.experiment.get("metric")
    previous = distributed.broadcast_object(JobResult.read(run_dir))  # rank 0's view decides for all
    if in_sweep and previous is not None and previous.status == "completed":
        logger.info(f"Job in {run_dir} already completed: not run again")
        return previous.objective_value

    sink = add_log_file(run_dir) if main else None
    started = time.perf_counter()
    logger.info(f"Run directory: {run_dir}")
    try:
        experiment = build_experiment(cfg)
        if main:
            write_resolved_config(run_dir, cfg)
        trainer = experiment.build_trainer(str(run_dir))
        checkpoint = distributed.broadcast_object(resume.checkpoint_to_resume(cfg, run_dir))
        if checkpoint is not None:
            load_checkpoint(trainer, checkpoint)
            logger.info(f"Resuming from {checkpoint} (step {trainer.clock.step}, epoch {trainer.clock.epoch})")
        trainer.train()
        if trainer.clock.interrupted_by is not None:
            elapsed = time.perf_counter() - started
            reason = trainer.clock.stop_reason
            if main:
                result = JobResult("interrupted", overrides, {}, metric, None, reason, elapsed, trainer.clock.step)
                result.write(run_dir)
            if trainer.clock.interrupted_by == requeue_signal():
                # submitit's warning before the time limit (or a pre-emption): the checkpoint is saved; its own
                # handler, restored by now, requeues the job (from rank 0) and exits.
                os.kill(os.getpid(), trainer.clock.interrupted_by)
            logger.warning(f"Interrupted ({reason}); continue with: python -m train resume={run_dir}")
            # Exit as a process killed by that signal would (130 for SIGINT, 143 for SIGTERM), sweep included.
            raise SystemExit(128 + trainer.clock.interrupted_by)
        metrics = dict(trainer.evaluation_metrics)
        value = metrics.get(metric) if metric else None
        if metric and value is None:
            raise InvalidConfig(
                f"experiment.metric={metric!r} was not returned by the evaluation: got {sorted(metrics)}"
            )
        elapsed = time.perf_counter() - started
        if main:
            result = JobResult("completed", overrides, metrics, metric, value, None, elapsed, trainer.clock.step)
            result.write(run_dir)
        logger.info(f"Done. Outputs are in {run_dir}")
        return value
    except Exception as error:
        message = f"{type(error).__name__}: {error}".strip().splitlines()[0]
        if main:
            JobResult("failed", overrides, {}, metric, None, message, time.perf_counter() - started).write(run_dir)
        if not in_sweep:
            raise
        logger.opt(exception=error).error(f"Job failed ({message}); the sweep goes on with the other jobs")
        return None  # no value: Optuna marks the trial failed (a NaN makes optuna 2.x abort the whole study)
    finally:
        if sink is not None:
            logger.remove(sink)


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def hydra_entry(cfg: DictConfig) -> Any:
    return run_job(cfg)


def _informational(args: Any) -> bool:
    return bool(args.help or args.hydra_help or args.cfg or args.info or args.shell_completion)


def _expand_resume(args: Any) -> None:
    """Rewrite ``resume=<dir>`` into the overrides that continue that run or sweep (see train.app.resume)."""
    overrides: list[str] = list(args.overrides or [])
    targets = [o.split("=", 1)[1] for o in overrides if o.startswith("resume=")]
    if not targets or not targets[-1] or targets[-1] == "null":
        return
    others = [o for o in overrides if not o.startswith("resume=")]
    if args.multirun:
        args.overrides = resume.sweep_command_line(targets[-1], others)
    else:
        args.overrides = resume.run_command_line(targets[-1], others)
    given = set(overrides)
    sys.argv = [sys.argv[0], *(a for a in sys.argv[1:] if a not in given), *args.overrides]


def _share_run_dir(args: Any, context: DistributedContext) -> None:
    """Point every rank at the run directory rank 0 picks; ranks other than 0 write no ``.hydra/`` files.

    Each rank would otherwise resolve ``${now:...}`` itself (a second apart at times: several directories).
    """
    run_dir: str | InvalidConfig | None = None
    if context.is_main:
        try:
            run_dir = resolve_run_dir(args, CONFIG_DIR)
        except InvalidConfig as error:
            run_dir = error
    run_dir = distributed.broadcast_object(run_dir)
    if isinstance(run_dir, InvalidConfig):
        raise run_dir
    prefixes = ("hydra.run.dir=",) if context.is_main else ("hydra.run.dir=", "hydra.output_subdir=")
    added = [f"hydra.run.dir={_override_value(str(run_dir))}"]
    if not context.is_main:
        added.append("hydra.output_subdir=null")
    args.overrides = [*(o for o in args.overrides or [] if not o.startswith(prefixes)), *added]
    sys.argv = [sys.argv[0], *(a for a in sys.argv[1:] if not a.startswith(prefixes)), *added]


def _override_value(text: str) -> str:
    """``text`` as the value of a Hydra override: as is when plain, else single-quoted."""
    if re.fullmatch(r"[\w./~+@-]+", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def main() -> None:
    args = get_args_parser().parse_args(sys.argv[1:])
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    context = DistributedContext.from_environment()
    ranks = context.is_distributed and not _informational(args)
    try:
        if ranks and args.multirun:
            raise InvalidConfig(
                "a sweep (-m) cannot run under torchrun: start it with python -m train -m and give each job "
                "several GPUs through its launcher (hydra/launcher=slurm hydra.launcher.gpus_per_node=N)"
            )
        if not _informational(args) and not args.config_path:
            _expand_resume(args)
            check_command_line(args, CONFIG_DIR, world_size=context.world_size)
        if ranks:
            context.initialize()
            distributed.log_on_main_only(context)
            _share_run_dir(args, context)
    except InvalidConfig as error:
        if full_error:
            raise
        if context.is_main:
            print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    sweep_summary.reset()
    try:
        hydra_entry()
    finally:
        if ranks:
            distributed.destroy()
    if args.multirun and sweep_summary.failed_jobs():
        sys.exit(1)
