"""The files of one run directory besides what callbacks write: the log, the resolved config, the result."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger
from omegaconf import DictConfig, OmegaConf

from train.files import atomic_write_text

LOG_FILE = "train.log"
RESOLVED_CONFIG_FILE = "resolved_config.yaml"
RESULT_FILE = "result.json"


def add_log_file(run_dir: Path) -> int:
    """Copy everything loguru prints into ``<run_dir>/train.log``; returns the sink id to remove later."""
    run_dir.mkdir(parents=True, exist_ok=True)
    return logger.add(run_dir / LOG_FILE, level="DEBUG", enqueue=False, encoding="utf-8")


def write_resolved_config(run_dir: Path, cfg: DictConfig) -> None:
    """The config with every interpolation resolved, without Hydra's own node (that is in .hydra/)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    atomic_write_text(run_dir / RESOLVED_CONFIG_FILE, OmegaConf.to_yaml(OmegaConf.create(container)))


@dataclass
class JobResult:
    """What a sweep summary needs of a job, written as ``result.json`` when the job ends."""

    status: str  # "completed" or "failed"
    overrides: list[str]
    metrics: dict[str, float] = field(default_factory=dict)
    objective: str | None = None
    objective_value: float | None = None
    error: str | None = None
    elapsed_seconds: float = 0.0
    steps: int = 0

    def write(self, run_dir: Path) -> None:
        atomic_write_text(run_dir / RESULT_FILE, json.dumps(asdict(self), indent=2, allow_nan=True) + "\n")

    @classmethod
    def read(cls, run_dir: Path) -> JobResult | None:
        path = run_dir / RESULT_FILE
        if not path.is_file():
            return None
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return cls(**data)
