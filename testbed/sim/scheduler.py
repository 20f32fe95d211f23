"""A discrete-event scheduler with virtual time.

One binary heap of (time, sequence, callback, argument). The sequence number makes events at
the same instant run in the order they were scheduled, which is what makes a run reproducible.
There is no cancellation: owners that may reschedule (endpoint timers, middlebox deadlines)
carry a version number and ignore stale events, which is cheaper than removing heap entries.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

STOP_CONDITION = "condition"
STOP_DEADLINE = "deadline"
STOP_IDLE = "idle"
STOP_EVENT_LIMIT = "event-limit"


class SimulationError(RuntimeError):
    """The simulation cannot go on (a misbehaving endpoint, an impossible schedule)."""


@dataclass(frozen=True, slots=True)
class RunResult:
    """Why `run` returned, at what virtual time, after how many events."""

    reason: str
    now: float
    events: int


class EventScheduler:
    """Runs callbacks in virtual-time order; `now` only moves forward."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.events_run = 0
        self._heap: list[tuple[float, int, Callable[[Any], None], Any]] = []
        self._sequence = 0

    def call_at(self, when: float, callback: Callable[[Any], None], argument: Any = None) -> None:
        """Run `callback(argument)` at virtual time `when` (clamped to now: no time travel)."""
        if when < self.now:
            when = self.now
        self._sequence += 1
        heapq.heappush(self._heap, (when, self._sequence, callback, argument))

    def call_later(self, delay: float, callback: Callable[[Any], None], argument: Any = None) -> None:
        """Run `callback(argument)` `delay` seconds of virtual time from now."""
        if delay < 0:
            raise SimulationError(f"call_later: delay must be >= 0, got {delay}")
        self.call_at(self.now + delay, callback, argument)

    def next_time(self) -> float | None:
        """The time of the earliest pending event, or None when idle."""
        return self._heap[0][0] if self._heap else None

    def pending(self) -> int:
        return len(self._heap)

    def run(
        self,
        until: float | None = None,
        stop_when: Callable[[], bool] | None = None,
        max_events: int | None = None,
    ) -> RunResult:
        """Run events until `stop_when()` is true, virtual time would pass `until`, the heap is
        empty (idle: nothing can ever happen again), or `max_events` ran. On a deadline stop `now`
        is advanced to `until`, so a later `run` continues from there."""
        heap = self._heap
        pop = heapq.heappop
        ran = 0
        if stop_when is not None and stop_when():
            return RunResult(STOP_CONDITION, self.now, 0)
        while heap:
            if until is not None and heap[0][0] > until:
                self.now = until
                self.events_run += ran
                return RunResult(STOP_DEADLINE, self.now, ran)
            if max_events is not None and ran >= max_events:
                self.events_run += ran
                return RunResult(STOP_EVENT_LIMIT, self.now, ran)
            when, _, callback, argument = pop(heap)
            self.now = when
            callback(argument)
            ran += 1
            if stop_when is not None and stop_when():
                self.events_run += ran
                return RunResult(STOP_CONDITION, self.now, ran)
        self.events_run += ran
        return RunResult(STOP_IDLE, self.now, ran)
