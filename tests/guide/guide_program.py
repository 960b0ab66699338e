"""The guide's complete end-to-end program. Only the imports changed (refiners -> train) and, so that it
runs in seconds, the duration, epoch size and evaluation interval were shrunk. Run it from a scratch
directory: it writes ``result_<epoch>.png`` into the current directory."""
# ruff: noqa
# pyright: basic
import random
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Generator

import torch
from loguru import logger
from PIL import Image
from train import layers as fl
from train.utils import image_to_tensor, tensor_to_image
from train import (
    BaseConfig,
    Callback,
    CallbackConfig,
    ClockConfig,
    LRSchedulerConfig,
    LRSchedulerType,
    ModelConfig,
    OptimizerConfig,
    Optimizers,
    Trainer,
    TrainingConfig,
    register_callback,
    register_model,
)
from torch.nn import functional as F


class ConvBlock(fl.Chain):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            fl.Conv2d(
                in_channels=in_channels,
                out_channels=out_channels,
                kernel_size=3,
                padding=1,
                groups=min(in_channels, out_channels)
            ),
            fl.LayerNorm2d(out_channels),
            fl.SiLU(),
            fl.Conv2d(
                in_channels=out_channels,
                out_channels=out_channels,
                kernel_size=1,
                padding=0,
            ),
            fl.LayerNorm2d(out_channels),
            fl.SiLU(),
        )


class ResidualBlock(fl.Sum):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            ConvBlock(in_channels=in_channels, out_channels=out_channels),
            fl.Conv2d(
                in_channels=in_channels,
                out_channels=out_channels,
                kernel_size=3,
                padding=1,
            ),
        )


class Encoder(fl.Chain):
    def __init__(self) -> None:
        super().__init__(
            ResidualBlock(in_channels=1, out_channels=8),
            fl.Downsample(channels=8, scale_factor=2, register_shape=False),
            ResidualBlock(in_channels=8, out_channels=16),
            fl.Downsample(channels=16, scale_factor=2, register_shape=False),
            ResidualBlock(in_channels=16, out_channels=32),
            fl.Downsample(channels=32, scale_factor=2, register_shape=False),
            fl.Reshape(2048),
            fl.Linear(in_features=2048, out_features=256),
            fl.SiLU(),
            fl.Linear(in_features=256, out_features=256),
        )


class Decoder(fl.Chain):
    def __init__(self) -> None:
        super().__init__(
            fl.Linear(in_features=256, out_features=256),
            fl.SiLU(),
            fl.Linear(in_features=256, out_features=2048),
            fl.Reshape(32, 8, 8),
            ResidualBlock(in_channels=32, out_channels=32),
            ResidualBlock(in_channels=32, out_channels=32),
            fl.Upsample(channels=32, upsample_factor=2),
            ResidualBlock(in_channels=32, out_channels=16),
            ResidualBlock(in_channels=16, out_channels=16),
            fl.Upsample(channels=16, upsample_factor=2),
            ResidualBlock(in_channels=16, out_channels=8),
            ResidualBlock(in_channels=8, out_channels=8),
            fl.Upsample(channels=8, upsample_factor=2),
            ResidualBlock(in_channels=8, out_channels=8),
            ResidualBlock(in_channels=8, out_channels=1),
            fl.Sigmoid(),
        )


class Autoencoder(fl.Chain):
    def __init__(self) -> None:
        super().__init__(
            Encoder(),
            Decoder(),
        )

    @property
    def encoder(self) -> Encoder:
        return self.ensure_find(Encoder)

    @property
    def decoder(self) -> Decoder:
        return self.ensure_find(Decoder)


def generate_mask(size: int, seed: int | None = None) -> Generator[torch.Tensor, None, None]:
    """Generate a tensor of a binary mask of size `size` using random rectangles."""
    if seed is None:
        seed = random.randint(0, 2**32 - 1)
    random.seed(seed)

    while True:
        rectangle = Image.new(
            "L", (random.randint(1, size), random.randint(1, size)), color=255
        )
        mask = Image.new("L", (size, size))
        mask.paste(
            rectangle,
            (
                random.randint(0, size - rectangle.width),
                random.randint(0, size - rectangle.height),
            ),
        )
        tensor = image_to_tensor(mask)

        if random.random() > 0.5:
            tensor = 1 - tensor

        yield tensor


