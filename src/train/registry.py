"""Model and callback registries: ``@register_model()``, ``@register_callback()`` and factories.

A registration links a config field to a builder of the same name. Builders come from two places and are
treated the same way by the Trainer:

- a Trainer method decorated with ``@register_model()`` / ``@register_callback()``, paired with the
  config field of the same name (the guide's way);
- a :class:`ModelFactory` / :class:`CallbackFactory` handed to ``Trainer(...)`` (the Hydra app's way:
  a ``_target_`` instantiated by Hydra).

For type checkers a decorated method *is* the object it returns, so ``self.autoencoder`` is typed as the
model class; at run time the decorator leaves a descriptor that reads the trainer's registry.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from torch import nn

from train.callback import Callback
from train.config import BaseConfig, CallbackConfig, ClockConfig, ModelConfig

ModuleT = TypeVar("ModuleT", bound=nn.Module)
CallbackT = TypeVar("CallbackT", bound=Callback[Any])
ModelConfigT = TypeVar("ModelConfigT", bound=ModelConfig)
CallbackConfigT = TypeVar("CallbackConfigT", bound=CallbackConfig)
BuiltT = TypeVar("BuiltT")

BUILT_IN_FIELDS = frozenset({"training", "optimizer", "lr_scheduler", "clock"})


class Registration(Generic[BuiltT]):
    """What a registering decorator leaves on the Trainer class: the builder, found again by name."""

    kind = "object"
    registry_attribute = ""

    def __init__(self, build: Callable[[Any, Any], BuiltT]) -> None:
        self.build = build
        self.name = build.__name__
        self.__doc__ = build.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None:
            return self
        registry: Mapping[str, BuiltT] = getattr(instance, self.registry_attribute, {})
        if self.name not in registry:
            raise AttributeError(
                f"{self.kind} {self.name!r} is not registered yet: registration happens in Trainer.__init__"
            )
        return registry[self.name]


class ModelRegistration(Registration[nn.Module]):
    kind = "model"
    registry_attribute = "models"


class CallbackRegistration(Registration[Callback[Any]]):
    kind = "callback"
    registry_attribute = "callbacks"


def register_model() -> Callable[[Callable[[Any, ModelConfigT], ModuleT]], ModuleT]:  # pyright: ignore[reportInvalidTypeVarUse]
    """Register a Trainer method that builds the model of the config field with the same name."""

    def decorator(build: Callable[[Any, ModelConfigT], ModuleT]) -> ModuleT:
        return cast(ModuleT, ModelRegistration(build))

    return decorator


def register_callback() -> Callable[[Callable[[Any, CallbackConfigT], CallbackT]], CallbackT]:  # pyright: ignore[reportInvalidTypeVarUse]
    """Register a Trainer method that builds the callback of the config field with the same name."""

    def decorator(build: Callable[[Any, CallbackConfigT], CallbackT]) -> CallbackT:
        return cast(CallbackT, CallbackRegistration(build))

    return decorator


@dataclass(frozen=True)
class ModelFactory:
    """A model built outside the Trainer class (e.g. from a Hydra ``_target_``), with its options."""

    config: ModelConfig
    build: Callable[[], nn.Module]


@dataclass(frozen=True)
class CallbackFactory:
    """A callback built outside the Trainer class (e.g. from a Hydra ``_target_``), with its options."""

    config: CallbackConfig
    build: Callable[[], Callback[Any]]


@dataclass(frozen=True)
class Entry(Generic[BuiltT]):
    """One resolved registration: its name, its config and a zero-argument builder."""

    name: str
    config: Any
    build: Callable[[], BuiltT]


@dataclass(frozen=True)
class RegistrationPlan:
    models: list[Entry[nn.Module]]
    callbacks: list[Entry[Callback[Any]]]


def _decorated(trainer_class: type, kind: type[Registration[Any]]) -> dict[str, Registration[Any]]:
    """Registrations of one kind on a Trainer class and its bases, base classes first, in definition order."""
    found: dict[str, Registration[Any]] = {}
    for klass in reversed(trainer_class.__mro__):
        for name, value in vars(klass).items():
            if isinstance(value, kind):
                found[name] = value
            elif name in found:  # a subclass replaced the registered method with something else
                del found[name]
    return found


def plan_registrations(
    trainer: object,
    config: BaseConfig,
    model_factories: Mapping[str, ModelFactory],
    callback_factories: Mapping[str, CallbackFactory],
) -> RegistrationPlan:
    """Pair every registration with its config, or raise a ValueError naming both sides of a mismatch."""
    trainer_name = type(trainer).__name__
    config_name = type(config).__name__
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(cast(Any, config))}
    models: list[Entry[nn.Module]] = []
    callbacks: list[Entry[Callback[Any]]] = []

    sources: list[tuple[str, type[Any], dict[str, Registration[Any]], Mapping[str, Any], list[Any], str]] = [
        (
            "model",
            ModelConfig,
            _decorated(type(trainer), ModelRegistration),
            model_factories,
            models,
            "@register_model()",
        ),
        (
            "callback",
            CallbackConfig,
            _decorated(type(trainer), CallbackRegistration),
            callback_factories,
            callbacks,
            "@register_callback()",
        ),
    ]
    for kind, config_type, decorated, factories, entries, decorator in sources:
        for name in factories:
            if name in decorated:
                raise ValueError(
                    f"{kind} {name!r} is registered twice: by {trainer_name}.{name} ({decorator}) and by a factory"
                )
            # A property of the same name is a typed accessor for the factory's object; anything else clashes.
            clashes_with_trainer = hasattr(type(trainer), name) and not isinstance(
                getattr(type(trainer), name), property
            )
            if name in BUILT_IN_FIELDS or name in fields or clashes_with_trainer:
                raise ValueError(
                    f"{kind} factory {name!r} clashes with {config_name}.{name} or {trainer_name}.{name}: rename it"
                )
        for name, registration in decorated.items():
            if name not in fields:
                raise ValueError(
                    f"{trainer_name}.{name} is registered with {decorator} but {config_name} has no field {name!r}: "
                    f"add `{name}: {config_type.__name__}` to {config_name}"
                )
            field_config = fields[name]
            if not isinstance(field_config, config_type):
                raise ValueError(
                    f"{trainer_name}.{name} is registered with {decorator} but {config_name}.{name} is a "
                    f"{type(field_config).__name__}, not a {config_type.__name__}"
                )
            build = registration.build
            entries.append(Entry(name, field_config, functools.partial(build, trainer, field_config)))
        for name, factory in factories.items():
            entries.append(Entry(name, factory.config, factory.build))

    for name, value in fields.items():
        if name in BUILT_IN_FIELDS:
            continue
        for kind, config_type, decorated, _, _, decorator in sources:
            if isinstance(value, config_type) and not isinstance(value, ClockConfig) and name not in decorated:
                raise ValueError(
                    f"{config_name}.{name} is a {type(value).__name__} but {trainer_name} has no {decorator} "
                    f"method named {name!r} to build that {kind}"
                )
    return RegistrationPlan(models=models, callbacks=callbacks)
