"""After a multirun: one table of every job's overrides, status and final metrics (CSV, Markdown, printed),
and a comparison plot of the jobs (their loss curves overlaid, the final metric of each).

It reads what each job directory holds (``result.json``, the metrics file, the resolved config), so it works
the same whether jobs ran in this process, in joblib workers or as submitit/SLURM jobs, and
``python -m train.report`` re-renders it all for a sweep that is still going or was killed.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from hydra.experimental.callback import Callback as HydraCallback
from loguru import logger
from omegaconf import DictConfig, OmegaConf

from train.app.run_files import RESOLVED_CONFIG_FILE, JobResult
from train.callbacks.metrics_file import DEFAULT_FILENAME, MetricsLog, read_metrics
from train.callbacks.step_logger import run_label
from train.files import atomic_write_text

SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
COMPARISON_PLOT = "comparison.png"
INCOMPLETE = "incomplete"
"""The status of a job with metrics but no ``result.json``: still running, or killed."""

_failed: list[str] = []


def reset() -> None:
    _failed.clear()


def failed_jobs() -> list[str]:
    """Job directories whose run failed or left no result, from the last multirun in this process."""
    return list(_failed)


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The numbered job directories of a sweep, in job order."""
    numbered = [path for path in sweep_dir.iterdir() if path.is_dir() and path.name.isdigit()]
    return sorted(numbered, key=lambda path: int(path.name))


def _resolved_config(run_dir: Path) -> DictConfig | None:
    path = run_dir / RESOLVED_CONFIG_FILE
    if not path.is_file():
        return None
    try:
        loaded = OmegaConf.load(path)
    except Exception:  # a config half-written by a killed job is no reason to fail the report
        return None
    return loaded if isinstance(loaded, DictConfig) else None


def metrics_file_of(run_dir: Path) -> Path:
    """The run's metrics file: its MetricsFile callback's ``filename`` in the resolved config, else the default."""
    config = _resolved_config(run_dir)
    callbacks = config.get("callbacks") if config is not None else None
    if isinstance(callbacks, DictConfig):
        for entry in callbacks.values():
            if isinstance(entry, DictConfig) and str(entry.get("_target_", "")).endswith("MetricsFile"):
                return run_dir / str(entry.get("filename", DEFAULT_FILENAME))
    return run_dir / DEFAULT_FILENAME


