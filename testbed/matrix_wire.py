"""A measuring cell's capture is read while the next cell builds its network.

Reading a cell's capture (tshark over 20-30 thousand packets) takes about a second of one
core, and building the next cell's namespaces, links and boxes takes most of another; both ran
in turn. Here the reading runs in a thread (tshark is a child process, so the thread only
waits) from the moment a cell ends, and the next cell's run waits for it once its network is
built, before any of its traffic starts (`run_experiment(before_traffic=...)`): no measured
transfer shares the CPU with tshark, so goodputs stay comparable with a matrix read in turn.
The finished record is added from the main thread, in `finish`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

WireReading = Callable[[], dict[str, Any]]  # reads the capture, returns the cell's whole record
AddRecord = Callable[[Any, dict[str, Any], dict[str, Any] | None], None]


class WireReadings:
    """At most one cell's capture being read; `finish` waits for it and adds its record."""

    def __init__(self, add: AddRecord) -> None:
        self._add = add
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wire")
        self._pending: tuple[Any, dict[str, Any], dict[str, Any] | None,
                             Future[dict[str, Any]]] | None = None

    def start(self, cell: Any, record: dict[str, Any], result: dict[str, Any] | None,
              reading: WireReading) -> None:
        """Read a cell's capture in the background; `record` is the cell's record without it."""
        self.finish()
        self._pending = (cell, record, result, self._pool.submit(reading))

    def finish(self) -> None:
        """Wait for the pending reading, if any, and add its record (idempotent). A reading
        that failed leaves the cell's record without the capture's evidence, saying why: it
        must not fail the next cell, whose run is waiting here."""
        pending, self._pending = self._pending, None
        if pending is not None:
            cell, record, result, future = pending
            try:
                whole = future.result()
            except Exception as exc:
                whole = record | {"wire_error": f"{type(exc).__name__}: {exc}"}
            self._add(cell, whole, result)

    def close(self) -> None:
        self.finish()
        self._pool.shutdown()

    def abandon(self) -> None:
        """On an interrupt: keep the pending cell if its reading still ends (tshark got the
        same Ctrl-C), else leave it out; its result.json stays for --resume."""
        pending, self._pending = self._pending, None
        if pending is not None:
            cell, _record, result, future = pending
            with contextlib.suppress(Exception):
                self._add(cell, future.result(timeout=10), result)
        self._pool.shutdown(wait=False)
