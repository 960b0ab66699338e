"""The structured-config schemas registered in Hydra's ConfigStore.

``conf/train.yaml`` extends ``train_schema`` and every group file extends its section's schema
(``/schema/<group>``), so each value and override is type-checked against the core's dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from train.config import ClockConfig, LRSchedulerConfig, OptimizerConfig, TrainingConfig


@dataclass
class ExperimentSpec:
    """Which Trainer runs, under which name, and the evaluation metric a sweep optimises."""

    name: str = MISSING
    trainer: str = MISSING
    """Import path of the Trainer subclass; its config class is read from ``Trainer[Config, Batch]``."""
    metric: str | None = None
    """The evaluation metric a job returns (to Optuna, and the summary's sort key); null returns nothing."""
    mode: str = "max"
    """Whether a larger (``max``) or smaller (``min``) ``metric`` is better."""


@dataclass
class RootSchema:
    experiment: ExperimentSpec = field(default_factory=ExperimentSpec)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    lr_scheduler: LRSchedulerConfig = field(default_factory=LRSchedulerConfig)
    clock: ClockConfig = field(default_factory=ClockConfig)
    model: dict[str, Any] = field(default_factory=dict)
    """Models by name: ``_target_`` (a factory), its arguments, and ModelConfig options beside them."""
    callbacks: dict[str, Any] = field(default_factory=dict)
    """Callbacks by name: ``_target_`` and its arguments."""
    task: dict[str, Any] = field(default_factory=dict)
    """The experiment's own config fields (those of its config class beyond the sections above)."""
    outputs: str = "outputs"
    """The root of run directories (relative to the working directory)."""
    resume: str | None = None
    """A run directory, checkpoint or (with -m) sweep directory to continue; see train.app.resume."""


def register_schemas() -> None:
    store = ConfigStore.instance()
    store.store(name="train_schema", node=RootSchema)
    store.store(group="schema", name="training", node=TrainingConfig)
    store.store(group="schema", name="optimizer", node=OptimizerConfig)
    store.store(group="schema", name="lr_scheduler", node=LRSchedulerConfig)
    store.store(group="schema", name="clock", node=ClockConfig)
