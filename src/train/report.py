"""`python -m train.report <run or sweep directory>`: re-render the plots and the summary from saved metrics.

It reads only what runs leave on disk (the metrics file, ``result.json``, the resolved config), so it works
for runs that are still going and for runs that were killed: their metrics file is flushed row by row.

- a run directory: redraws ``curves.png`` and prints a one-row summary table;
- a sweep directory (numbered job folders): redraws each job's ``curves.png`` when its metrics are newer,
  rewrites ``summary.csv``, ``summary.md`` and ``comparison.png``, and prints the summary table.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from train.app.sweep_summary import (
    COMPARISON_PLOT,
    SUMMARY_MD,
    job_dirs,
    metrics_file_of,
    read_run,
    table_rows,
    to_markdown,
    write_summary,
)
from train.callbacks.metrics_file import read_metrics
from train.callbacks.step_logger import run_label

CURVES_FILE = "curves.png"


def _is_run(directory: Path) -> bool:
    return metrics_file_of(directory).is_file() or (directory / "result.json").is_file()


def render_run_curves(run_dir: Path, *, only_if_stale: bool = False) -> Path | None:
    """Draw ``<run_dir>/curves.png`` from the run's metrics file; None if there is no metrics file."""
    from train.plots import render_curves  # matplotlib loads only here

    source, target = metrics_file_of(run_dir), run_dir / CURVES_FILE
    if not source.is_file():
        return None
    if only_if_stale and target.is_file() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    return render_curves(read_metrics(source), target, title=run_label(run_dir))


def report_run(run_dir: Path, *, plots: bool = True) -> str:
    record = read_run(run_dir)
    markdown = to_markdown(table_rows([record], name_of="run"))
    lines = [f"Run {run_dir}", "", markdown.rstrip("\n")]
    if plots:
        curves = render_run_curves(run_dir)
        lines += ["", f"curves: {curves}" if curves else f"no metrics file ({metrics_file_of(run_dir)}): no curves"]
    return "\n".join(lines) + "\n"


def report_sweep(sweep_dir: Path, *, plots: bool = True) -> str:
    if plots:
        for job in job_dirs(sweep_dir):
            render_run_curves(job, only_if_stale=True)
    rows, comparison = write_summary(sweep_dir, plot=plots)
    lines = [f"Sweep {sweep_dir}: {len(rows)} jobs", "", to_markdown(rows).rstrip("\n"), ""]
    lines.append(f"summary: {sweep_dir / SUMMARY_MD}")
    if plots:
        lines.append(f"comparison: {comparison}" if comparison else f"no {COMPARISON_PLOT} drawn")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train.report",
        description="Re-render the plots and summary of a run or sweep directory from its saved metrics, "
        "and print the summary table. Works on runs still going and on killed ones.",
    )
    parser.add_argument("directory", type=Path, help="a run directory, or a sweep directory of numbered jobs")
    parser.add_argument("--no-plots", action="store_true", help="only the summary table, no PNG")
    args = parser.parse_args(argv)
    directory: Path = args.directory
    plots = not args.no_plots
    if not directory.is_dir():
        print(f"error: {directory} is not a directory", file=sys.stderr)
        return 2
    if job_dirs(directory):
        report = report_sweep(directory, plots=plots)
    elif _is_run(directory):
        report = report_run(directory, plots=plots)
    else:
        print(
            f"error: {directory} holds neither a run (no {metrics_file_of(directory).name}, no result.json) "
            "nor a sweep (no numbered job folders)",
            file=sys.stderr,
        )
        return 2
    print(report, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
