"""Time to quality: wall-clock seconds until the default experiment reaches validation IoU >= 0.90.

Runs `python -m train` as a user would (our defaults, evaluating after every epoch), then the reference
guide's settings (batch 32, AdamW at a constant learning rate of 1e-4, no clipping) the same way for
twice as many epochs, and reads the evaluation rows of each run's metrics.jsonl (`time` = seconds of
training so far, evaluations included). Target: our defaults reach IoU 0.90 within 180 s on a 2-core
CPU machine. Also prints each run's whole wall time (start-up and end-of-run files included) and its
peak resident memory.

    python benchmarks/time_to_quality.py [--threshold 0.9] [--guide-epochs 24]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def guide_settings(epochs: int) -> list[str]:
    return [
        "training.batch_size=32",
        "optimizer.learning_rate=1e-4",
        "optimizer.weight_decay=0",
        "lr_scheduler=constant",
        "training.gradient_clipping_max_norm=null",
        f"training.duration={epochs}:epoch",
    ]


def run(label: str, overrides: list[str], threshold: float) -> None:
    print(f"{label}: python -m train {' '.join(overrides)}".rstrip())
    with tempfile.TemporaryDirectory() as cwd:
        log = Path(cwd) / "stderr.txt"
        started = time.perf_counter()
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "train", *overrides], cwd=cwd, stdout=stderr, stderr=stderr
            )
            _, status, usage = os.wait4(process.pid, 0)  # this child's own peak memory, unlike RUSAGE_CHILDREN
        wall = time.perf_counter() - started
        if status != 0:
            raise SystemExit(f"the run failed (wait status {status}):\n{log.read_text()[-2000:]}")
        (metrics,) = Path(cwd).glob("outputs/autoencoder/*/metrics.jsonl")
        rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    evaluations = [row for row in rows if row["kind"] == "evaluation"]
    reached = next((row for row in evaluations if row["iou"] >= threshold), None)
    final = evaluations[-1]
    if reached:
        print(
            f"  IoU {reached['iou']:.3f} >= {threshold} after {reached['time']:.0f} s of training "
            f"(epoch {reached['epoch']}, step {reached['step']})"
        )
    else:
        best = max(evaluations, key=lambda row: row["iou"])
        print(f"  IoU {threshold} not reached; best {best['iou']:.3f} (epoch {best['epoch']}, {best['time']:.0f} s)")
    print(f"  final IoU {final['iou']:.3f} after {final['time']:.0f} s of training; whole run {wall:.0f} s wall")
    print(f"  peak RSS {usage.ru_maxrss / 1024:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--guide-epochs", type=int, default=24)
    args = parser.parse_args()
    run("our defaults", [], args.threshold)
    run("the guide's settings", guide_settings(args.guide_epochs), args.threshold)


if __name__ == "__main__":
    main()
