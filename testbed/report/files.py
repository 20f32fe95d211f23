"""Writing report files: atomically, and a failed write is an error (never only a log line, the
one thing DESIGN.md asks us to do better than Flent)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from testbed.errors import TestbedError


class WriteFailed(TestbedError):
    """A report, table or plot could not be written (disk full, no permission): exit 4, not the
    1 that `compare` and `matrix` use for "a result differs"."""

    exit_code = 4


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary neighbour and rename, so a reader never sees half a file."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise WriteFailed(f"could not write {path}: {exc.strerror or exc}") from exc


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def save_figure(figure: Any, png: Path) -> None:
    """A matplotlib figure written as PNG; a failed write is one line naming the file."""
    try:
        figure.savefig(png)
    except OSError as exc:
        raise TestbedError(f"could not write {png}: {exc.strerror}") from exc
