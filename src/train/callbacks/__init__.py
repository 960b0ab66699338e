"""Built-in callbacks. Each is an ordinary :class:`train.Callback`; the loop never special-cases one."""

from train.callbacks.metrics_file import MetricsFile

__all__ = ["MetricsFile"]
