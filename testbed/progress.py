"""A small progress bar with an estimated time left, for runs that take minutes (matrices, demos).

It writes to stderr so stdout stays clean for results. On a terminal it redraws one line in
place; without one (CI logs, pipes) it prints a plain line per completed step and nothing for
mere status changes, so a log holds one line per step instead of thousands of redraws.
The clock is injected, so tests drive time by hand and the ETA is exact.

The ETA is the mean time per completed unit times the units left; a caller whose steps differ
in cost gives each step its weight (`advance(units=...)`, `total` in the same units). A
continuous quantity (seconds run, bytes through) is reported with `update(done)` instead;
`TransferProgress` does that for one experiment (`testbed run`), from what its spec plans.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

Clock = Callable[[], float]
CountFormat = Callable[[float, float], str]  # (done, total) -> "3/10", "4.2/20.0 MB", ...


def format_duration(seconds: float | None) -> str:
    """'1:05', '1:02:03', or '--:--' when unknown: short enough for a status line."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "--:--"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressBar:
    """Progress over `total` units with elapsed time and ETA.

    `advance()` when a step is done, `status()` for what is running now, `finish()` at the end
    (also when interrupted: it leaves the terminal on a fresh line).
    """

    # update() without a TTY: a log line each tenth of the way, or after this long without one
    LOG_STEPS = 10
    LOG_EVERY_S = 10.0
    REDRAW_S = 0.2  # update() on a TTY: redraw at most this often

    def __init__(self, total: float, *, label: str = "", stream: TextIO | None = None,
                 clock: Clock = time.monotonic, width: int = 24, tty: bool | None = None,
                 count_format: CountFormat | None = None) -> None:
        if total <= 0:
            raise ValueError(f"progress total must be positive, got {total}")
        self.total = float(total)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.width = width
        self.tty = self.stream.isatty() if tty is None else tty
        self.done = 0.0
        self.timed = 0.0  # units whose time counts for the ETA (not those reused for free)
        self.steps = 0
        self.current = ""
        self.count_format = count_format
        self.started = clock()
        self._drawn = False
        self._finished = False
        self._last_output = self.started - self.REDRAW_S
        self._logged_step = 0
        self._eta_given: float | None = None  # update(eta_s=...): the caller knows better

    @property
    def elapsed_s(self) -> float:
        return self.clock() - self.started

    def eta_s(self) -> float | None:
        """Seconds left, from the mean rate so far; None before the first unit is done."""
        if self._eta_given is not None:
            return self._eta_given
        if self.timed <= 0:
            return None if self.done < self.total else 0.0
        remaining = max(0.0, self.total - self.done)
        return self.elapsed_s / self.timed * remaining

    def line(self) -> str:
        fraction = min(1.0, self.done / self.total)
        filled = round(fraction * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        if self.count_format is not None:
            count = self.count_format(self.done, self.total)
        elif self.done.is_integer() and self.total.is_integer():
            count = f"{int(self.done)}/{int(self.total)}"
        else:
            count = f"{self.done:.1f}/{self.total:.1f}"
        head = f"[{self.label}] " if self.label else ""
        text = (f"{head}{bar} {count} {fraction * 100:3.0f}%  elapsed {format_duration(self.elapsed_s)}"
                f"  ETA {format_duration(self.eta_s())}")
        return f"{text}  {self.current}" if self.current else text

    def status(self, text: str) -> None:
        """What is running now; redrawn on a terminal, silent in a log."""
        self.current = text
        if self.tty:
            self._draw()

    def advance(self, units: float = 1.0, *, note: str = "", free: bool = False) -> None:
        """One step done (of weight `units`); `note` says how it went (e.g. its outcome).
        `free`: the step cost nothing (a result reused), so it does not speed up the ETA."""
        self.done = min(self.total, self.done + units)
        if not free:
            self.timed += units
        self.steps += 1
        if note:
            self.current = note
        if self.tty:
            self._draw()
        else:
            self._write(self.line() + "\n")

    def update(self, done: float, *, note: str = "", eta_s: float | None = None) -> None:
        """Absolute progress of a continuous quantity (all of it timed: the ETA is the rate so
        far). A TTY redraws at most every REDRAW_S; a log gets a line each LOG_STEPS-th of the
        way or after LOG_EVERY_S without one, so a stalled run still shows it is alive.
        `eta_s`: the caller's own estimate (e.g. from a rate measured at another time)."""
        self.done = self.timed = min(self.total, max(0.0, done))
        self._eta_given = eta_s
        if note:
            self.current = note
        now = self.clock()
        if self.tty:
            if now - self._last_output >= self.REDRAW_S:
                self._last_output = now
                self._draw()
            return
        step = int(self.done / self.total * self.LOG_STEPS)
        if step > self._logged_step or now - self._last_output >= self.LOG_EVERY_S:
            self._logged_step = max(step, self._logged_step)
            self._last_output = now
            self._write(self.line() + "\n")

    def finish(self, message: str = "") -> None:
        if self._finished:
            return
        self._finished = True
        if self.tty and self._drawn:
            self._write("\n")
        if message:
            self._write(message + "\n")

    def _draw(self) -> None:
        # \r plus clear-to-end-of-line: a shorter status never leaves the tail of a longer one
        self._write("\r\x1b[2K" + self.line())
        self._drawn = True

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            # a closed or broken stderr must not abort a long run: progress is a courtesy
            pass


def format_bytes(count: float) -> str:
    """Decimal units, as goodput figures are given: '950 B', '4.2 MB', '1.05 GB'."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.3g} {unit}" if count < 100 * size else f"{count / size:.0f} {unit}"
    return f"{count:.0f} B"


def _seconds_count(done: float, total: float) -> str:
    return f"{done:.0f}/{total:.0f} s"


def _bytes_count(done: float, total: float) -> str:
    return f"{format_bytes(done)}/{format_bytes(total)}"


class TransferProgress:
    """Progress and ETA of one experiment's transfer, from what its spec plans.

    A timed transfer (`[traffic] seconds`) ends at its planned time, or at its last timeline
    event if later: the ETA is that plan minus the time run. A sized one (`[traffic] bytes`) ends
    when its bytes are through: the ETA is the bytes left at the rate measured so far, counted
    from the time of the measurement (unknown until the first byte). The runner's wait loop calls
    `tick(elapsed_s, bytes_done, sampled_at_s)`: the endpoint's samples file is written in bursts,
    so the byte count is as of `sampled_at_s`, not of now.
    """

    def __init__(self, *, seconds: float | None, total_bytes: int | None, timeline_end_s: float = 0.0,
                 label: str = "run", stream: TextIO | None = None, clock: Clock = time.monotonic,
                 tty: bool | None = None) -> None:
        if (seconds is None) == (total_bytes is None):
            raise ValueError("a transfer is planned by seconds or by bytes, exactly one of them")
        self.timed = seconds is not None
        if seconds is not None:
            total, count_format = max(float(seconds), timeline_end_s), _seconds_count
        else:
            assert total_bytes is not None
            total, count_format = float(total_bytes), _bytes_count
        self.bar = ProgressBar(total, label=label, stream=stream, clock=clock, tty=tty,
                               count_format=count_format)

    def tick(self, elapsed_s: float, bytes_done: int, sampled_at_s: float | None = None) -> None:
        at = elapsed_s if sampled_at_s is None else sampled_at_s
        note = f"{format_bytes(bytes_done)} through"
        rate = bytes_done / at if at > 0 and bytes_done else 0.0  # bytes/s
        if rate:
            note += f", {rate * 8 / 1e6:.1f} Mbit/s"
        if self.timed:
            self.bar.update(elapsed_s, note=note)
            return
        eta = None
        if rate:
            eta = max(0.0, (self.bar.total - bytes_done) / rate - (elapsed_s - at))
        self.bar.update(bytes_done, note=note, eta_s=eta)

    def finish(self, message: str = "") -> None:
        self.bar.finish(message)
