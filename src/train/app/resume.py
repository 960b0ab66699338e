"""Continuing runs and sweeps: `resume=<run dir | checkpoint | sweep dir>` and automatic pick-up.

A resumed run keeps its directory: the command line is rebuilt from the run's own saved overrides (new
ones are appended, e.g. a longer ``training.duration``), Hydra's run directory is pointed back at it, and
the job loads the checkpoint. Metrics and logs are appended; Hydra's files of the resumed launch go to
``.hydra/resumed_<time>/`` so the original ones stay. A multirun is resumed from its sweep directory:
finished jobs are skipped, unfinished ones pick up their latest checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from train.app.errors import InvalidConfig
from train.app.run_files import RESOLVED_CONFIG_FILE
from train.checkpointing import META_FILE, STATE_FILE, latest_checkpoint, read_meta

CHECKPOINT_DIR = "checkpoints"
# Keys that decide the models' shapes and the trainer: a checkpoint only resumes under the same ones.
IDENTITY_KEYS = ("experiment.name", "experiment.trainer", "model")


def _is_checkpoint(path: Path) -> bool:
    return (path / STATE_FILE).is_file() and (path / META_FILE).is_file()


def locate(target: str) -> tuple[Path, Path]:
    """(run directory, checkpoint) for ``resume=<run dir or checkpoint dir>``."""
    path = Path(target).expanduser()
    if _is_checkpoint(path):
        return path.parent.parent, path
    if not path.is_dir():
        raise InvalidConfig(f"resume={target!r} is invalid: expected a run directory or a checkpoint directory")
    checkpoint = latest_checkpoint(path / CHECKPOINT_DIR)
    if checkpoint is None:
        raise InvalidConfig(f"resume={target!r} is invalid: {path / CHECKPOINT_DIR} holds no complete checkpoint")
    return path, checkpoint


def _saved_overrides(path: Path) -> list[str]:
    loaded = OmegaConf.load(path)
    return [str(item) for item in cast(list[Any], OmegaConf.to_container(loaded))]


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _merge(saved: list[str], given: list[str], forced: list[str]) -> list[str]:
    """The saved overrides, replaced by given ones with the same key, then the new and the forced ones.

    A deletion (``~key``) replaces nothing: it follows the saved override it undoes, which must stay, since
    Hydra refuses to delete a key that a saved ``+key=value`` would otherwise no longer have added.
    """
    new = [*given, *forced]
    replaced = {_key(o) for o in new if not o.startswith("~")}
    return [o for o in saved if _key(o) not in replaced and o not in new] + new


def run_command_line(target: str, overrides: list[str]) -> list[str]:
    """The overrides that continue the run ``target`` (``overrides`` holds the user's others)."""
    run_dir, checkpoint = locate(target)
    saved = run_dir / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        raise InvalidConfig(f"resume={target!r} is invalid: {saved} is missing, so the run's config is unknown")
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    forced = [
        f"hydra.run.dir={run_dir}",
        f"hydra.output_subdir=.hydra/resumed_{stamp}",
        f"resume={checkpoint}",
    ]
    return _merge(_saved_overrides(saved), overrides, forced)


def sweep_command_line(target: str, overrides: list[str]) -> list[str]:
    """The overrides that re-launch the sweep in ``target`` (its multirun.yaml) into the same directory."""
    sweep_dir = Path(target).expanduser()
    saved = sweep_dir / "multirun.yaml"
    if not saved.is_file():
        raise InvalidConfig(f"resume={target!r} is invalid: expected a sweep directory holding multirun.yaml")
    hydra_overrides = OmegaConf.load(saved).hydra.overrides
    previous = [str(o) for o in hydra_overrides.task] + [str(o) for o in hydra_overrides.hydra]
    previous = [o for o in previous if not o.startswith(("hydra.sweep.dir=", "hydra.mode="))]
    return _merge(previous, overrides, [f"hydra.sweep.dir={sweep_dir}"])


def check_same_identity(cfg: DictConfig, run_dir: Path) -> None:
    """Refuse, before anything is written, to resume a run whose trainer or models the config changes."""
    saved_path = run_dir / RESOLVED_CONFIG_FILE
    if not saved_path.is_file():
        return
    saved = OmegaConf.load(saved_path)
    for key in IDENTITY_KEYS:
        before = OmegaConf.select(saved, key)
        now = OmegaConf.select(cfg, key)
        before_data = OmegaConf.to_container(before, resolve=True) if OmegaConf.is_config(before) else before
        now_data = OmegaConf.to_container(now, resolve=True) if OmegaConf.is_config(now) else now
        if before_data != now_data:
            raise InvalidConfig(
                f"cannot resume {run_dir}: {key} differs from the run's ({_difference(key, before_data, now_data)}); "
                "its checkpoints would not fit"
            )


def check_same_world_size(cfg: DictConfig, run_dir: Path, world_size: int) -> None:
    """Refuse, up front, to continue a checkpoint written by another number of ranks than this run has."""
    checkpoint = checkpoint_to_resume(cfg, run_dir)
    if checkpoint is None or not (checkpoint / META_FILE).is_file():
        return
    saved = int(read_meta(checkpoint).get("world_size", 1))
    if saved != world_size:
        ranks = {count: "1 process" if count == 1 else f"{count} ranks" for count in (saved, world_size)}
        how = f"torchrun --nproc_per_node={saved} -m train" if saved > 1 else "python -m train, without torchrun"
        raise InvalidConfig(
            f"cannot resume {checkpoint}: it was written by a run on {ranks[saved]}, this one has {ranks[world_size]}; "
            f"resume it on {ranks[saved]} ({how}): each rank's batches depend on the number of ranks"
        )


def _difference(key: str, before: Any, now: Any) -> str:
    if isinstance(before, dict) and isinstance(now, dict):
        before_dict, now_dict = cast(dict[str, Any], before), cast(dict[str, Any], now)
        for name in sorted(set(before_dict) | set(now_dict)):
            if before_dict.get(name) != now_dict.get(name):
                return _difference(f"{key}.{name}", before_dict.get(name), now_dict.get(name))
    return f"{key} was {before!r}, now {now!r}"


def checkpoint_to_resume(cfg: DictConfig, run_dir: Path) -> Path | None:
    """``resume=`` when given, else the latest checkpoint already in this run directory, else None."""
    if cfg.get("resume"):
        return Path(str(cfg.resume))
    return latest_checkpoint(run_dir / CHECKPOINT_DIR)
