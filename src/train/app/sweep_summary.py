"""After a multirun: one table of every job's overrides, status and final metrics (CSV, Markdown, printed).

It reads each job directory's ``result.json``, so it works the same whether jobs ran in this process,
in joblib workers or as submitit/SLURM jobs.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback as HydraCallback
from loguru import logger
from omegaconf import DictConfig

from train.app.run_files import JobResult
from train.files import atomic_write_text

_failed: list[str] = []


def reset() -> None:
    _failed.clear()


def failed_jobs() -> list[str]:
    """Job directories whose run failed or left no result, from the last multirun in this process."""
    return list(_failed)


def _job_dirs(sweep_dir: Path) -> list[Path]:
    numbered = [path for path in sweep_dir.iterdir() if path.is_dir() and path.name.isdigit()]
    return sorted(numbered, key=lambda path: int(path.name))


def summary_rows(sweep_dir: Path) -> list[dict[str, str]]:
    """One row per job; ``overrides`` lists only those that differ between jobs (the swept ones)."""
    results = {path: JobResult.read(path) for path in _job_dirs(sweep_dir)}
    metric_names = sorted({name for result in results.values() if result for name in result.metrics})
    override_sets = [set(result.overrides) for result in results.values() if result]
    shared = set.intersection(*override_sets) if len(override_sets) > 1 else set[str]()
    rows: list[dict[str, str]] = []
    for path, result in results.items():
        row = {"job": path.name, "status": result.status if result else "missing"}
        row["overrides"] = " ".join(o for o in result.overrides if o not in shared) if result else ""
        for name in metric_names:
            value = result.metrics.get(name) if result else None
            row[name] = "" if value is None else f"{value:.6g}"
        row["steps"] = str(result.steps) if result else ""
        row["seconds"] = f"{result.elapsed_seconds:.1f}" if result else ""
        row["error"] = (result.error or "") if result else "no result.json: the job died or never started"
        rows.append(row)
    return rows


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


class SweepSummary(HydraCallback):
    """Hydra callback (see ``hydra.callbacks`` in conf/train.yaml) that writes the summary at multirun end."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = summary_rows(sweep_dir)
        atomic_write_text(sweep_dir / "summary.csv", to_csv(rows))
        markdown = to_markdown(rows)
        atomic_write_text(sweep_dir / "summary.md", markdown)
        _failed.extend(row["job"] for row in rows if row["status"] != "completed")
        failed = f", {len(_failed)} failed" if _failed else ""
        logger.info(f"Sweep of {len(rows)} jobs{failed}; summary in {sweep_dir / 'summary.md'}:\n{markdown}")
