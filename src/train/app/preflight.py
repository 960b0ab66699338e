"""Validate every job of a command line before Hydra starts the first one.

Hydra composes a sweep's jobs one at a time, as they launch, so a bad value in the last job of a sweep
would only fail after the others trained. Here each job's config is composed (sweeps expanded) and
checked by :func:`train.app.experiment.build_experiment` up front; the first problem becomes one line.
"""

from __future__ import annotations

import itertools
from argparse import Namespace
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from train.app.errors import InvalidConfig, from_hydra_error
from train.app.experiment import build_experiment
from train.app.resume import check_same_identity, check_same_world_size


def expand_sweeps(overrides: list[str]) -> list[list[str]]:
    """The override list of each job of a basic sweep (``a=1,2 b=x,y`` gives four jobs).

    Continuous ranges such as Optuna's ``interval(...)`` cannot be enumerated; they are left out and the
    rest of the job's config is still checked.
    """
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as error:
        raise from_hydra_error(error) from None
    alternatives: list[list[str]] = []
    for override in parsed:
        if not override.is_sweep_override():
            alternatives.append([override.input_line or ""])
            continue
        try:
            values = list(override.sweep_string_iterator())
        except Exception:  # interval sweeps and globs have no finite list here
            continue
        alternatives.append([f"{override.get_key_element()}={value}" for value in values])
    return [list(job) for job in itertools.product(*alternatives)]


def _search_path(args: Namespace) -> list[str]:
    if args.config_dir:
        return [f"hydra.searchpath=[file://{Path(args.config_dir).resolve()}]"]
    return []


def check_command_line(args: Namespace, config_dir: Path, world_size: int = 1) -> int:
    """Compose and validate every job the command line would run; returns how many were checked.

    ``world_size`` is the number of ranks this run has (torchrun's): a run it continues must have had as many.
    """
    overrides: list[str] = list(args.overrides or [])
    jobs = expand_sweeps(overrides) if args.multirun else [overrides]
    search_path = _search_path(args)
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3", job_name="train"):
        for job in jobs:
            try:
                cfg = compose(config_name=args.config_name or "train", overrides=[*search_path, *job])
            except InvalidConfig:
                raise
            except Exception as error:
                raise from_hydra_error(error) from None
            build_experiment(cfg)
            run_dir = _continued_run_dir(cfg, job) if not args.multirun else None
            if run_dir is not None:
                check_same_identity(cfg, run_dir)
                check_same_world_size(cfg, run_dir, world_size)
    return len(jobs)


def resolve_run_dir(args: Namespace, config_dir: Path) -> str:
    """The run directory Hydra would make for this (single-run) command line, e.g. with ``${now:...}`` resolved.

    Under torchrun, rank 0 resolves it once and every rank is pointed at that directory.
    """
    overrides: list[str] = list(args.overrides or [])
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3", job_name="train"):
        try:
            cfg = compose(
                config_name=args.config_name or "train",
                overrides=[*_search_path(args), *overrides],
                return_hydra_config=True,
            )
            HydraConfig.instance().set_config(cfg)  # for `${hydra:...}` in the pattern
            return str(OmegaConf.select(cfg, "hydra.run.dir"))
        except InvalidConfig:
            raise
        except Exception as error:
            raise from_hydra_error(error) from None


def _continued_run_dir(cfg: DictConfig, overrides: list[str]) -> Path | None:
    """The existing run directory this run continues: ``resume=``'s, or ``hydra.run.dir=`` if it has one."""
    if cfg.get("resume"):
        return Path(str(cfg.resume)).parent.parent
    for override in overrides:
        if override.startswith("hydra.run.dir="):
            path = Path(override.split("=", 1)[1])
            return path if path.is_dir() else None
    return None
