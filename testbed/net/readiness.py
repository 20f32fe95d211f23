"""Wait for a started process to say it is ready, for as long as it is making progress.

A fixed start deadline is wrong on a slow machine: Python's start-up and imports take about a
second on the host but tens of seconds in a TCG guest (`testbed vm run --kernel ...`). What
tells a slow start from a stuck one is whether the process still uses CPU, so the wait ends
when the ready file appears, when the process exits, when it has used no CPU for `idle_limit_s`
(stuck), or at a generous overall cap (it spins without ever getting ready).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
IDLE_LIMIT_S = 10.0
CAP_S = 300.0


class Pollable(Protocol):
    pid: int

    def poll(self) -> int | None: ...


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of a process and its waited-for children; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its closing one
    fields = stat[stat.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime, stime, cutime, cstime are fields 14-17
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS


@dataclass(frozen=True)
class NotReady:
    """Why a process did not get ready: 'exited', 'idle' (no CPU used for a while) or 'cap'."""

    reason: str
    waited_s: float

    def text(self) -> str:
        if self.reason == "exited":
            return f"it exited after {self.waited_s:.1f} s"
        if self.reason == "idle":
            return f"it used no CPU for {IDLE_LIMIT_S:.0f} s ({self.waited_s:.1f} s after start)"
        return f"not ready after {self.waited_s:.0f} s although it kept using CPU"


def wait_until_ready(process: Pollable, ready: Callable[[], bool], *, idle_limit_s: float = IDLE_LIMIT_S,
                     cap_s: float = CAP_S, poll_s: float = 0.02,
                     clock: Callable[[], float] = time.monotonic,
                     cpu: Callable[[int], float | None] = cpu_seconds) -> NotReady | None:
    """None once `ready()` holds; else why the wait gave up."""
    start = last_progress = clock()
    last_cpu = cpu(process.pid)
    while not ready():
        now = clock()
        if process.poll() is not None:
            return NotReady("exited", now - start)
        used = cpu(process.pid)
        if used is not None and used != last_cpu:
            last_cpu, last_progress = used, now
        if now - last_progress > idle_limit_s:
            return NotReady("idle", now - start)
        if now - start > cap_s:
            return NotReady("cap", now - start)
        time.sleep(poll_s)
    return None
