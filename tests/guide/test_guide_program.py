"""The guide's end-to-end program, imports changed to this package and sizes shrunk, trains for real."""

import os
import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

PROGRAM = Path(__file__).with_name("guide_program.py")


def test_guide_program_trains_logs_mean_losses_and_saves_evaluations(tmp_path: Path) -> None:
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    completed = subprocess.run(
        [sys.executable, str(PROGRAM)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output

    # The LoggingCallback logs one mean loss per epoch (4 epochs), each a finite BCE value.
    mean_losses = [
        (float(loss), int(epoch)) for loss, epoch in re.findall(r"Mean loss: ([\d.e-]+), epoch: (\d+)", output)
    ]
    assert [epoch for _, epoch in mean_losses] == [1, 2, 3, 4]
    assert all(0.0 < loss < 2.0 for loss, _ in mean_losses)

    # Evaluation every 2 epochs: at epochs 2 and 4 (the end coincides with the last one, so no extra run).
    validations = re.findall(r"Mean validation loss: ([\d.e-]+), epoch: (\d+)", output)
    assert [int(epoch) for _, epoch in validations] == [2, 4]
    assert sorted(path.name for path in tmp_path.glob("result_*.png")) == ["result_2.png", "result_4.png"]
    with Image.open(tmp_path / "result_4.png") as image:
        assert image.size == (800, 1600)  # figsize (8, 16) at matplotlib's default 100 dpi

    # ClockConfig(verbose=False) silences the clock's own lines.
    assert "Training for" not in output
