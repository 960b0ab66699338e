"""ProgressBar: a live bar on a terminal (driven through a pseudo-terminal), plain log lines elsewhere."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from callbacks_support import Batch, TinyTrainer, captured_logs, mse_loss, tiny_config, train_in

from train.callbacks import ProgressBar

PROGRAM = Path(__file__).with_name("progress_program.py")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
TIMEOUT_S = 120.0


def program_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("COLUMNS", "LINES")}
    return {**env, "TERM": "xterm", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def run_on_terminal(mode: str) -> str:
    """The program's output as a 120x30 terminal received it (both stdout and stderr on the terminal)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    process = subprocess.Popen(
        [sys.executable, str(PROGRAM), mode], stdin=slave, stdout=slave, stderr=slave, env=program_env()
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the program closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
        process.wait(timeout=30)
    output = b"".join(chunks).decode("utf-8", errors="replace")
    assert process.returncode == 0, output
    return ANSI.sub("", output)


def run_on_pipes(mode: str) -> str:
    completed = subprocess.run(
        [sys.executable, str(PROGRAM), mode], capture_output=True, text=True, env=program_env(), timeout=TIMEOUT_S
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout + completed.stderr


@pytest.fixture(scope="module")
def outputs() -> Iterator[dict[str, Future[str]]]:
    """Both programs at once: each spends seconds importing torch."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield {"terminal": pool.submit(run_on_terminal, "auto"), "pipes": pool.submit(run_on_pipes, "auto")}


def test_on_a_terminal_a_bar_is_drawn_and_log_lines_pass_above_it(outputs: dict[str, Future[str]]) -> None:
    output = outputs["terminal"].result()
    frames = [frame for line in output.split("\r\n") for frame in line.split("\r")]
    bars = [frame for frame in frames if "%|" in frame]
    assert bars, output
    final = re.compile(
        r"epoch 3/3: 100%\|█+\| step 24/24 \[\d\d:\d\d<00:00, loss [\d.e+-]+, lr 0\.1, [\d.e+]+ samples/s\]"
    )
    assert any(final.fullmatch(frame.rstrip()) for frame in bars), bars[-3:]
    assert any(frame.startswith("epoch 2/3:") for frame in bars)
    # The clock's lines are written whole, on a line of their own, never across a bar.
    for text in ("Training for 24 steps", "Epoch 1 done", "Epoch 2 done", "Epoch 3 done", "Training finished"):
        (frame,) = [frame for frame in frames if text in frame]
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \| INFO +\| train\.clock:", frame), frame
        assert "%|" not in frame
    assert "| step 4/24 (17%)" not in output  # no log lines of progress while there is a bar
    assert "sinks restored: True" in output


def test_off_a_terminal_compact_log_lines_replace_the_bar(outputs: dict[str, Future[str]]) -> None:
    output = outputs["pipes"].result()
    assert "\r" not in output and "%|" not in output
    lines = [line for line in output.splitlines() if "train.callbacks.progress" in line]
    steps = [int(match.group(1)) for line in lines if (match := re.search(r" - step (\d+)/24 ", line))]
    assert steps == [4, 8, 12, 16, 20, 24], lines
    pattern = r".* - step 12/24 \(50%\) \| epoch 2/3 \| loss [\d.e+-]+ \| lr 0\.1 \| [\d.e+]+ samples/s \| eta \d+:\d\d"
    assert any(re.fullmatch(pattern, line) for line in lines), lines
    assert "Epoch 1 done" in output


@pytest.mark.parametrize(
    ("mode", "sweep_job", "term", "expected"),
    [
        ("bar", None, "xterm", True),
        ("lines", None, "xterm", False),
        ("auto", 3, "xterm", False),  # a sweep job logs lines, terminal or not
        ("auto", None, "dumb", False),
    ],
)
def test_use_bar(mode: str, sweep_job: int | None, term: str, expected: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", term)
    assert ProgressBar(mode=mode, sweep_job=sweep_job).use_bar() is expected


def test_in_process_lines_at_the_interval_and_the_last_step(tmp_path: Path) -> None:
    with captured_logs() as logs:
        train_in(tmp_path, tiny_config(duration="7:step"), [ProgressBar(mode="lines", log_every_n_steps=3)])
    steps = [line.split(" ")[1] for line in logs if line.startswith("step ")]
    assert steps == ["3/7", "6/7", "7/7"]


def test_invalid_options_are_refused() -> None:
    with pytest.raises(ValueError, match="mode='fancy'"):
        ProgressBar(mode="fancy")
    with pytest.raises(ValueError, match="log_every_n_steps=0"):
        ProgressBar(log_every_n_steps=0)


def test_a_failed_run_closes_its_bar_and_restores_loguru(tmp_path: Path) -> None:
    def fail_at_third_step(trainer: TinyTrainer, batch: Batch) -> torch.Tensor:
        if trainer.clock.step == 2:
            raise RuntimeError("boom")
        return mse_loss(trainer, batch)

    failed = ProgressBar(mode="bar")
    trainer = TinyTrainer(tiny_config(duration="4:step"), callbacks=[failed], loss_fn=fail_at_third_step)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.train()
    assert failed._bar is None and failed._routed == []  # closed by on_exception

    train_in(tmp_path, tiny_config(duration="1:step"), [ProgressBar(mode="bar")])
    assert failed._bar is None and failed._routed == []
