"""Static typing checks, verified by pyright in the test command (this file is never executed by pytest).

``assert_type`` fails type checking when the inferred type differs, and with
``reportUnnecessaryTypeIgnoreComment`` on, each ``# type: ignore`` below must really be needed: so the
file fails pyright both if a type is too loose (Any) and if a wrong use stops being an error.
"""
# pyright: strict, reportUnnecessaryTypeIgnoreComment=true

from dataclasses import dataclass
from typing import Any, assert_type

import torch
from torch import nn

from train import (
    BaseConfig,
    Callback,
    CallbackConfig,
    ModelConfig,
    Trainer,
    register_callback,
    register_model,
)


class Autoencoder(nn.Module):
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x


@dataclass
class Batch:
    image: torch.Tensor


class AutoencoderModelConfig(ModelConfig):
    pass


class LoggingCallback(Callback[Trainer[Any, Any]]):
    def on_epoch_end(self, trainer: Trainer[Any, Any]) -> None:
        assert_type(trainer.clock.epoch, int)


class AutoencoderConfig(BaseConfig):
    epoch_size: int = 2048
    autoencoder: AutoencoderModelConfig
    logging: CallbackConfig = CallbackConfig()


class AutoencoderTrainer(Trainer[AutoencoderConfig, Batch]):
    def get_item(self, index: int) -> Batch:
        return Batch(image=torch.zeros(1, 1, 8, 8))

    def collate_fn(self, batch: list[Batch]) -> Batch:
        return Batch(image=torch.cat([b.image for b in batch]))

    @property
    def dataset_length(self) -> int:
        assert_type(self.config.epoch_size, int)
        assert_type(self.config, AutoencoderConfig)
        return self.config.epoch_size

    @register_model()
    def autoencoder(self, config: AutoencoderModelConfig) -> Autoencoder:
        return Autoencoder()

    @register_callback()
    def logging(self, config: CallbackConfig) -> LoggingCallback:
        return LoggingCallback()

    def compute_loss(self, batch: Batch) -> torch.Tensor:
        assert_type(self.autoencoder, Autoencoder)
        assert_type(self.logging, LoggingCallback)
        assert_type(self.autoencoder.encode(batch.image), torch.Tensor)
        self.autoencoder.no_such_method()  # type: ignore[attr-defined]
        return batch.image.mean()


def configs_are_checked() -> None:
    config = AutoencoderConfig(autoencoder=AutoencoderModelConfig(learning_rate=1e-4))
    assert_type(config.training.batch_size, int)
    assert_type(config.autoencoder.learning_rate, float | None)
    AutoencoderConfig()  # type: ignore[call-arg]  - autoencoder is required
    AutoencoderConfig(autoencoder=AutoencoderModelConfig(), epoch_size="big")  # type: ignore[arg-type]
    AutoencoderConfig(AutoencoderModelConfig())  # type: ignore[misc]  - keyword-only
    trainer = AutoencoderTrainer(config)
    assert_type(trainer.config, AutoencoderConfig)
    assert_type(trainer.autoencoder, Autoencoder)
