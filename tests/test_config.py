"""Configs: keyword-only dataclasses, per-instance defaults, validation messages and the OmegaConf round trip."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from omegaconf import OmegaConf

from train import (
    BaseConfig,
    CallbackConfig,
    ConfigError,
    LRSchedulerConfig,
    LRSchedulerType,
    ModelConfig,
    OptimizerConfig,
    Optimizers,
    StructuredConfig,
    TrainingConfig,
)


class LoggingConfig(CallbackConfig):
    level: str = "info"
    tags: list[str] = dataclasses.field(default_factory=lambda: ["a"])


class ExperimentConfig(BaseConfig):
    """No @dataclass: BaseConfig makes it a keyword-only dataclass, so ``autoencoder`` may follow defaults."""

    logging: CallbackConfig = CallbackConfig()
    verbose_logging: LoggingConfig = LoggingConfig(level="debug")
    autoencoder: ModelConfig


def raw(**values: Any) -> dict[str, Any]:
    """Field values as YAML or a command line hands them over: not checked against the annotations."""
    return values


# Calls that break the signature on purpose: the type checker would reject them, the runtime must too.
UNCHECKED_EXPERIMENT_CONFIG: Any = ExperimentConfig


def test_subclass_is_a_keyword_only_dataclass() -> None:
    assert dataclasses.is_dataclass(ExperimentConfig)
    fields = {field.name: field for field in dataclasses.fields(ExperimentConfig)}
    assert list(fields) == [
        "training",
        "optimizer",
        "lr_scheduler",
        "clock",
        "logging",
        "verbose_logging",
        "autoencoder",
    ]
    assert all(field.kw_only for field in fields.values())
    config = ExperimentConfig(autoencoder=ModelConfig(learning_rate=0.5))
    assert config.autoencoder.learning_rate == 0.5
    assert config.training == TrainingConfig()


def test_positional_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match="positional argument"):
        UNCHECKED_EXPERIMENT_CONFIG(TrainingConfig(), autoencoder=ModelConfig())


def test_missing_required_field_is_refused() -> None:
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'autoencoder'"):
        UNCHECKED_EXPERIMENT_CONFIG()


def test_instance_defaults_are_distinct_objects() -> None:
    first = ExperimentConfig(autoencoder=ModelConfig())
    second = ExperimentConfig(autoencoder=ModelConfig())
    for name in ("training", "optimizer", "lr_scheduler", "clock", "logging", "verbose_logging"):
        assert getattr(first, name) is not getattr(second, name), name
        assert getattr(first, name) == getattr(second, name), name

    first.training.batch_size = 64
    first.verbose_logging.level = "error"
    first.verbose_logging.tags.append("b")
    first.lr_scheduler.milestones.append(5)
    assert second.training.batch_size == 1
    assert second.verbose_logging.level == "debug"
    assert second.verbose_logging.tags == ["a"]
    assert second.lr_scheduler.milestones == []
    # ...and a third instance still gets the class's original defaults.
    third = ExperimentConfig(autoencoder=ModelConfig())
    assert (third.training.batch_size, third.verbose_logging.level, third.verbose_logging.tags) == (1, "debug", ["a"])


def test_list_default_is_copied_per_instance() -> None:
    class Tagged(StructuredConfig):
        tags: list[int] = [1, 2]  # noqa: RUF012 - the point: StructuredConfig copies it for each instance

    first, second = Tagged(), Tagged()
    first.tags.append(3)
    assert (first.tags, second.tags, Tagged().tags) == ([1, 2, 3], [1, 2], [1, 2])


@pytest.mark.parametrize(
    ("config_class", "kwargs", "message"),
    [
        (TrainingConfig, {"batch_size": 0}, "TrainingConfig.batch_size=0 is invalid: expected an integer >= 1"),
        (TrainingConfig, {"batch_size": "abc"}, "TrainingConfig.batch_size='abc' is invalid: expected an integer >= 1"),
        (TrainingConfig, {"batch_size": 2.0}, "TrainingConfig.batch_size=2.0 is invalid: expected an integer >= 1"),
        (
            TrainingConfig,
            {"device": "gpu"},
            "TrainingConfig.device='gpu' is invalid: expected 'cpu', 'cuda', 'cuda:N' or 'mps'",
        ),
        (
            TrainingConfig,
            {"dtype": "float8"},
            "TrainingConfig.dtype='float8' is invalid: expected one of float32, bfloat16, float16, float64",
        ),
        (
            TrainingConfig,
            {"gradient_accumulation": "2:epoch"},
            "TrainingConfig.gradient_accumulation='2:epoch' is invalid: expected 'N:step' with N >= 1",
        ),
        (
            TrainingConfig,
            {"gradient_clipping_max_norm": 0},
            "TrainingConfig.gradient_clipping_max_norm=0 is invalid: expected a number > 0 (or null)",
        ),
        (TrainingConfig, {"shuffle": "yes"}, "TrainingConfig.shuffle='yes' is invalid: expected true or false"),
        (
            OptimizerConfig,
            {"learning_rate": -1},
            "OptimizerConfig.learning_rate=-1 is invalid: expected a number > 0",
        ),
        (
            OptimizerConfig,
            {"betas": (1.5, 0.9)},
            "OptimizerConfig.betas=(1.5, 0.9) is invalid: expected two numbers in [0, 1), e.g. [0.9, 0.999]",
        ),
        (
            OptimizerConfig,
            {"betas": [0.9]},
            "OptimizerConfig.betas=[0.9] is invalid: expected two numbers in [0, 1), e.g. [0.9, 0.999]",
        ),
        (
            OptimizerConfig,
            {"momentum": 1.0},
            "OptimizerConfig.momentum=1.0 is invalid: expected a number >= 0 and < 1",
        ),
        (
            OptimizerConfig,
            {"optimizer": Optimizers.Adam, "nesterov": True},
            "OptimizerConfig.nesterov=True is invalid: expected false unless optimizer is SGD with momentum > 0",
        ),
        (
            OptimizerConfig,
            {"optimizer": Optimizers.SGD, "nesterov": True},
            "OptimizerConfig.nesterov=True is invalid: expected false unless optimizer is SGD with momentum > 0",
        ),
        (
            OptimizerConfig,
            {"optimizer": "RMSprop"},
            "OptimizerConfig.optimizer='RMSprop' is invalid: expected one of SGD, Adam, AdamW",
        ),
        (
            LRSchedulerConfig,
            {"update_interval": "1:step"},
            "LRSchedulerConfig.update_interval='1:step' is invalid: expected 'N:iteration' or 'N:epoch' with N >= 1",
        ),
        (
            LRSchedulerConfig,
            {"milestones": [3, 2]},
            "LRSchedulerConfig.milestones=[3, 2] is invalid: expected strictly increasing integers",
        ),
        (
            LRSchedulerConfig,
            {"milestones": [0, 2]},
            "LRSchedulerConfig.milestones=[0, 2] is invalid: expected a list of positive integers",
        ),
        (
            LRSchedulerConfig,
            {"type": LRSchedulerType.ONE_CYCLE_LR, "warmup": "5:iteration"},
            "LRSchedulerConfig.warmup='5:iteration' is invalid: expected '0:iteration' with ONE_CYCLE_LR, "
            "which warms up by itself (pct_start)",
        ),
        (LRSchedulerConfig, {"mode": "median"}, "LRSchedulerConfig.mode='median' is invalid: expected 'min' or 'max'"),
        (
            ModelConfig,
            {"weight_decay": -1},
            "ModelConfig.weight_decay=-1 is invalid: expected a number >= 0 (or null)",
        ),
        (
            ModelConfig,
            {"checkpoint": ""},
            "ModelConfig.checkpoint='' is invalid: expected a path to a weights file (or null)",
        ),
    ],
)
def test_invalid_values_name_class_field_value_and_allowed(
    config_class: type[StructuredConfig], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        config_class(**kwargs)
    assert str(error.value) == message
    assert isinstance(error.value, ValueError)
    assert error.value.owner == config_class.__name__


def test_scheduler_type_lists_constant_case_names() -> None:
    with pytest.raises(ConfigError) as error:
        LRSchedulerConfig(**raw(type="Fancy"))
    assert str(error.value).startswith(
        "LRSchedulerConfig.type='Fancy' is invalid: expected one of CONSTANT_LR, STEP_LR"
    )
    assert "StepLR," not in str(error.value)  # aliases are not listed twice


def test_valid_values_are_normalised() -> None:
    optimizer = OptimizerConfig(**raw(optimizer="SGD", learning_rate=1, betas=[0.5, 0.25], momentum=0.9))
    assert optimizer.optimizer is Optimizers.SGD
    assert optimizer.learning_rate == 1.0 and isinstance(optimizer.learning_rate, float)
    assert optimizer.betas == (0.5, 0.25)
    assert LRSchedulerConfig(**raw(type="StepLR")).type is LRSchedulerType.STEP_LR
    assert LRSchedulerConfig(milestones=[1, 5, 9]).milestones == [1, 5, 9]
    assert ModelConfig(**raw(betas=[0.1, 0.2])).betas == (0.1, 0.2)
    assert OptimizerConfig(optimizer=Optimizers.SGD, momentum=0.9, nesterov=True).nesterov is True


def test_omegaconf_round_trip_training_config() -> None:
    merged = OmegaConf.merge(OmegaConf.structured(TrainingConfig), {"duration": "5:step"})
    config = OmegaConf.to_object(merged)
    assert isinstance(config, TrainingConfig)
    assert config.duration == "5:step"
    assert config == TrainingConfig(duration="5:step")


def test_omegaconf_round_trip_turns_betas_lists_into_tuples() -> None:
    merged = OmegaConf.merge(OmegaConf.structured(OptimizerConfig), {"betas": [0.8, 0.95], "optimizer": "Adam"})
    config = OmegaConf.to_object(merged)
    assert isinstance(config, OptimizerConfig)
    assert config.betas == (0.8, 0.95)
    assert isinstance(config.betas, tuple)
    assert config.optimizer is Optimizers.Adam


def test_omegaconf_round_trip_nested_config_validates_and_normalises() -> None:
    overrides = {"training": {"duration": "10 : Epochs"}, "autoencoder": {"betas": [0.5, 0.6]}}
    config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ExperimentConfig), overrides))
    assert isinstance(config, ExperimentConfig)
    assert config.training.duration == "10:epoch"
    assert config.autoencoder.betas == (0.5, 0.6)
    assert config.verbose_logging.level == "debug"

    with pytest.raises(ConfigError, match=r"TrainingConfig\.duration='abc' is invalid"):
        OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainingConfig), {"duration": "abc"}))
