"""Atomic file writes: write to a temporary file beside the target, then rename it into place.

A reader (or a process killed mid-write) therefore sees either the old file or the new one, never half.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Generator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Generator[Path, None, None]:
    """Yield a temporary path to write; on success it replaces ``path``, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(descriptor)
    temp_path = Path(temp_name)
    os.chmod(temp_path, 0o644)  # mkstemp creates 0600; a run's files should be as readable as any other
    try:
        yield temp_path
        with open(temp_path, "rb+") as written:  # make the bytes durable before they become visible
            os.fsync(written.fileno())
        os.replace(temp_path, path)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as temp_path:
        temp_path.write_text(text, encoding="utf-8")
