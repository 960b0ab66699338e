"""Write TensorBoard event files into the run directory: training scalars, evaluation metrics and images."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from train.callbacks.step_logger import StepLogger, StepRow, require

if TYPE_CHECKING:
    from torch.utils.tensorboard.writer import SummaryWriter


class TensorBoardLogger(StepLogger):
    """Scalars ``train/*`` every ``every_n_steps`` steps and ``evaluation/<metric>`` at each evaluation.

    Events go to ``<run_dir>/<log_dir>`` (the run directory itself by default, so ``tensorboard --logdir
    outputs`` lists each run under its own name). Each PNG that appears in ``<run_dir>/<images_dir>`` during
    an evaluation (the example's reconstruction grid) is added as an image at that step. A resumed run
    drops the events its previous attempt wrote after the step it resumes from.
    """

    def __init__(
        self,
        log_dir: str = "",
        every_n_steps: int = 1,
        grad_norm: bool = True,
        images_dir: str | None = "evaluations",
        flush_seconds: float = 30.0,
    ) -> None:
        super().__init__(every_n_steps=every_n_steps, grad_norm=grad_norm)
        require("tensorboard", type(self).__name__)
        self.log_dir = log_dir
        self.images_dir = images_dir
        self.flush_seconds = flush_seconds
        self.writer: SummaryWriter | None = None
        self._images_seen: set[Path] = set()

    def _images(self, trainer: Any) -> list[Path]:
        if not self.images_dir:
            return []
        return sorted((Path(trainer.run_dir) / self.images_dir).glob("*.png"))

    def open(self, trainer: Any) -> None:
        from torch.utils.tensorboard.writer import SummaryWriter

        step = trainer.clock.step
        self.writer = SummaryWriter(
            str(Path(trainer.run_dir) / self.log_dir),
            # A run resumed after step N logs N+1 first: what an earlier attempt logged from there is dropped.
            purge_step=step + 1 if step > 0 else None,
            flush_secs=int(self.flush_seconds),
        )
        self._images_seen = set(self._images(trainer))  # earlier ones were logged by an earlier attempt
        config_object: object = trainer.config
        if step == 0 and dataclasses.is_dataclass(config_object) and not isinstance(config_object, type):
            config = json.dumps(dataclasses.asdict(config_object), indent=2, default=str)
            self.writer.add_text("config", f"```\n{config}\n```", 0)

    def write_step(self, trainer: Any, row: StepRow) -> None:
        if self.writer is None:
            return
        for tag, value in row.scalars().items():
            self.writer.add_scalar(tag, value, row.step)

    def write_evaluation(self, trainer: Any, metrics: dict[str, float]) -> None:
        if self.writer is None:
            return
        step = trainer.clock.step
        for name, value in metrics.items():
            if math.isfinite(value):
                self.writer.add_scalar(f"evaluation/{name}", value, step)
        new = [path for path in self._images(trainer) if path not in self._images_seen]
        for path in new:
            tag = self.images_dir if len(new) == 1 else f"{self.images_dir}/{path.stem}"
            pixels, dataformats = _image_array(path)
            self.writer.add_image(str(tag), pixels, global_step=step, dataformats=dataformats)
            self._images_seen.add(path)
        self.writer.flush()  # evaluations are rare and worth seeing at once

    def close(self, trainer: Any) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _image_array(path: Path) -> tuple[Any, str]:
    """(pixels, dataformats) for ``SummaryWriter.add_image``: uint8 HW for grayscale, HWC for color."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        if image.mode == "L":
            return np.asarray(image), "HW"
        return np.asarray(image.convert("RGB")), "HWC"
