"""The guide's autoencoder: residual conv blocks, three 2x downsamplings, a 256-d bottleneck, and back."""

from __future__ import annotations

from train import layers as fl


class ConvBlock(fl.Chain):
    """Depthwise-ish 3x3 conv then pointwise 1x1 conv, each followed by channel LayerNorm and SiLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            fl.Conv2d(
                in_channels=in_channels,
                out_channels=out_channels,
                kernel_size=3,
                padding=1,
                groups=min(in_channels, out_channels),
            ),
            fl.LayerNorm2d(out_channels),
            fl.SiLU(),
            fl.Conv2d(in_channels=out_channels, out_channels=out_channels, kernel_size=1),
            fl.LayerNorm2d(out_channels),
            fl.SiLU(),
        )


class ResidualBlock(fl.Sum):
    """A ConvBlock plus a 3x3 conv shortcut (which also adapts the channel count)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            ConvBlock(in_channels=in_channels, out_channels=out_channels),
            fl.Conv2d(in_channels=in_channels, out_channels=out_channels, kernel_size=3, padding=1),
        )


def _bottleneck_size(image_size: int, channels: tuple[int, int, int]) -> int:
    if image_size % 8:
        raise ValueError(f"image_size={image_size} is invalid: expected a multiple of 8 (three 2x downsamplings)")
    return channels[2] * (image_size // 8) ** 2


class Encoder(fl.Chain):
    """[N, 1, S, S] -> [N, latent_dim]."""

    def __init__(self, image_size: int = 64, latent_dim: int = 256, channels: tuple[int, int, int] = (8, 16, 32)):
        c1, c2, c3 = channels
        super().__init__(
            ResidualBlock(in_channels=1, out_channels=c1),
            fl.Downsample(channels=c1, scale_factor=2, register_shape=False),
            ResidualBlock(in_channels=c1, out_channels=c2),
            fl.Downsample(channels=c2, scale_factor=2, register_shape=False),
            ResidualBlock(in_channels=c2, out_channels=c3),
            fl.Downsample(channels=c3, scale_factor=2, register_shape=False),
            fl.Reshape(_bottleneck_size(image_size, channels)),
            fl.Linear(in_features=_bottleneck_size(image_size, channels), out_features=latent_dim),
            fl.SiLU(),
            fl.Linear(in_features=latent_dim, out_features=latent_dim),
        )


class Decoder(fl.Chain):
    """[N, latent_dim] -> [N, 1, S, S] probabilities."""

    def __init__(self, image_size: int = 64, latent_dim: int = 256, channels: tuple[int, int, int] = (8, 16, 32)):
        c1, c2, c3 = channels
        side = image_size // 8
        super().__init__(
            fl.Linear(in_features=latent_dim, out_features=latent_dim),
            fl.SiLU(),
            fl.Linear(in_features=latent_dim, out_features=_bottleneck_size(image_size, channels)),
            fl.Reshape(c3, side, side),
            ResidualBlock(in_channels=c3, out_channels=c3),
            ResidualBlock(in_channels=c3, out_channels=c3),
            fl.Upsample(channels=c3, upsample_factor=2),
            ResidualBlock(in_channels=c3, out_channels=c2),
            ResidualBlock(in_channels=c2, out_channels=c2),
            fl.Upsample(channels=c2, upsample_factor=2),
            ResidualBlock(in_channels=c2, out_channels=c1),
            ResidualBlock(in_channels=c1, out_channels=c1),
            fl.Upsample(channels=c1, upsample_factor=2),
            ResidualBlock(in_channels=c1, out_channels=c1),
            ResidualBlock(in_channels=c1, out_channels=1),
            fl.Sigmoid(),
        )


class Autoencoder(fl.Chain):
    """Encoder then decoder; the defaults are the guide's 64x64 model (x16 compression)."""

    def __init__(self, image_size: int = 64, latent_dim: int = 256, channels: tuple[int, int, int] = (8, 16, 32)):
        channels = (int(channels[0]), int(channels[1]), int(channels[2]))  # Hydra may pass a list
        super().__init__(Encoder(image_size, latent_dim, channels), Decoder(image_size, latent_dim, channels))

    @property
    def encoder(self) -> Encoder:
        return self.ensure_find(Encoder)

    @property
    def decoder(self) -> Decoder:
        return self.ensure_find(Decoder)
