"""Typed configuration: plain keyword-only dataclasses, validated on construction.

Every config class derives from :class:`StructuredConfig`. A subclass needs no ``@dataclass``: it becomes a
keyword-only dataclass when it is defined (so a required field may follow a defaulted one), and a default
that is itself a config instance, a list, a dict or a set is deep-copied for each new instance instead of
being shared. Because they are plain dataclasses, the same classes serve as Hydra/OmegaConf schemas.

Durations are stored as their canonical strings (``"1000:epoch"``) so configs stay plain data that YAML,
OmegaConf and checkpoints can hold; :class:`train.duration.TimeValue` parses them where they are used.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import re
from enum import StrEnum
from typing import Any, cast, dataclass_transform

from train.duration import TimeUnit, TimeValue


class ConfigError(ValueError):
    """An invalid config value. The message names the field, the value and what is allowed."""

    def __init__(self, owner: str, field: str, value: object, expected: str) -> None:
        self.owner = owner
        self.field = field
        self.value = value
        self.expected = expected
        super().__init__(f"{owner}.{field}={value!r} is invalid: expected {expected}")


_COPIED_DEFAULT_TYPES = (list, dict, set)  # plus StructuredConfig instances


@dataclass_transform(kw_only_default=True, field_specifiers=(dataclasses.field, dataclasses.Field))
class StructuredConfig:
    """Base of every config class: turns subclasses into validated keyword-only dataclasses."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _copy_mutable_defaults(cls)
        dataclasses.dataclass(kw_only=True)(cls)

    def __post_init__(self) -> None:
        """Subclasses validate (and normalise) their own fields here; call ``super().__post_init__()``."""

    def _invalid(self, field: str, expected: str) -> ConfigError:
        return ConfigError(type(self).__name__, field, getattr(self, field), expected)


def _copy_mutable_defaults(cls: type) -> None:
    """Replace instance-valued defaults by factories so no two configs ever share one object."""
    annotations = inspect.get_annotations(cls)
    for name, annotation in annotations.items():
        if "ClassVar" in str(annotation) or name not in cls.__dict__:
            continue
        default = cls.__dict__[name]
        if isinstance(default, (StructuredConfig, *_COPIED_DEFAULT_TYPES)):
            setattr(cls, name, dataclasses.field(default_factory=functools.partial(copy.deepcopy, default)))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _parse_time(config: StructuredConfig, field: str, units: tuple[TimeUnit, ...], minimum: int) -> None:
    """Validate a duration field and store its canonical spelling (``"10 : Epochs"`` -> ``"10:epoch"``)."""
    allowed = " or ".join(f"'N:{unit.value}'" for unit in units)
    expected = f"{allowed} with N >= {minimum}"
    try:
        value = TimeValue.parse(getattr(config, field))
    except ValueError:
        raise config._invalid(field, expected) from None
    if value.unit not in units or value.number < minimum:
        raise config._invalid(field, expected)
    setattr(config, field, str(value))


def _check_betas(config: StructuredConfig, field: str) -> None:
    betas = getattr(config, field)
    if betas is None:
        return
    expected = "two numbers in [0, 1), e.g. [0.9, 0.999]"
    if not isinstance(betas, list | tuple) or len(betas) != 2 or not all(_is_number(b) for b in betas):
        raise config._invalid(field, expected)
    if not all(0.0 <= b < 1.0 for b in betas):
        raise config._invalid(field, expected)
    setattr(config, field, (float(betas[0]), float(betas[1])))  # OmegaConf hands tuples over as lists


def _check_number(
    config: StructuredConfig,
    field: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    optional: bool = False,
    integer: bool = False,
) -> None:
    value: Any = getattr(config, field)
    if value is None and optional:
        return
    low_text = "" if low is None else f"{'>=' if low_inclusive else '>'} {low}"
    high_text = "" if high is None else f"{'<=' if high_inclusive else '<'} {high}"
    kind = "an integer" if integer else "a number"
    expected = " and ".join(part for part in (f"{kind} {low_text}".strip(), high_text) if part)
    if optional:
        expected += " (or null)"
    if not (_is_int(value) if integer else _is_number(value)):
        raise config._invalid(field, expected)
    value = cast(float, value)
    if low is not None and (value < low or (value == low and not low_inclusive)):
        raise config._invalid(field, expected)
    if high is not None and (value > high or (value == high and not high_inclusive)):
        raise config._invalid(field, expected)
    if not integer:
        setattr(config, field, float(value))


DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16", "float64")
AMP_MODES: tuple[str | None, ...] = (None, "bf16", "fp16")
_DEVICE_PATTERN = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


class TrainingConfig(StructuredConfig):
    """How long and how to train: duration, batches, device, precision, seeds, evaluation cadence."""

    duration: str = "1:epoch"
    batch_size: int = 1
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0
    shuffle: bool = True
    gradient_accumulation: str = "1:step"
    gradient_clipping_max_norm: float | None = None
    evaluation_interval: str = "1:epoch"
    evaluation_seed: int = 0
    num_workers: int = 0
    on_nonfinite_loss: str = "stop"
    """A NaN or infinite loss: "stop" raises (naming the step and the loss); "skip" drops that step's backward."""
    # -- speed: each is off or automatic by default; see README "Performance" ---------------------------
    amp: str | None = None
    """Mixed precision by autocast (weights stay float32): "bf16", or "fp16" (with a gradient scaler)."""
    compile: bool = False
    """``torch.compile`` each registered model (in place: its state-dict keys do not change)."""
    channels_last: bool = False
    """Keep the models and the batches' 4-D tensors in channels-last memory order (faster convolutions)."""
    persistent_workers: bool = False
    """Keep DataLoader workers alive across epochs (their random streams are then not reseeded per epoch)."""
    prefetch_factor: int | None = None
    """Batches each DataLoader worker loads ahead (null: torch's default, 2); needs num_workers > 0."""
    pin_memory: bool | None = None
    """Page-locked batches for faster host-to-GPU copies; null: on when training on CUDA."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _parse_time(self, "duration", tuple(TimeUnit), minimum=1)
        _parse_time(self, "gradient_accumulation", (TimeUnit.STEP,), minimum=1)
        # 0 disables periodic evaluation: the model is then evaluated once, at the end.
        _parse_time(self, "evaluation_interval", tuple(TimeUnit), minimum=0)
        _check_number(self, "batch_size", low=1, integer=True)
        _check_number(self, "seed", integer=True)
        _check_number(self, "evaluation_seed", integer=True)
        _check_number(self, "num_workers", low=0, integer=True)
        _check_number(self, "gradient_clipping_max_norm", low=0, low_inclusive=False, optional=True)
        if not isinstance(self.device, str) or not _DEVICE_PATTERN.match(self.device):
            raise self._invalid("device", "'cpu', 'cuda', 'cuda:N' or 'mps'")
        if self.dtype not in DTYPES:
            raise self._invalid("dtype", "one of " + ", ".join(DTYPES))
        if self.on_nonfinite_loss not in ("stop", "skip"):
            raise self._invalid("on_nonfinite_loss", "'stop' or 'skip'")
        for flag in ("shuffle", "compile", "channels_last", "persistent_workers"):
            if not isinstance(getattr(self, flag), bool):
                raise self._invalid(flag, "true or false")
        if self.pin_memory is not None and not isinstance(self.pin_memory, bool):
            raise self._invalid("pin_memory", "true, false or null (on when training on CUDA)")
        if self.amp not in AMP_MODES:
            raise self._invalid("amp", "'bf16', 'fp16' or null (off)")
        if self.amp is not None and self.dtype != "float32":
            raise self._invalid("amp", f"null with dtype={self.dtype!r}: autocast needs float32 weights")
        _check_number(self, "prefetch_factor", low=1, integer=True, optional=True)
        if self.num_workers == 0 and (self.prefetch_factor is not None or self.persistent_workers):
            field = "prefetch_factor" if self.prefetch_factor is not None else "persistent_workers"
            raise self._invalid(field, f"{'null' if field == 'prefetch_factor' else 'false'} with num_workers=0")


class Optimizers(StrEnum):
    """The optimizers a config can name. SGD honours ``momentum`` and ``nesterov``."""

    SGD = "SGD"
    Adam = "Adam"
    AdamW = "AdamW"


class OptimizerConfig(StructuredConfig):
    """The optimizer and its defaults; a model's :class:`ModelConfig` may override them for its parameters."""

    optimizer: Optimizers = Optimizers.AdamW
    learning_rate: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.0
    nesterov: bool = False
    fused: bool | None = None
    """torch's fused (single-kernel) update; null: fused where torch supports it for the parameters."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.optimizer, Optimizers):
            try:
                self.optimizer = Optimizers(self.optimizer)
            except ValueError:
                raise self._invalid("optimizer", "one of " + ", ".join(o.value for o in Optimizers)) from None
        _check_number(self, "learning_rate", low=0, low_inclusive=False)
        _check_betas(self, "betas")
        _check_number(self, "eps", low=0, low_inclusive=False)
        _check_number(self, "weight_decay", low=0)
        _check_number(self, "momentum", low=0, high=1, high_inclusive=False)
        if self.fused is not None and not isinstance(self.fused, bool):
            raise self._invalid("fused", "true, false or null (fused where supported)")
        if self.nesterov and (self.optimizer is not Optimizers.SGD or self.momentum == 0):
            raise self._invalid("nesterov", "false unless optimizer is SGD with momentum > 0")


class LRSchedulerType(StrEnum):
    """Learning-rate schedules. Members are named in CONSTANT_CASE, with CamelCase aliases."""

    CONSTANT_LR = "ConstantLR"
    STEP_LR = "StepLR"
    MULTI_STEP_LR = "MultiStepLR"
    EXPONENTIAL_LR = "ExponentialLR"
    COSINE_ANNEALING_LR = "CosineAnnealingLR"
    COSINE_ANNEALING_WARM_RESTARTS = "CosineAnnealingWarmRestarts"
    ONE_CYCLE_LR = "OneCycleLR"
    LINEAR_LR = "LinearLR"
    POLYNOMIAL_LR = "PolynomialLR"
    REDUCE_LR_ON_PLATEAU = "ReduceLROnPlateau"

    # Aliases (same values), so ``LRSchedulerType.ConstantLR`` reads like torch's class names.
    ConstantLR = "ConstantLR"
    StepLR = "StepLR"
    MultiStepLR = "MultiStepLR"
    ExponentialLR = "ExponentialLR"
    CosineAnnealingLR = "CosineAnnealingLR"
    CosineAnnealingWarmRestarts = "CosineAnnealingWarmRestarts"
    OneCycleLR = "OneCycleLR"
    LinearLR = "LinearLR"
    PolynomialLR = "PolynomialLR"
    ReduceLROnPlateau = "ReduceLROnPlateau"


LRSchedulers = LRSchedulerType
"""Alias kept for code written against the guide's first snippets."""


