"""The `python -m train` entry point: check the command line, then hand it to Hydra, which runs the job(s)."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from hydra._internal.utils import get_args_parser  # Hydra's own parser: accepts exactly what hydra.main does
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from loguru import logger
from omegaconf import DictConfig

from train.app import resume, sweep_summary
from train.app.errors import InvalidConfig
from train.app.experiment import build_experiment
from train.app.preflight import check_command_line
from train.app.run_files import JobResult, add_log_file, write_resolved_config
from train.app.schema import register_schemas
from train.checkpointing import load_checkpoint


def config_dir() -> Path:
    """The `conf/` folder: beside `src/` in a checkout (editable install), or packaged as `train/conf`."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package.parents[1] / "conf", package / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"no conf/train.yaml found beside {package}")


register_schemas()
CONFIG_DIR = config_dir()


def run_job(cfg: DictConfig) -> float | None:
    """One job: validate, build the Trainer, resume if there is a checkpoint, train, record the result."""
    hydra_config = HydraConfig.get()
    run_dir = Path(hydra_config.runtime.output_dir)
    # For display: sweep jobs get their overrides escaped for re-parsing (`2\:epoch`); show them as typed.
    overrides = [re.sub(r"\\(.)", r"\1", o) for o in hydra_config.overrides.task if not o.startswith("resume=")]
    in_sweep = hydra_config.mode == RunMode.MULTIRUN
    metric: str | None = cfg.experiment.get("metric")
    previous = JobResult.read(run_dir)
    if in_sweep and previous is not None and previous.status == "completed":
        logger.info(f"Job in {run_dir} already completed: not run again")
        return previous.objective_value

    sink = add_log_file(run_dir)
    started = time.perf_counter()
    logger.info(f"Run directory: {run_dir}")
    try:
        experiment = build_experiment(cfg)
        write_resolved_config(run_dir, cfg)
        trainer = experiment.build_trainer(str(run_dir))
        checkpoint = resume.checkpoint_to_resume(cfg, run_dir)
        if checkpoint is not None:
            load_checkpoint(trainer, checkpoint)
            logger.info(f"Resuming from {checkpoint} (step {trainer.clock.step}, epoch {trainer.clock.epoch})")
        trainer.train()
        if trainer.clock.interrupted_by is not None:
            elapsed = time.perf_counter() - started
            reason = trainer.clock.stop_reason
            JobResult("interrupted", overrides, {}, metric, None, reason, elapsed, trainer.clock.step).write(run_dir)
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
        JobResult("completed", overrides, metrics, metric, value, None, elapsed, trainer.clock.step).write(run_dir)
        logger.info(f"Done. Outputs are in {run_dir}")
        return value
    except Exception as error:
        message = f"{type(error).__name__}: {error}".strip().splitlines()[0]
        JobResult("failed", overrides, {}, metric, None, message, time.perf_counter() - started).write(run_dir)
        if not in_sweep:
            raise
        logger.opt(exception=error).error(f"Job failed ({message}); the sweep goes on with the other jobs")
        return None  # no value: Optuna marks the trial failed (a NaN makes optuna 2.x abort the whole study)
    finally:
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


def main() -> None:
    args = get_args_parser().parse_args(sys.argv[1:])
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    try:
        if not _informational(args) and not args.config_path:
            _expand_resume(args)
            check_command_line(args, CONFIG_DIR)
    except InvalidConfig as error:
        if full_error:
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    sweep_summary.reset()
    hydra_entry()
    if args.multirun and sweep_summary.failed_jobs():
        sys.exit(1)
