"""Training the autoencoder: BCE reconstruction loss; validation loss, IoU and a reconstruction grid."""

from __future__ import annotations

from functools import cached_property

import torch
from loguru import logger
from PIL import Image
from torch.nn import functional as F

from train import BaseConfig, Trainer
from train.examples.autoencoder.data import Batch, RectangleMasks, collate
from train.examples.autoencoder.model import Autoencoder
from train.utils import tensor_to_image


class AutoencoderConfig(BaseConfig):
    """Data options of the experiment; the model itself is registered under the name ``autoencoder``."""

    image_size: int = 64
    epoch_size: int = 2048
    data_seed: int = 0
    validation_size: int = 128
    validation_seed: int = 1_000_003  # a stream disjoint from the training masks'
    grid_rows: int = 4
    """How many validation masks the saved evaluation grid shows."""


def intersection_over_union(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image IoU of two binary [N, 1, H, W] masks; an empty union counts as a perfect match."""
    prediction, target = prediction.bool().flatten(1), target.bool().flatten(1)
    intersection = (prediction & target).sum(dim=1).float()
    union = (prediction | target).sum(dim=1).float()
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))


class AutoencoderTrainer(Trainer[AutoencoderConfig, Batch]):
    """Reconstruct rectangle masks. The model comes from a factory (or decorator) named ``autoencoder``."""

    @property
    def autoencoder(self) -> Autoencoder:
        return self.get_model("autoencoder", Autoencoder)

    @cached_property
    def masks(self) -> RectangleMasks:
        return RectangleMasks(self.config.image_size, self.config.epoch_size, self.config.data_seed)

    @cached_property
    def validation_masks(self) -> torch.Tensor:
        c = self.config
        masks = RectangleMasks(c.image_size, c.validation_size, c.validation_seed)
        return collate([masks[i] for i in range(len(masks))]).image

    def get_item(self, index: int) -> Batch:
        return self.masks[index]

    def collate_fn(self, batch: list[Batch]) -> Batch:
        return collate(batch)

    @property
    def dataset_length(self) -> int:
        return self.config.epoch_size

    def compute_loss(self, batch: Batch) -> torch.Tensor:
        image = batch.image.to(self.dtype)
        # BCE in float32 even under training.amp: autocast refuses it in half precision (log near 0 and 1).
        return F.binary_cross_entropy(self.autoencoder(image).float(), image.float())

    def compute_evaluation(self) -> dict[str, float]:
        losses: list[torch.Tensor] = []
        ious: list[torch.Tensor] = []
        reconstructions: list[torch.Tensor] = []
        for masks in self.validation_masks.split(self.config.training.batch_size):
            masks = masks.to(self.device, self.dtype)
            reconstruction = self.autoencoder(masks).float()
            losses.append(F.binary_cross_entropy(reconstruction, masks.float(), reduction="none").mean(dim=(1, 2, 3)))
            ious.append(intersection_over_union(reconstruction > 0.5, masks > 0.5))
            reconstructions.append(reconstruction)
        metrics = {"val_loss": torch.cat(losses).mean().item(), "iou": torch.cat(ious).mean().item()}
        logger.info(
            f"Evaluation at step {self.clock.step} (epoch {self.clock.epoch}): "
            f"val_loss={metrics['val_loss']:.4f} iou={metrics['iou']:.4f}"
        )
        if self.is_main_process:  # under torchrun every rank evaluates; one writes the picture
            self._save_grid(torch.cat(reconstructions)[: self.config.grid_rows])
        return metrics

    def _save_grid(self, reconstructions: torch.Tensor) -> None:
        """Save masks (left) beside thresholded reconstructions (right), one validation mask a row."""
        rows = len(reconstructions)
        if rows == 0:
            return
        masks = self.validation_masks[:rows]
        size, gap = self.config.image_size, 2
        grid = Image.new("L", (2 * size + gap, rows * size + (rows - 1) * gap), color=128)
        for row in range(rows):
            top = row * (size + gap)
            grid.paste(tensor_to_image(masks[row]), (0, top))
            grid.paste(tensor_to_image((reconstructions[row] > 0.5).float()), (size + gap, top))
        directory = self.run_dir / "evaluations"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"step_{self.clock.step:07d}.png"
        temporary = path.with_name(f".{path.name}.tmp")
        grid.resize((grid.width * 2, grid.height * 2), Image.Resampling.NEAREST).save(temporary, format="PNG")
        temporary.replace(path)
