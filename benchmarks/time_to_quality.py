"""Time to quality: wall-clock seconds until the default experiment reaches validation IoU >= 0.90.

Runs `python -m train` as a user would (our defaults), then the reference guide's settings (AdamW,
learning rate 1e-4, constant schedule) for the same number of epochs, evaluating every 16 steps, and
reads the evaluation rows of each run's metrics.jsonl (`time` = seconds of training so far, evaluation
included). Target: our defaults reach IoU 0.90 within 180 s on a 2-core CPU machine. Also prints the peak
resident memory of each run.

    python benchmarks/time_to_quality.py [--threshold 0.9]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = {
    "our defaults": [],
    "guide settings (AdamW 1e-4, constant)": [
        "optimizer=adamw",
        "optimizer.learning_rate=1e-4",
        "lr_scheduler=constant",
    ],
}


def run(overrides: list[str], threshold: float) -> None:
    with tempfile.TemporaryDirectory() as cwd:
        command = [sys.executable, "-m", "train", "training.evaluation_interval=16:step", *overrides]
        started = time.perf_counter()
        subprocess.run(command, cwd=cwd, check=True, capture_output=True)
        wall = time.perf_counter() - started
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest child so far
        (metrics,) = Path(cwd).glob("outputs/autoencoder/*/metrics.jsonl")
        rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    evaluations = [row for row in rows if row["kind"] == "evaluation"]
    reached = next((row for row in evaluations if row["iou"] >= threshold), None)
    final = evaluations[-1]
    if reached:
        print(
            f"  IoU {reached['iou']:.3f} >= {threshold} at {reached['time']:.0f} s of training (step {reached['step']})"
        )
    else:
        print(f"  IoU {threshold} not reached; best {max(r['iou'] for r in evaluations):.3f}")
    print(
        f"  final IoU {final['iou']:.3f} at step {final['step']}, {final['time']:.0f} s of training, {wall:.0f} s wall"
    )
    print(f"  peak RSS of the largest run so far: {peak_mib:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--threshold", type=float, default=0.9)
    args = parser.parse_args()
    for label, overrides in RUNS.items():
        print(f"{label}: python -m train {' '.join(overrides)}")
        run(overrides, args.threshold)


if __name__ == "__main__":
    main()
