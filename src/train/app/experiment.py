"""From a composed Hydra config to what the core needs: a Trainer class, its typed config and factories.

Everything is validated here, before any model is built, so that a bad value fails up front with one line.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import typing
from dataclasses import dataclass
from typing import Any, cast

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from train.app.errors import InvalidConfig, from_config_error, from_omegaconf_error
from train.app.schema import ExperimentSpec, RootSchema
from train.callback import Callback
from train.config import BaseConfig, CallbackConfig, ConfigError, ModelConfig
from train.device import resolve_device
from train.distributed import DistributedContext
from train.registry import CallbackFactory, ModelFactory
from train.trainer import Trainer, rank_batch_size

SECTIONS = ("training", "optimizer", "lr_scheduler", "clock")
MODEL_OPTIONS = frozenset(f.name for f in dataclasses.fields(cast(Any, ModelConfig)))


@dataclass(frozen=True)
class Experiment:
    spec: ExperimentSpec
    trainer_class: type[Trainer[Any, Any]]
    config: BaseConfig
    model_factories: dict[str, ModelFactory]
    callback_factories: dict[str, CallbackFactory]

    def build_trainer(self, run_dir: str) -> Trainer[Any, Any]:
        return self.trainer_class(
            self.config,
            model_factories=self.model_factories,
            callback_factories=self.callback_factories,
            run_dir=run_dir,
        )


def _import(path: str) -> Any:
    """The object at ``package.module.Name`` (attributes may nest: ``module.Class.method``)."""
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        module_name = ".".join(parts[:split])
        try:
            value: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name is not None and module_name.startswith(error.name):
                continue  # this prefix is not a module: try a shorter one
            raise  # the module exists but one of its own imports is missing
        for attribute in parts[split:]:
            value = getattr(value, attribute)
        return value
    raise ModuleNotFoundError(f"No module named {parts[0]!r}")


def _locate(path: object, key: str) -> Any:
    if not isinstance(path, str) or not path:
        raise InvalidConfig(f"{key}={path!r} is invalid: expected an import path such as 'package.module.Name'")
    try:
        return _import(path)
    except (ImportError, AttributeError) as error:
        raise InvalidConfig(f"{key}={path!r} cannot be imported: {error}") from None


def config_class_of(trainer_class: type) -> type[BaseConfig]:
    """The ``Config`` in ``class MyTrainer(Trainer[Config, Batch])``, searched through the bases."""
    for klass in trainer_class.__mro__:
        for base in getattr(klass, "__orig_bases__", ()):
            origin = typing.get_origin(base)
            if isinstance(origin, type) and issubclass(origin, Trainer):
                args = typing.get_args(base)
                if args and isinstance(args[0], type) and issubclass(args[0], BaseConfig):
                    return args[0]
    raise InvalidConfig(
        f"experiment.trainer={trainer_class.__module__}.{trainer_class.__qualname__} does not declare its config "
        "class: expected `class MyTrainer(Trainer[MyConfig, MyBatch])`"
    )


def _check_known_keys(node: DictConfig, schema: type, prefix: str) -> None:
    """Refuse keys that ``+key=value`` added to a structured section: nothing would ever read them."""
    known = [field.name for field in dataclasses.fields(schema)]
    for key in node:
        if key not in known:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise InvalidConfig(f"{where} is not an option of {schema.__name__}: expected one of {', '.join(known)}")


def _typed_config(cfg: DictConfig, config_class: type[BaseConfig]) -> BaseConfig:
    for section in SECTIONS:  # each section alone first, so an error names its key path exactly
        _check_known_keys(cfg[section], cast(type, OmegaConf.get_type(cfg[section])), section)
        try:
            OmegaConf.to_object(cfg[section])
        except ConfigError as error:
            raise from_config_error(error, section) from None
        except OmegaConfBaseException as error:
            raise from_omegaconf_error(error, section) from None
    try:
        schema = OmegaConf.structured(config_class)
        merged = OmegaConf.merge(schema, {section: cfg[section] for section in SECTIONS}, cfg.task)
        return cast(BaseConfig, OmegaConf.to_object(merged))
    except ConfigError as error:
        raise from_config_error(error, "task") from None
    except OmegaConfBaseException as error:
        raise from_omegaconf_error(error, "task") from None


def _model_factory(name: str, entry: DictConfig) -> ModelFactory:
    key = f"model.{name}"
    _locate(entry.get("_target_"), f"{key}._target_")
    # Resolved while still attached to the root, so `${task.image_size}` and the like keep working.
    try:
        data = cast(dict[str, Any], OmegaConf.to_container(entry, resolve=True))
    except OmegaConfBaseException as error:
        raise from_omegaconf_error(error, key) from None
    options = {option: value for option, value in data.items() if option in MODEL_OPTIONS}
    arguments = {argument: value for argument, value in data.items() if argument not in MODEL_OPTIONS}
    try:
        model_config = ModelConfig(**options)
    except ConfigError as error:
        raise from_config_error(error, key) from None
    except TypeError as error:  # a value of the wrong type that ModelConfig's checks did not name
        raise InvalidConfig(f"{key}: {error}") from None
    # Built lazily, inside Trainer.__init__, after seeding: initial weights depend on the seed only.
    return ModelFactory(model_config, functools.partial(instantiate, OmegaConf.create(arguments)))


def _callback_factory(name: str, entry: DictConfig) -> CallbackFactory:
    _locate(entry.get("_target_"), f"callbacks.{name}._target_")
    return CallbackFactory(CallbackConfig(), functools.partial(_instantiate_callback, name, entry))


def _instantiate_callback(name: str, entry: DictConfig) -> Callback[Any]:
    callback = instantiate(entry)
    if not isinstance(callback, Callback):
        raise InvalidConfig(
            f"callbacks.{name}._target_={entry._target_!r} built a {type(callback).__name__}, expected a train.Callback"
        )
    return cast(Callback[Any], callback)


def _entries(cfg: DictConfig, group: str) -> dict[str, DictConfig]:
    node = cfg.get(group) or {}
    entries: dict[str, DictConfig] = {}
    for name, entry in cast(DictConfig, node).items():
        if entry is None:  # `model.name=null` removes an entry
            continue
        if not isinstance(entry, DictConfig) or "_target_" not in entry:
            raise InvalidConfig(f"{group}.{name} is invalid: expected a mapping with a _target_ key")
        entries[str(name)] = entry
    return entries


def build_experiment(cfg: DictConfig) -> Experiment:
    """Validate a composed config and turn it into an :class:`Experiment`; raises :class:`InvalidConfig`."""
    _check_known_keys(DictConfig({key: None for key in cfg if key != "hydra"}), RootSchema, "")
    try:
        spec = cast(ExperimentSpec, OmegaConf.to_object(cfg.experiment))
    except OmegaConfBaseException as error:
        raise from_omegaconf_error(error, "experiment") from None
    if spec.mode not in ("min", "max"):
        raise InvalidConfig(f"experiment.mode={spec.mode!r} is invalid: expected 'min' or 'max'")
    trainer_class = _locate(spec.trainer, "experiment.trainer")
    if not (isinstance(trainer_class, type) and issubclass(trainer_class, Trainer)):
        raise InvalidConfig(f"experiment.trainer={spec.trainer!r} is invalid: expected a subclass of train.Trainer")
    config = _typed_config(cfg, config_class_of(trainer_class))
    try:
        resolve_device(config.training.device)
        rank_batch_size(config.training.batch_size, DistributedContext.from_environment().world_size)
    except ValueError as error:
        raise InvalidConfig(str(error)) from None
    models = {name: _model_factory(name, entry) for name, entry in _entries(cfg, "model").items()}
    callbacks = {name: _callback_factory(name, entry) for name, entry in _entries(cfg, "callbacks").items()}
    return Experiment(spec, cast(type[Trainer[Any, Any]], trainer_class), config, models, callbacks)
