"""Model and callback registration: pairing with config fields, factories, accessors, dtype and checkpoints."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny import IN_FEATURES, Batch, TinyConfig, TinyTrainer, linear_factory, run, tiny_config
from torch import nn

from train import Callback, CallbackConfig, ModelConfig, ModelFactory, register_model, save_weights


class ExtraTrainer(TinyTrainer):
    @register_model()
    def extra(self, config: ModelConfig) -> nn.Linear:
        return nn.Linear(IN_FEATURES, 1)


class OrphanConfig(TinyConfig):
    orphan: ModelConfig = ModelConfig()


class OrphanCallbackConfig(TinyConfig):
    watcher: CallbackConfig = CallbackConfig()


class MistypedConfig(TinyConfig):
    extra: CallbackConfig = CallbackConfig()


def with_training(config_class: type[TinyConfig]) -> TinyConfig:
    return config_class(training=tiny_config().training)


def test_decorated_model_without_config_field() -> None:
    with pytest.raises(ValueError) as error:
        ExtraTrainer(tiny_config())
    assert str(error.value) == (
        "ExtraTrainer.extra is registered with @register_model() but TinyConfig has no field 'extra': "
        "add `extra: ModelConfig` to TinyConfig"
    )


def test_model_config_field_without_method() -> None:
    with pytest.raises(ValueError) as error:
        TinyTrainer(with_training(OrphanConfig))
    assert str(error.value) == (
        "OrphanConfig.orphan is a ModelConfig but TinyTrainer has no @register_model() method named 'orphan' "
        "to build that model"
    )


def test_callback_config_field_without_method() -> None:
    with pytest.raises(ValueError) as error:
        TinyTrainer(with_training(OrphanCallbackConfig))
    assert str(error.value) == (
        "OrphanCallbackConfig.watcher is a CallbackConfig but TinyTrainer has no @register_callback() method "
        "named 'watcher' to build that callback"
    )


def test_decorated_model_with_a_field_of_the_wrong_kind() -> None:
    with pytest.raises(ValueError) as error:
        ExtraTrainer(with_training(MistypedConfig))
    assert str(error.value) == (
        "ExtraTrainer.extra is registered with @register_model() but MistypedConfig.extra is a CallbackConfig, "
        "not a ModelConfig"
    )


def test_same_name_decorated_and_factory() -> None:
    with pytest.raises(ValueError) as error:
        TinyTrainer(tiny_config(), models={"net": linear_factory()})
    assert (
        str(error.value) == "model 'net' is registered twice: by TinyTrainer.net (@register_model()) and by a factory"
    )


@pytest.mark.parametrize("name", ["training", "train", "optimizer", "clock"])
def test_factory_name_clashing_with_config_or_trainer(name: str) -> None:
    with pytest.raises(ValueError) as error:
        TinyTrainer(tiny_config(), models={name: linear_factory()})
    assert str(error.value) == f"model factory {name!r} clashes with TinyConfig.{name} or TinyTrainer.{name}: rename it"


def test_factory_built_model_is_reachable_three_ways() -> None:
    trainer = TinyTrainer(tiny_config(), models={"head": linear_factory(learning_rate=0.5)})
    head = trainer.models["head"]
    assert isinstance(head, nn.Linear)
    assert trainer.get_model("head", nn.Linear) is head
    assert trainer.get_model("head", nn.Module) is head
    assert getattr(trainer, "head") is head  # noqa: B009 - the attribute is set at run time
    assert trainer.model_configs["head"].learning_rate == 0.5
    assert list(trainer.models) == ["net", "head"]  # decorated first, then factories
    assert trainer.net is trainer.models["net"]
    assert trainer.get_model("net", nn.Linear) is trainer.net


def test_get_model_checks_type_and_name() -> None:
    trainer = TinyTrainer(tiny_config(), models={"head": linear_factory()})
    with pytest.raises(TypeError) as type_error:
        trainer.get_model("head", nn.Conv1d)
    assert str(type_error.value) == "model 'head' is a Linear, expected a Conv1d"
    with pytest.raises(KeyError, match=re.escape("no model named 'tail' is registered; registered: ['head', 'net']")):
        trainer.get_model("tail", nn.Linear)


class HeadAccessorTrainer(TinyTrainer):
    @property
    def head(self) -> nn.Linear:
        return self.get_model("head", nn.Linear)


def test_property_accessor_for_a_factory_is_allowed() -> None:
    trainer = HeadAccessorTrainer(tiny_config(), models={"head": linear_factory()})
    assert trainer.head is trainer.models["head"]


def test_decorated_model_before_registration_raises_attribute_error() -> None:
    seen: list[str] = []

    class Probe(Callback[TinyTrainer]):
        def on_init_begin(self, trainer: TinyTrainer) -> None:
            with pytest.raises(AttributeError) as error:
                _ = trainer.net
            seen.append(str(error.value))
            assert not hasattr(trainer, "head")

        def on_init_end(self, trainer: TinyTrainer) -> None:
            seen.append(type(trainer.net).__name__)

    TinyTrainer(tiny_config(), callbacks=[Probe()], models={"head": linear_factory()})
    assert seen == ["model 'net' is not registered yet: registration happens in Trainer.__init__", "Linear"]
    unbuilt = TinyTrainer.__new__(TinyTrainer)
    with pytest.raises(AttributeError, match="model 'net' is not registered yet"):
        _ = unbuilt.net


def test_models_get_the_configured_dtype() -> None:
    dtypes: list[torch.dtype] = []

    def loss(trainer: TinyTrainer, batch: Batch) -> torch.Tensor:
        value = nn.functional.mse_loss(trainer.net(batch.x.to(trainer.dtype)), batch.y.to(trainer.dtype))
        dtypes.append(value.dtype)
        return value

    trainer, _ = run(tiny_config(duration="2:step", dtype="float64"), loss_fn=loss, models={"head": linear_factory()})
    assert trainer.dtype == torch.float64
    assert {p.dtype for model in trainer.models.values() for p in model.parameters()} == {torch.float64}
    assert dtypes == [torch.float64, torch.float64]


def test_frozen_model_is_frozen_and_in_eval_mode() -> None:
    trainer = TinyTrainer(tiny_config(), models={"frozen": linear_factory(requires_grad=False)})
    frozen = trainer.models["frozen"]
    assert not frozen.training and trainer.net.training
    assert [p.requires_grad for p in frozen.parameters()] == [False, False]
    assert [p.requires_grad for p in trainer.net.parameters()] == [True, True]
    assert trainer.learnable_parameters == list(trainer.net.parameters())


def test_builder_must_return_a_module() -> None:
    def not_a_model() -> Any:
        return "a string"

    with pytest.raises(TypeError, match=r"model 'head' was built as str, not a torch\.nn\.Module"):
        TinyTrainer(tiny_config(), models={"head": ModelFactory(ModelConfig(), not_a_model)})


def test_checkpoint_is_loaded_at_registration(tmp_path: Path) -> None:
    source = nn.Linear(IN_FEATURES, 1)
    with torch.no_grad():
        source.weight.copy_(torch.tensor([[1.0, 2.0, 3.0]]))
        source.bias.fill_(-4.0)
    path = tmp_path / "weights" / "net.safetensors"
    save_weights(source, path)
    assert path.is_file()
    trainer = TinyTrainer(tiny_config(net=ModelConfig(checkpoint=str(path))))
    assert torch.equal(trainer.net.weight.detach(), torch.tensor([[1.0, 2.0, 3.0]]))
    assert torch.equal(trainer.net.bias.detach(), torch.tensor([-4.0]))


def test_checkpoint_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(FileNotFoundError, match=re.escape(f"model checkpoint {str(missing)!r} does not exist")):
        TinyTrainer(tiny_config(net=ModelConfig(checkpoint=str(missing))))
    wrong = tmp_path / "wrong.safetensors"
    save_weights(nn.Linear(5, 1), wrong)
    with pytest.raises(ValueError, match=re.escape(f"model checkpoint {str(wrong)!r} does not fit Linear")):
        TinyTrainer(tiny_config(net=ModelConfig(checkpoint=str(wrong))))
