"""A small progress bar with an estimated time left, for runs that take minutes (matrices, demos).

It writes to stderr so stdout stays clean for results. On a terminal it redraws one line in
place; without one (CI logs, pipes) it prints a plain line per completed step and nothing for
mere status changes, so a log holds one line per step instead of thousands of redraws.
The clock is injected, so tests drive time by hand and the ETA is exact.

The ETA is the mean time per completed unit times the units left; a caller whose steps differ
in cost gives each step its weight (`advance(units=...)`, `total` in the same units).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

Clock = Callable[[], float]


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

    def __init__(self, total: float, *, label: str = "", stream: TextIO | None = None,
                 clock: Clock = time.monotonic, width: int = 24, tty: bool | None = None) -> None:
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
        self.started = clock()
        self._drawn = False
        self._finished = False

    @property
    def elapsed_s(self) -> float:
        return self.clock() - self.started

    def eta_s(self) -> float | None:
        """Seconds left, from the mean rate so far; None before the first unit is done."""
        if self.timed <= 0:
            return None if self.done < self.total else 0.0
        remaining = max(0.0, self.total - self.done)
        return self.elapsed_s / self.timed * remaining

    def line(self) -> str:
        fraction = min(1.0, self.done / self.total)
        filled = round(fraction * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        count = (f"{int(self.done)}/{int(self.total)}" if self.done.is_integer() and self.total.is_integer()
                 else f"{self.done:.1f}/{self.total:.1f}")
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
