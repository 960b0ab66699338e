"""Start-up cost: `python -m train --cfg job` and a one-step run, against `python -c "import torch"`.

Prints medians over several runs and the time of our own on top of importing torch (target: <= 0.7 s),
and checks that `import train` loads none of matplotlib, tensorboard, mlflow or optuna.

    python benchmarks/startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

HEAVY = ("matplotlib", "tensorboard", "mlflow", "optuna", "rich")  # tqdm: torch itself imports it


def timed(command: list[str], cwd: str) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def median_time(command: list[str], cwd: str, repeats: int) -> float:
    timed(command, cwd)  # warm the file cache
    return statistics.median(timed(command, cwd) for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    python = sys.executable
    with tempfile.TemporaryDirectory() as cwd:
        torch_only = median_time([python, "-c", "import torch"], cwd, args.repeats)
        import_train = median_time([python, "-c", "import train"], cwd, args.repeats)
        cfg_job = median_time([python, "-m", "train", "--cfg", "job"], cwd, args.repeats)
        one_step = median_time([python, "-m", "train", "training.duration=1:step"], cwd, args.repeats)
        loaded = subprocess.run(
            [python, "-c", f"import sys, train; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"],
            cwd=cwd,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    rows = [
        ('python -c "import torch"', torch_only, ""),
        ('python -c "import train"', import_train, f"ours on top: {import_train - torch_only:+.2f}"),
        ("python -m train --cfg job", cfg_job, f"ours on top: {cfg_job - torch_only:+.2f}  (target <= 0.70)"),
        ("python -m train training.duration=1:step", one_step, f"ours on top: {one_step - torch_only:+.2f}"),
    ]
    print(f"median of {args.repeats} runs, seconds")
    for label, seconds, note in rows:
        print(f"{label:<42} {seconds:6.2f}   {note}")
    print(f"heavy modules loaded by `import train`: {loaded or 'none'}")


if __name__ == "__main__":
    main()