def _saved_overrides(run_dir: Path) -> list[str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    try:
        return [str(item) for item in cast(list[Any], OmegaConf.to_container(OmegaConf.load(path)))]
    except Exception:
        return []


@dataclass(frozen=True)
class RunRecord:
    """What the summary and the plots need of one run directory."""

    path: Path
    result: JobResult | None
    log: MetricsLog
    overrides: list[str]

    @property
    def status(self) -> str:
        if self.result is not None:
            return self.result.status
        return INCOMPLETE if self.log.steps or self.log.evaluations else "missing"

    @property
    def metrics(self) -> dict[str, float]:
        """The final metrics; for a run that did not finish, those of its last evaluation."""
        if self.result is None or (self.result.status == "interrupted" and not self.result.metrics):
            return self.log.last_evaluation()
        return self.result.metrics

    @property
    def steps(self) -> int | None:
        if self.result is not None:
            return self.result.steps
        return int(self.log.steps[-1]["step"]) if self.log.steps else None

    @property
    def seconds(self) -> float | None:
        if self.result is not None:
            return self.result.elapsed_seconds
        rows = [*self.log.steps[-1:], *self.log.evaluations[-1:]]
        return max(float(row.get("time") or 0.0) for row in rows) if rows else None

    @property
    def error(self) -> str:
        if self.result is not None:
            return self.result.error or ""
        if self.status == INCOMPLETE:
            return "no result.json: the job is still running, or it was killed"
        return "no result.json: the job died or never started"


def read_run(run_dir: Path) -> RunRecord:
    result = JobResult.read(run_dir)
    overrides = list(result.overrides) if result is not None else _saved_overrides(run_dir)
    return RunRecord(run_dir, result, read_metrics(metrics_file_of(run_dir)), overrides)


def table_rows(records: list[RunRecord], *, name_of: str = "job") -> list[dict[str, str]]:
    """One row per run; ``overrides`` lists only those that differ between runs (the swept ones)."""
    metric_names = sorted({name for record in records for name in record.metrics})
    override_sets = [set(record.overrides) for record in records if record.result or record.overrides]
    shared = set.intersection(*override_sets) if len(override_sets) > 1 else set[str]()
    rows: list[dict[str, str]] = []
    for record in records:
        row = {name_of: record.path.name, "status": record.status}
        row["overrides"] = " ".join(o for o in record.overrides if o not in shared)
        metrics = record.metrics
        for name in metric_names:
            value = metrics.get(name)
            row[name] = "" if value is None else f"{value:.6g}"
        row["steps"] = "" if record.steps is None else str(record.steps)
        row["seconds"] = "" if record.seconds is None else f"{record.seconds:.1f}"
        row["error"] = record.error
        rows.append(row)
    return rows


def summary_rows(sweep_dir: Path) -> list[dict[str, str]]:
    """One row per job of the sweep in ``sweep_dir``."""
    return table_rows([read_run(path) for path in job_dirs(sweep_dir)])


def to_csv(rows: list[dict[str, str]]) -> str:
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def to_markdown(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "(no jobs)\n"
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(row[column].replace("|", "\\|") for column in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def objective(records: list[RunRecord]) -> tuple[str | None, str]:
    """(metric, mode) the jobs are compared by: the experiment's, else the first evaluation metric."""
    for record in records:
        config = _resolved_config(record.path)
        experiment = config.get("experiment") if config is not None else None
        if isinstance(experiment, DictConfig) and experiment.get("metric"):
            return str(experiment.metric), str(experiment.get("mode", "max"))
    for record in records:
        if record.result is not None and record.result.objective:
            return record.result.objective, "max"
    names = sorted({name for record in records for name in record.metrics})
    return (names[0] if names else None), "max"


def write_comparison(sweep_dir: Path, records: list[RunRecord], rows: list[dict[str, str]]) -> Path:
    """Draw ``comparison.png`` in ``sweep_dir``: loss curves overlaid, the final metric of each job."""
    from train.plots import JobCurves, render_comparison  # matplotlib loads only here

    metric, mode = objective(records)
    jobs: list[JobCurves] = []
    for record, row in zip(records, rows, strict=True):
        value = record.metrics.get(metric) if metric else None
        label = f"{record.path.name}: {row['overrides']}" if row["overrides"] else record.path.name
        jobs.append(JobCurves(label, record.log, value if value is None or math.isfinite(value) else None))
    return render_comparison(jobs, sweep_dir / COMPARISON_PLOT, metric=metric, mode=mode, title=run_label(sweep_dir))


def write_summary(sweep_dir: Path, *, plot: bool = True) -> tuple[list[dict[str, str]], Path | None]:
    """Write summary.csv, summary.md and (``plot``) comparison.png into ``sweep_dir``; returns the rows and plot.

    A plot that cannot be drawn is logged, not raised: the tables are what a sweep must leave behind.
    """
    records = [read_run(path) for path in job_dirs(sweep_dir)]
    rows = table_rows(records)
    atomic_write_text(sweep_dir / SUMMARY_CSV, to_csv(rows))
    atomic_write_text(sweep_dir / SUMMARY_MD, to_markdown(rows))
    if not plot or not records:
        return rows, None
    try:
        return rows, write_comparison(sweep_dir, records, rows)
    except Exception as error:
        logger.opt(exception=error).warning(f"Could not draw the sweep's comparison plot: {error}")
        return rows, None


class SweepSummary(HydraCallback):
    """Hydra callback (see ``hydra.callbacks`` in conf/train.yaml) that writes the summary at multirun end."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows, plot = write_summary(sweep_dir)
        markdown = to_markdown(rows)
        _failed.extend(row["job"] for row in rows if row["status"] != "completed")
        failed = f", {len(_failed)} failed" if _failed else ""
        logger.info(f"Sweep of {len(rows)} jobs{failed}; summary in {sweep_dir / SUMMARY_MD}:\n{markdown}")
        if plot is not None:
            logger.info(f"Comparison of the jobs: {plot}")
