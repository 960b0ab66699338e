"""train: a typed PyTorch training core (configs, clock, registries, callbacks, loop).

The public API mirrors the "Training 101" guide: subclass :class:`BaseConfig` and :class:`Trainer`,
register models and callbacks with decorators, call ``trainer.train()``.
"""

from train.callback import HOOKS, Callback
from train.checkpointing import load_weights, save_weights
from train.clock import TrainingClock
from train.config import (
    BaseConfig,
    CallbackConfig,
    ClockConfig,
    ConfigError,
    LRSchedulerConfig,
    LRSchedulers,
    LRSchedulerType,
    ModelConfig,
    OptimizerConfig,
    Optimizers,
    StructuredConfig,
    TrainingConfig,
)
from train.duration import StepPlan, TimeUnit, TimeValue
from train.registry import CallbackFactory, ModelFactory, register_callback, register_model
from train.seeding import scoped_seed, seed_everything
from train.trainer import Trainer

__all__ = [
    "HOOKS",
    "BaseConfig",
    "Callback",
    "CallbackConfig",
    "CallbackFactory",
    "ClockConfig",
    "ConfigError",
    "LRSchedulerConfig",
    "LRSchedulerType",
    "LRSchedulers",
    "ModelConfig",
    "ModelFactory",
    "OptimizerConfig",
    "Optimizers",
    "StepPlan",
    "StructuredConfig",
    "TimeUnit",
    "TimeValue",
    "Trainer",
    "TrainingClock",
    "TrainingConfig",
    "load_weights",
    "register_callback",
    "register_model",
    "save_weights",
    "scoped_seed",
    "seed_everything",
]
