"""Plots of saved metrics: one run's training curves, and a comparison of a sweep's jobs.

Used by the curves callback, the sweep summary and ``python -m train.report``, so a re-rendered plot looks
exactly like the one the run drew. matplotlib is imported inside the functions (it is slow to import) and
figures are drawn by its Agg renderer without pyplot, so nothing global (the backend, open figures) changes.
Every image has a fixed size in pixels, whatever the data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from train.callbacks.metrics_file import MetricsLog
from train.files import atomic_path

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 100
CURVES_SIZE = (1000, 800)
"""Width and height of ``curves.png`` in pixels."""
COMPARISON_SIZE = (1400, 600)
"""Width and height of a sweep's ``comparison.png`` in pixels."""
MAX_LEGEND_ENTRIES = 20


@dataclass(frozen=True)
class JobCurves:
    """One job of a sweep as the comparison plot shows it."""

    label: str
    log: MetricsLog
    final: float | None
    """The job's final value of the compared metric (None: it has none)."""


def smooth(values: Sequence[float]) -> list[float]:
    """An exponential moving average over about 1/25 of the points, debiased at the start (as TensorBoard's)."""
    window = max(1, len(values) // 25)
    if window == 1:
        return list(values)
    alpha = 2.0 / (window + 1)
    smoothed: list[float] = []
    average, weight = 0.0, 0.0
    for value in values:
        average = (1 - alpha) * average + alpha * value
        weight = (1 - alpha) * weight + alpha
        smoothed.append(average / weight)
    return smoothed


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of the rows where ``key`` holds a finite number."""
    steps: list[int] = []
    values: list[float] = []
    for row in rows:
        value = row.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            steps.append(int(row["step"]))
            values.append(float(value))
    return steps, values


def _learning_rates(log: MetricsLog) -> list[tuple[list[int], list[float]]]:
    """One (steps, rates) series per parameter group."""
    groups: list[tuple[list[int], list[float]]] = []
    for row in log.steps:
        rates = row.get("lr")
        if not isinstance(rates, list):
            continue
        for index, rate in enumerate(rates):  # pyright: ignore[reportUnknownVariableType]
            if not isinstance(rate, int | float):
                continue
            while len(groups) <= index:
                groups.append(([], []))
            groups[index][0].append(int(row["step"]))
            groups[index][1].append(float(rate))
    return groups


def _new_figure(size: tuple[int, int]) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained")


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=DPI)  # no bbox_inches="tight": the size stays fixed
    return path


def _plot_loss(axes: Axes, steps: list[int], losses: list[float], *, label: str = "training loss") -> None:
    if len(losses) > 50:  # the raw curve faintly, the trend on top
        line = axes.plot(steps, losses, linewidth=0.8, alpha=0.3)[0]
        axes.plot(steps, smooth(losses), color=line.get_color(), linewidth=1.6, label=f"{label} (smoothed)")
    else:
        axes.plot(steps, losses, linewidth=1.4, marker="." if len(losses) < 20 else None, label=label)


def _no_data(axes: Axes, text: str) -> None:
    axes.text(0.5, 0.5, text, transform=axes.transAxes, ha="center", va="center", color="gray")


def render_curves(log: MetricsLog, path: str | Path, *, title: str = "") -> Path:
    """Training loss and evaluation metrics against step, the learning rate beneath; saved as a PNG."""
    from matplotlib.ticker import MaxNLocator

    evaluation_names = log.evaluation_names
    loss_like = [name for name in evaluation_names if "loss" in name.lower()]
    others = [name for name in evaluation_names if name not in loss_like]
    figure = _new_figure(CURVES_SIZE)
    ratios = [3.0, 2.0, 1.2] if others else [3.0, 1.2]
    axes_list = figure.subplots(len(ratios), 1, sharex=True, height_ratios=ratios, squeeze=False)[:, 0]
    loss_axes, lr_axes = axes_list[0], axes_list[-1]
    if title:
        figure.suptitle(title)

    steps, losses = _series(log.steps, "loss")
    if losses:
        _plot_loss(loss_axes, steps, losses)
    for name in loss_like:  # evaluation losses share the training loss's scale
        loss_axes.plot(*_series(log.evaluations, name), marker="o", linewidth=1.4, label=f"{name} (evaluation)")
    if losses or loss_like:
        loss_axes.legend(loc="upper right", fontsize="small")
    else:
        _no_data(loss_axes, "no training steps logged yet")
    loss_axes.set_ylabel("loss")
    loss_axes.grid(alpha=0.3)

    if others:
        metric_axes = axes_list[1]
        for name in others:
            metric_axes.plot(*_series(log.evaluations, name), marker="o", linewidth=1.4, label=name)
        metric_axes.legend(loc="best", fontsize="small")
        metric_axes.set_ylabel("evaluation")
        metric_axes.grid(alpha=0.3)

    groups = _learning_rates(log)
    for index, (lr_steps, rates) in enumerate(groups):
        lr_axes.plot(lr_steps, rates, linewidth=1.4, label=f"group {index}")
    if len(groups) > 1:
        lr_axes.legend(loc="best", fontsize="small")
    positive = [rate for _, rates in groups for rate in rates if rate > 0]
    if positive and max(positive) / min(positive) > 100:
        lr_axes.set_yscale("log")
    if not groups:
        _no_data(lr_axes, "no learning rate logged yet")
    lr_axes.set_ylabel("learning rate")
    lr_axes.set_xlabel("step")
    lr_axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    lr_axes.grid(alpha=0.3)
    return _save(figure, path)


def render_comparison(
    jobs: Sequence[JobCurves], path: str | Path, *, metric: str | None, mode: str = "max", title: str = ""
) -> Path:
    """A sweep's training-loss curves overlaid (left) and each job's final ``metric`` (right); a PNG."""
    from matplotlib.ticker import MaxNLocator

    figure = _new_figure(COMPARISON_SIZE)
    curves_axes, bars_axes = figure.subplots(1, 2, width_ratios=[3, 2])
    if title:
        figure.suptitle(title)

    plotted = 0
    for job in jobs:
        steps, losses = _series(job.log.steps, "loss")
        if not losses:
            continue
        label = job.label if plotted < MAX_LEGEND_ENTRIES else None
        curves_axes.plot(steps, smooth(losses), linewidth=1.4, label=label)
        plotted += 1
    if plotted:
        curves_axes.legend(loc="upper right", fontsize="small")
    else:
        _no_data(curves_axes, "no training steps logged")
    curves_axes.set_title("training loss" + (" (smoothed)" if any(len(j.log.steps) > 25 for j in jobs) else ""))
    curves_axes.set_xlabel("step")
    curves_axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    curves_axes.set_ylabel("loss")
    curves_axes.grid(alpha=0.3)

    labels = [job.label for job in jobs]
    values = [job.final if job.final is not None and math.isfinite(job.final) else math.nan for job in jobs]
    finite = [value for value in values if not math.isnan(value)]
    best = (max(finite) if mode == "max" else min(finite)) if finite else None
    colors = ["tab:green" if best is not None and value == best else "tab:blue" for value in values]
    positions = list(range(len(jobs)))
    bars_axes.barh(positions, [0.0 if math.isnan(v) else v for v in values], color=colors)
    for position, value in zip(positions, values, strict=True):
        end = 0.0 if math.isnan(value) else value
        text = "no value" if math.isnan(value) else f"{value:.4g}"
        bars_axes.text(end, position, f" {text} ", va="center", ha="left" if end >= 0 else "right", fontsize="small")
    if finite:  # room for the value beside the longest bar
        low, high = min(0.0, *finite), max(0.0, *finite)
        margin = 0.2 * ((high - low) or 1.0)
        bars_axes.set_xlim(low - (margin if low < 0 else 0.0), high + (margin if high > 0 else 0.0))
    bars_axes.set_yticks(positions, labels=[_shorten(label) for label in labels], fontsize="small")
    bars_axes.invert_yaxis()  # job 0 on top, as in the summary table
    direction = "higher" if mode == "max" else "lower"
    bars_axes.set_title(f"final {metric} ({direction} is better)" if metric else "final metric")
    bars_axes.grid(axis="x", alpha=0.3)
    if not jobs:
        _no_data(bars_axes, "no jobs")
    return _save(figure, path)


def _shorten(label: str, limit: int = 48) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"
