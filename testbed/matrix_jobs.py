"""`testbed matrix --jobs N`: the cells that mostly wait, run together.

A cell expected to end in a reset, a stall or a truncated delivery spends most of its time
waiting: its transfer stops making progress and the endpoints wait out their no-progress
timeout (traffic.timeout_s; a matrix's [outcome_only].stall_timeout_s shortens it for these
cells). The matrix runs these cells first, up to N at a time, each in its own child process
(its own namespaces, run id and teardown, exactly as `testbed run` does one), and only then the
cells that measure goodput, one at a time and alone as without --jobs: their figures are not
shared with another transfer. (Overlapping waiting cells with measuring ones was tried first:
on the 2-core machine it cost the measuring cells 11 to 26 % of their goodput, since a waiting
cell's boxes, re-injections and capture reading are not idle.) Verdicts do not depend on which
process ran a cell: both run testbed.runner. The waiting cells' own goodputs (outcome-only
rows) are taken while they share the machine with each other.

Children are ended by their own process object (SIGTERM, which a run turns into its usual
teardown; SIGKILL only after a grace period), on Ctrl-C as well.
"""

from __future__ import annotations

import io
import multiprocessing
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from testbed.matrix_outcome_only import ends_incomplete

STOP_GRACE_S = 30.0


def waits(cell: Any) -> bool:
    """True when the cell's expectation (any alternative) ends in a reset, a stall or a
    truncated delivery (mp-fail · truncated: the transfer stops until the no-progress timeout)."""
    from testbed.matrix_expect import parse_expectation

    if not cell.expected:
        return False
    return ends_incomplete(parse_expectation(cell.expected, cell.key))


def _child(conn: Connection, cell: Any, out: Path, resume: bool, repeat: int,
           runner: Any) -> None:
    """A child process: one cell from start to finish; its record and result go back."""
    from testbed.matrix import _run_cell
    from testbed.progress import ProgressBar

    if runner is None:
        from testbed.runner import run_experiment as runner
    bar = ProgressBar(1, label="matrix", stream=io.StringIO(), tty=False)
    try:
        conn.send(_run_cell(cell, out, runner, bar, resume, repeat))
    except KeyboardInterrupt:
        pass  # stopped by the matrix: the run already tore down what it built
    finally:
        conn.close()


@dataclass
class _Running:
    cell: Any
    process: Any
    conn: Connection


class WaitingCells:
    """Up to `slots` children at a time, each running one waiting cell; `runner` must be
    picklable (None: testbed.runner.run_experiment)."""

    def __init__(self, cells: list[Any], out: Path, *, slots: int, resume: bool, repeat: int,
                 runner: Any = None) -> None:
        self.pending = list(cells)
        self.out, self.slots, self.resume, self.repeat, self.runner = (out, slots, resume,
                                                                       repeat, runner)
        self.running: list[_Running] = []
        self.context = multiprocessing.get_context("spawn")

    def start_more(self) -> None:
        while self.pending and len(self.running) < self.slots:
            cell = self.pending.pop(0)
            receive, send = self.context.Pipe(duplex=False)
            process = self.context.Process(
                target=_child, args=(send, cell, self.out, self.resume, self.repeat, self.runner),
                name=f"matrix cell {cell.key}", daemon=False)
            process.start()
            send.close()
            self.running.append(_Running(cell, process, receive))

    def _finish(self, running: _Running) -> tuple[Any, dict[str, Any], dict[str, Any] | None]:
        from testbed.matrix import _cell_key, error_record

        try:
            record, result = running.conn.recv()
        except (EOFError, OSError):
            running.process.join(timeout=5)
            record, result = error_record(
                _cell_key(running.cell), f"the cell's process ended without a result (exit "
                f"{running.process.exitcode})", running.cell.expected,
                running.cell.directory(self.out).relative_to(self.out).as_posix()), None
        running.conn.close()
        running.process.join(timeout=STOP_GRACE_S)
        return running.cell, record, result

    def collect(self, timeout: float = 0.0) -> list[tuple[Any, dict[str, Any],
                                                          dict[str, Any] | None]]:
        """The cells finished so far (waiting up to `timeout` s for the first one)."""
        if not self.running:
            return []
        ready = multiprocessing.connection.wait([r.conn for r in self.running], timeout)
        done = [r for r in self.running if r.conn in ready]
        self.running = [r for r in self.running if r.conn not in ready]
        finished = [self._finish(r) for r in done]
        self.start_more()
        return finished

    def drain(self) -> Iterator[tuple[Any, dict[str, Any], dict[str, Any] | None]]:
        """Every remaining cell, as each finishes."""
        self.start_more()
        while self.running:
            yield from self.collect(timeout=None)  # type: ignore[arg-type]

    def stop(self) -> None:
        """End every child (SIGTERM: its run tears down; SIGKILL after the grace period)."""
        self.pending.clear()
        for running in self.running:
            if running.process.is_alive():
                running.process.terminate()
        for running in self.running:
            running.process.join(timeout=STOP_GRACE_S)
            if running.process.is_alive():
                running.process.kill()
                running.process.join(timeout=5)
            running.conn.close()
        self.running.clear()
