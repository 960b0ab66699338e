"""The `python -m train` entry point: check the command line, then hand it to Hydra, which runs the job(s)."""

from __future__ import annotations

import math
import os
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

from train.app import sweep_summary
from train.app.errors import InvalidConfig
from train.app.experiment import build_experiment
from train.app.preflight import check_command_line
from train.app.run_files import JobResult, add_log_file, write_resolved_config
from train.app.schema import register_schemas


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
    """One job: validate, build the Trainer, train, record the result. Returns the objective metric."""
    hydra_config = HydraConfig.get()
    run_dir = Path(hydra_config.runtime.output_dir)
    overrides = list(hydra_config.overrides.task)
    in_sweep = hydra_config.mode == RunMode.MULTIRUN
    sink = add_log_file(run_dir)
    started = time.perf_counter()
    logger.info(f"Run directory: {run_dir}")
    metric: str | None = cfg.experiment.get("metric")
    try:
        experiment = build_experiment(cfg)
        write_resolved_config(run_dir, cfg)
        trainer = experiment.build_trainer(str(run_dir))
        trainer.train()
        metrics = dict(trainer.evaluation_metrics)
        value = metrics.get(metric) if metric else None
        if metric and value is None:
            raise InvalidConfig(
                f"experiment.metric={metric!r} was not returned by the evaluation: got {sorted(metrics)}"
            )
        JobResult(
            "completed", overrides, metrics, metric, value, None, time.perf_counter() - started, trainer.clock.step
        ).write(run_dir)
        logger.info(f"Done. Outputs are in {run_dir}")
        return value
    except Exception as error:
        message = f"{type(error).__name__}: {error}".strip().splitlines()[0]
        JobResult("failed", overrides, {}, metric, None, message, time.perf_counter() - started).write(run_dir)
        if not in_sweep:
            raise
        logger.opt(exception=error).error(f"Job failed ({message}); the sweep goes on with the other jobs")
        return math.nan if metric else None  # a number, so sweepers such as Optuna mark the trial failed
    finally:
        logger.remove(sink)


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def hydra_entry(cfg: DictConfig) -> Any:
    return run_job(cfg)


def _informational(args: Any) -> bool:
    return bool(args.help or args.hydra_help or args.cfg or args.info or args.shell_completion)


def main() -> None:
    args = get_args_parser().parse_args(sys.argv[1:])
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    if not _informational(args) and not args.config_path:
        try:
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