class LRSchedulerConfig(StructuredConfig):
    """The learning-rate schedule, its warmup and the parameters of each schedule type.

    Counts (``step_size``, ``milestones``, ``total_iters``, ``restart_period``) are in scheduler updates,
    one every ``update_interval``. ``warmup`` is converted to optimizer updates whatever its unit, so it
    means the same with or without gradient accumulation; during warmup the learning rate rises linearly
    to the rate the schedule starts from, and the schedule proper starts when warmup ends.
    """

    type: LRSchedulerType = LRSchedulerType.CONSTANT_LR
    update_interval: str = "1:iteration"
    warmup: str = "0:iteration"
    # STEP_LR, MULTI_STEP_LR, EXPONENTIAL_LR
    step_size: int = 100
    milestones: list[int] = dataclasses.field(default_factory=list)
    gamma: float = 0.1
    # COSINE_ANNEALING_LR, COSINE_ANNEALING_WARM_RESTARTS
    eta_min: float = 0.0
    restart_period: int = 100
    restart_multiplier: int = 1
    # Schedules with an end (cosine, one-cycle, linear, polynomial); null = the rest of training.
    total_iters: int | None = None
    # ONE_CYCLE_LR: null max_lr = the optimizer's learning rate.
    max_lr: float | None = None
    pct_start: float = 0.3
    # LINEAR_LR
    start_factor: float = 1.0 / 3.0
    end_factor: float = 1.0
    # POLYNOMIAL_LR
    power: float = 1.0
    # REDUCE_LR_ON_PLATEAU, stepped after each evaluation with the metric named by ``monitor``.
    monitor: str | None = None
    mode: str = "min"
    factor: float = 0.1
    patience: int = 10
    threshold: float = 1e-4
    cooldown: int = 0
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.type, LRSchedulerType):
            try:
                self.type = LRSchedulerType(self.type)
            except ValueError:
                names = ", ".join(member.name for member in LRSchedulerType if member.name.isupper())
                raise self._invalid("type", f"one of {names}") from None
        _parse_time(self, "update_interval", (TimeUnit.ITERATION, TimeUnit.EPOCH), minimum=1)
        _parse_time(self, "warmup", tuple(TimeUnit), minimum=0)
        if self.type is LRSchedulerType.ONE_CYCLE_LR and TimeValue.parse(self.warmup).number > 0:
            raise self._invalid("warmup", "'0:iteration' with ONE_CYCLE_LR, which warms up by itself (pct_start)")
        _check_number(self, "step_size", low=1, integer=True)
        if not isinstance(self.milestones, list | tuple) or not all(_is_int(m) and m > 0 for m in self.milestones):
            raise self._invalid("milestones", "a list of positive integers")
        if list(self.milestones) != sorted(set(self.milestones)):
            raise self._invalid("milestones", "strictly increasing integers")
        self.milestones = list(self.milestones)
        _check_number(self, "gamma", low=0, low_inclusive=False)
        _check_number(self, "eta_min", low=0)
        _check_number(self, "restart_period", low=1, integer=True)
        _check_number(self, "restart_multiplier", low=1, integer=True)
        _check_number(self, "total_iters", low=1, integer=True, optional=True)
        _check_number(self, "max_lr", low=0, low_inclusive=False, optional=True)
        _check_number(self, "pct_start", low=0, high=1, low_inclusive=False, high_inclusive=False)
        _check_number(self, "start_factor", low=0, high=1, low_inclusive=False)
        _check_number(self, "end_factor", low=0, high=1)
        _check_number(self, "power", low=0, low_inclusive=False)
        if self.mode not in ("min", "max"):
            raise self._invalid("mode", "'min' or 'max'")
        _check_number(self, "factor", low=0, high=1, low_inclusive=False, high_inclusive=False)
        _check_number(self, "patience", low=0, integer=True)
        _check_number(self, "threshold", low=0)
        _check_number(self, "cooldown", low=0, integer=True)
        _check_number(self, "min_lr", low=0)


