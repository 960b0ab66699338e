"""Composition and validation of the runner's config, in process, through Hydra's compose API.

Every option of every config group in conf/ is composed and turned into an Experiment, and what the YAML
file says is checked to be what the composed config (and the typed config built from it) holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from train.app.experiment import Experiment, build_experiment
from train.app.main import CONFIG_DIR
from train.config import LRSchedulerType, Optimizers
from train.examples.autoencoder import Autoencoder, AutoencoderConfig, AutoencoderTrainer
from train.registry import ModelFactory

GROUPS = sorted(path.name for path in CONFIG_DIR.iterdir() if path.is_dir() and path.name != "hydra")
HYDRA_GROUPS = sorted(f"hydra/{path.name}" for path in (CONFIG_DIR / "hydra").iterdir() if path.is_dir())


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONFIG_DIR / group).glob("*.yaml"))


def compose_train(*overrides: str, hydra_node: bool = False) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name="test_app"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=hydra_node)


def experiment_of(*overrides: str) -> Experiment:
    return build_experiment(compose_train(*overrides))


def option_file(group: str, option: str) -> dict[str, Any]:
    """An option's own keys, as OmegaConf reads them (``3e-3`` is a number), without its defaults list."""
    data = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / group / f"{option}.yaml"), resolve=False)
    assert isinstance(data, dict)
    return {str(key): value for key, value in cast(dict[Any, Any], data).items() if key != "defaults"}


def plain(node: Any) -> Any:
    """A composed node as plain data, enums by name and interpolations as written."""
    return OmegaConf.to_container(node, resolve=False, enum_to_str=True) if isinstance(node, DictConfig) else node


