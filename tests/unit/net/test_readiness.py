"""The inline box's start wait: as long as the process is busy, not a fixed deadline. Driven
with a stand-in clock and CPU reading, and once against a real slow-starting process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from testbed.net.readiness import cpu_seconds, wait_until_ready


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0  # every look at the clock is one second later
        return self.now


class Process:
    pid = 1

    def __init__(self, exits_at: float | None = None, clock: Clock | None = None) -> None:
        self.exits_at, self.clock = exits_at, clock

    def poll(self) -> int | None:
        if self.exits_at is not None and self.clock is not None and self.clock.now >= self.exits_at:
            return 1
        return None


def test_a_busy_slow_start_is_waited_for_well_past_ten_seconds() -> None:
    clock = Clock()
    used = iter(range(1000))
    polls = iter(range(1000))
    ready_at = 60  # a minute of start-up, using CPU all along
    outcome = wait_until_ready(Process(), lambda: next(polls) >= ready_at, clock=clock,
                               cpu=lambda pid: float(next(used)), poll_s=0)
    assert outcome is None and clock.now >= ready_at


def test_a_process_that_uses_no_cpu_is_given_up_as_idle() -> None:
    clock = Clock()
    outcome = wait_until_ready(Process(), lambda: False, clock=clock, cpu=lambda pid: 5.0,
                               idle_limit_s=10, poll_s=0)
    assert outcome is not None and outcome.reason == "idle" and 10 <= outcome.waited_s <= 12
    assert "used no CPU" in outcome.text()


def test_exit_and_cap() -> None:
    clock = Clock()
    exited = wait_until_ready(Process(exits_at=4, clock=clock), lambda: False, clock=clock,
                              cpu=lambda pid: None, poll_s=0)
    assert exited is not None and exited.reason == "exited" and "exited after" in exited.text()
    used = iter(range(10_000))
    capped = wait_until_ready(Process(), lambda: False, clock=Clock(), cpu=lambda pid: float(next(used)),
                              cap_s=50, poll_s=0)
    assert capped is not None and capped.reason == "cap" and "kept using CPU" in capped.text()


def test_cpu_seconds_of_a_real_process(tmp_path: Path) -> None:
    assert cpu_seconds(os.getpid()) is not None
    ready = tmp_path / "ready"
    # a real process that burns CPU for a while before it says it is ready
    code = ("import time, pathlib\nend = time.monotonic() + 1.5\nwhile time.monotonic() < end: pass\n"
            f"pathlib.Path({str(ready)!r}).touch()\ntime.sleep(5)")
    process = subprocess.Popen([sys.executable, "-c", code])
    try:
        assert wait_until_ready(process, ready.exists, idle_limit_s=1.0) is None
    finally:
        process.kill()
        process.wait()
    assert cpu_seconds(process.pid) is None
