"""The default experiment: the guide's convolutional autoencoder on synthetic rectangle masks."""

from train.examples.autoencoder.data import Batch, RectangleMasks, collate, rectangle_mask
from train.examples.autoencoder.model import Autoencoder, Decoder, Encoder
from train.examples.autoencoder.trainer import AutoencoderConfig, AutoencoderTrainer, intersection_over_union

__all__ = [
    "Autoencoder",
    "AutoencoderConfig",
    "AutoencoderTrainer",
    "Batch",
    "Decoder",
    "Encoder",
    "RectangleMasks",
    "collate",
    "intersection_over_union",
    "rectangle_mask",
]
