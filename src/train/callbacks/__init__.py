"""Built-in callbacks. Each is an ordinary :class:`train.Callback`; the loop never special-cases one.

Importing them is cheap: the heavy packages (matplotlib, tensorboard, mlflow) load inside the callback
that needs them, when it first does.
"""

from train.callbacks.checkpoint import Checkpointing
from train.callbacks.curves import Curves
from train.callbacks.early_stopping import EarlyStopping
from train.callbacks.metrics_file import MetricsFile
from train.callbacks.mlflow_tracker import MLflowLogger
from train.callbacks.progress import ProgressBar
from train.callbacks.step_logger import StepLogger, StepRow
from train.callbacks.tensorboard import TensorBoardLogger

__all__ = [
    "Checkpointing",
    "Curves",
    "EarlyStopping",
    "MLflowLogger",
    "MetricsFile",
    "ProgressBar",
    "StepLogger",
    "StepRow",
    "TensorBoardLogger",
]