def assert_contains(expected: Any, actual: Any, where: str) -> None:
    """Every key of ``expected`` is in ``actual`` with the same value (mappings compared recursively)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: expected a mapping, got {actual!r}"
        for key, value in cast(dict[str, Any], expected).items():
            assert key in actual, f"{where}.{key} is missing from the composed config"
            assert_contains(value, cast(dict[str, Any], actual)[key], f"{where}.{key}")
    else:
        assert actual == expected, f"{where}: composed {actual!r}, the YAML says {expected!r}"


# -- the defaults ------------------------------------------------------------------------------------------
def test_defaults_compose_to_the_autoencoder_experiment() -> None:
    experiment = experiment_of()
    assert experiment.spec.name == "autoencoder"
    assert experiment.spec.metric == "iou"
    assert experiment.spec.mode == "max"
    assert experiment.trainer_class is AutoencoderTrainer
    config = experiment.config
    assert type(config) is AutoencoderConfig
    assert config.optimizer.optimizer is Optimizers.AdamW
    assert config.optimizer.learning_rate == pytest.approx(2e-3)
    assert config.optimizer.weight_decay == pytest.approx(0.01)
    assert config.lr_scheduler.type is LRSchedulerType.COSINE_ANNEALING_LR
    assert config.lr_scheduler.warmup == "20:iteration"
    assert (config.image_size, config.epoch_size, config.data_seed) == (64, 2048, 0)
    assert (config.validation_size, config.grid_rows) == (128, 4)
    assert config.training.duration == "12:epoch"
    assert config.training.batch_size == 16
    assert config.training.gradient_clipping_max_norm == 1.0
    assert config.training.device == "cpu"
    assert sorted(experiment.model_factories) == ["autoencoder"]
    assert "metrics" in experiment.callback_factories
    assert sorted(experiment.callback_factories) == sorted(option_file("callbacks", "default"))


def test_optimizer_sgd_gives_sgd_with_momentum() -> None:
    config = experiment_of("optimizer=sgd").config
    assert config.optimizer.optimizer is Optimizers.SGD
    assert config.optimizer.momentum == pytest.approx(0.9)
    assert config.optimizer.nesterov is True
    assert config.optimizer.learning_rate == pytest.approx(0.1)


def test_lr_scheduler_cosine_warmup() -> None:
    config = experiment_of("lr_scheduler=cosine_warmup").config
    assert config.lr_scheduler.type is LRSchedulerType.COSINE_ANNEALING_LR
    assert config.lr_scheduler.warmup == "20:iteration"
    assert config.lr_scheduler.update_interval == "1:iteration"


def test_command_line_values_compose_verbatim() -> None:
    """``python -m train optimizer=adamw training.duration=1000:epoch``: the duration stays '1000:epoch'."""
    cfg = compose_train("optimizer=adamw", "training.duration=1000:epoch")
    assert cfg.training.duration == "1000:epoch"
    assert cfg.optimizer.optimizer == Optimizers.AdamW
    config = build_experiment(cfg).config
    assert config.training.duration == "1000:epoch"
    assert config.optimizer.optimizer is Optimizers.AdamW


# -- every option of every group ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("group", "option"),
    [pytest.param(group, option, id=f"{group}={option}") for group in GROUPS for option in options(group)],
)
def test_every_group_option_composes_and_validates(group: str, option: str) -> None:
    cfg = compose_train(f"{group}={option}")
    experiment = build_experiment(cfg)
    expected = option_file(group, option)
    if group == "experiment":  # `# @package _global_`: its keys sit at the root
        assert_contains(expected, plain(cfg), "<root>")
        assert experiment.spec.name == expected["experiment"]["name"]
        return
    assert_contains(expected, plain(cfg[group]), group)
    config = experiment.config
    if group == "optimizer":
        assert config.optimizer.optimizer is Optimizers(expected["optimizer"])
        assert config.optimizer.learning_rate == pytest.approx(expected["learning_rate"])
    elif group == "lr_scheduler":
        assert config.lr_scheduler.type is LRSchedulerType[expected["type"]]
    elif group == "training":
        assert config.training.duration == expected["duration"]
        assert config.training.batch_size == expected["batch_size"]
    elif group in ("model", "callbacks"):
        # One factory per entry of the composed group (an option may include others in its defaults list).
        factories = experiment.model_factories if group == "model" else experiment.callback_factories
        entries = [str(name) for name, entry in cfg[group].items() if entry is not None]
        assert sorted(factories) == sorted(entries)
        assert set(expected) <= set(factories)


@pytest.mark.parametrize(
    ("group", "option"),
    [pytest.param(group, option, id=f"{group}={option}") for group in HYDRA_GROUPS for option in options(group)],
)
def test_every_hydra_plugin_preset_composes(group: str, option: str) -> None:
    cfg = compose_train(f"{group}={option}", hydra_node=True)
    node = cfg.hydra[group.split("/")[1]]
    assert_contains(option_file(group, option), plain(node), group.replace("/", "."))
    build_experiment(cfg)


def test_launcher_presets_pick_their_plugins() -> None:
    parallel = compose_train("hydra/launcher=local_parallel", hydra_node=True).hydra.launcher
    assert parallel._target_.endswith("JoblibLauncher")
    assert parallel.n_jobs == 2
    slurm = compose_train("hydra/launcher=slurm", hydra_node=True).hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher")
    assert (slurm.timeout_min, slurm.gpus_per_node, slurm.max_num_timeout) == (60, 1, 3)


@pytest.mark.parametrize(("mode", "direction"), [("max", "maximize"), ("min", "minimize")])
def test_optuna_preset_follows_the_experiment(mode: str, direction: str) -> None:
    sweeper = compose_train("hydra/sweeper=optuna_lr_wd", f"experiment.mode={mode}", hydra_node=True).hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.direction == direction
    assert sweeper.study_name == "autoencoder"
    assert set(sweeper.params) == {"optimizer.learning_rate", "optimizer.weight_decay"}


# -- models from factories ---------------------------------------------------------------------------------
def test_model_factory_takes_model_options_and_follows_the_task() -> None:
    experiment = experiment_of("model.autoencoder.learning_rate=1e-4", f"task.image_size={16}")
    factory = experiment.model_factories["autoencoder"]
    assert isinstance(factory, ModelFactory)
    assert factory.config.learning_rate == pytest.approx(1e-4)
    assert factory.config.weight_decay is None
    assert factory.config.requires_grad is True
    assert factory.config.checkpoint is None
    model = factory.build()
    assert isinstance(model, Autoencoder)
    # The encoder's bottleneck flattens channels[2] x (image_size / 8)^2 values: 32 x 2 x 2 for 16x16 masks.
    first_linear = next(module for module in model.encoder.modules() if isinstance(module, torch.nn.Linear))
    assert first_linear.in_features == 32 * (16 // 8) ** 2
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 1, 16, 16)


def test_model_options_are_not_passed_to_the_model() -> None:
    """ModelConfig options (learning_rate, checkpoint...) stay out of the constructor's arguments."""
    experiment = experiment_of("model.autoencoder.learning_rate=1e-4", "model.autoencoder.weight_decay=0.5")
    factory = experiment.model_factories["autoencoder"]
    assert factory.config.weight_decay == pytest.approx(0.5)
    assert isinstance(factory.build(), Autoencoder)  # Autoencoder(learning_rate=...) would raise a TypeError


def test_config_dir_is_the_repository_conf() -> None:
    assert (CONFIG_DIR / "train.yaml").is_file()
    assert Path(CONFIG_DIR).name == "conf"