@dataclass
class Batch:
    image: torch.Tensor


class AutoencoderModelConfig(ModelConfig):
    pass


class LoggingCallback(Callback[Trainer[Any, Any]]):
    losses: list[float] = []

    def on_compute_loss_end(self, trainer: Trainer[Any, Any]) -> None:
        self.losses.append(trainer.loss.detach().cpu().item())

    def on_epoch_end(self, trainer: Trainer[Any, Any]) -> None:
        mean_loss = sum(self.losses) / len(self.losses)
        logger.info(f"Mean loss: {mean_loss}, epoch: {trainer.clock.epoch}")
        self.losses = []


class AutoencoderConfig(BaseConfig):
    epoch_size: int = 64  # shrunk from 2048
    autoencoder: AutoencoderModelConfig
    logging: CallbackConfig = CallbackConfig()


autoencoder_config = AutoencoderModelConfig(
    requires_grad=True,  # set during registration to set the requires_grad attribute of the model.
)

training = TrainingConfig(
    duration="4:epoch",  # type: ignore  (shrunk from 1000:epoch)
    batch_size=32,
    device="cuda" if torch.cuda.is_available() else "cpu",
    dtype="float32",
    evaluation_interval="2:epoch",  # type: ignore  (shrunk from 50:epoch)
)

optimizer = OptimizerConfig(
    optimizer=Optimizers.AdamW,
    learning_rate=1e-4,
)

lr_scheduler = LRSchedulerConfig(
    type=LRSchedulerType.CONSTANT_LR
)

config = AutoencoderConfig(
    training=training,
    optimizer=optimizer,
    lr_scheduler=lr_scheduler,
    autoencoder=autoencoder_config,
    clock=ClockConfig(verbose=False),  # to disable the default clock logging
)


class AutoencoderTrainer(Trainer[AutoencoderConfig, Batch]):
    @cached_property
    def image_generator(self) -> Generator[torch.Tensor, None, None]:
        return generate_mask(size=64)

    def get_item(self, index: int) -> Batch:
        return Batch(image=next(self.image_generator).to(self.device, self.dtype))

    def collate_fn(self, batch: list[Batch]) -> Batch:
        return Batch(image=torch.cat([b.image for b in batch]))

    @property
    def dataset_length(self) -> int:
        return self.config.epoch_size

    @register_model()
    def autoencoder(self, config: AutoencoderModelConfig) -> Autoencoder:
        return Autoencoder()

    def compute_loss(self, batch: Batch) -> torch.Tensor:
        x_reconstructed = self.autoencoder.decoder(
            self.autoencoder.encoder(batch.image)
        )
        return F.binary_cross_entropy(x_reconstructed, batch.image)

    def compute_evaluation(self) -> None:
        generator = generate_mask(size=64, seed=0)

        grid: list[tuple[Image.Image, Image.Image]] = []
        validation_losses: list[float] = []
        for _ in range(4):
            mask = next(generator).to(self.device, self.dtype)
            x_reconstructed = self.autoencoder.decoder(self.autoencoder.encoder(mask))
            loss = F.mse_loss(x_reconstructed, mask)
            validation_losses.append(loss.detach().cpu().item())
            grid.append((tensor_to_image(mask), tensor_to_image((x_reconstructed>0.5).float())))

        mean_loss = sum(validation_losses) / len(validation_losses)
        logger.info(f"Mean validation loss: {mean_loss}, epoch: {self.clock.epoch}")

        import matplotlib.pyplot as plt

        _, axes = plt.subplots(4, 2, figsize=(8, 16)) # type: ignore

        for i, (mask, reconstructed) in enumerate(grid):
            axes[i, 0].imshow(mask, cmap="gray")
            axes[i, 0].axis("off")
            axes[i, 0].set_title("Mask")

            axes[i, 1].imshow(reconstructed, cmap="gray")
            axes[i, 1].axis("off")
            axes[i, 1].set_title("Reconstructed")

        plt.tight_layout()
        plt.savefig(f"result_{trainer.clock.epoch}.png")  # type: ignore
        plt.close()

    @register_callback()
    def logging(self, config: CallbackConfig) -> LoggingCallback:
        return LoggingCallback()


trainer = AutoencoderTrainer(config)

trainer.train()
