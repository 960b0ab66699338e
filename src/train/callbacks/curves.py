"""At the end of a run, plot its metrics file as ``curves.png`` (see :func:`train.plots.render_curves`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loguru import logger

from train.callback import Callback
from train.callbacks.metrics_file import DEFAULT_FILENAME, MetricsFile, read_metrics
from train.callbacks.step_logger import run_label


class Curves(Callback[Any]):
    """Draws ``<run_dir>/<filename>`` from the run's metrics file when training ends.

    The metrics file is the one a :class:`MetricsFile` callback of the trainer writes, else
    ``<run_dir>/<metrics_filename>``: plotting the file (not numbers held in memory) draws a resumed run
    whole, and ``python -m train.report`` redraws the same picture for a run that is still going.
    In distributed training only rank 0 draws.
    """

    main_process_only = True

    def __init__(self, filename: str = "curves.png", metrics_filename: str = DEFAULT_FILENAME) -> None:
        self.filename = filename
        self.metrics_filename = metrics_filename

    def metrics_path(self, trainer: Any) -> Path:
        for callback in trainer.callbacks.values():
            if isinstance(callback, MetricsFile) and callback.path is not None:
                return callback.path
        return Path(trainer.run_dir) / self.metrics_filename

    def on_train_end(self, trainer: Any) -> None:
        source = self.metrics_path(trainer)
        if not source.is_file():
            logger.warning(f"No curves drawn: there is no metrics file {source} (add the MetricsFile callback)")
            return
        from train.plots import render_curves  # matplotlib loads only when a plot is drawn

        run_dir = Path(trainer.run_dir)
        path = render_curves(read_metrics(source), run_dir / self.filename, title=run_label(run_dir))
        logger.info(f"Training curves: {path}")