class ModelConfig(StructuredConfig):
    """Options of one registered model. ``None`` overrides inherit the optimizer's values."""

    requires_grad: bool = True
    learning_rate: float | None = None
    weight_decay: float | None = None
    betas: tuple[float, float] | None = None
    eps: float | None = None
    checkpoint: str | None = None
    """A weights file (``.safetensors``, or a tensor-only ``.pt``/``.pth``) loaded at registration."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.requires_grad, bool):
            raise self._invalid("requires_grad", "true or false")
        _check_number(self, "learning_rate", low=0, low_inclusive=False, optional=True)
        _check_number(self, "weight_decay", low=0, optional=True)
        _check_betas(self, "betas")
        _check_number(self, "eps", low=0, low_inclusive=False, optional=True)
        if self.checkpoint is not None and (not isinstance(self.checkpoint, str) or not self.checkpoint):
            raise self._invalid("checkpoint", "a path to a weights file (or null)")


class CallbackConfig(StructuredConfig):
    """Options of one registered callback. Subclass it to give a callback its own options."""


class ClockConfig(CallbackConfig):
    """The built-in clock: ``verbose`` logs the start, each epoch's end and the end of training."""

    verbose: bool = True


class BaseConfig(StructuredConfig):
    """The root of an experiment's config: subclass it and add one field per model and callback."""

    training: TrainingConfig = TrainingConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    lr_scheduler: LRSchedulerConfig = LRSchedulerConfig()
    clock: ClockConfig = ClockConfig()
