"""The one jittered FIFO: a link's delay stage, sans-IO, shared by testbed.inline and testbed.sim.

An item pushed at time `now` is due at ``now + d`` where ``d`` is drawn uniformly from
``[delay - jitter, delay + jitter]`` (clamped at zero): the same distribution netem uses for
``delay D J`` without a distribution table.

Jitter never reorders: an item is never due before the item queued ahead of it, so its due time
is ``max(now + d, due time of the previous item)``. When items arrive closer together than the
jitter span, this clamp shifts the effective distribution upwards (the mean delay grows and the
spread shrinks); the stats report the delays actually applied so a result can say so.

Changing the timing affects only items pushed afterwards; items already queued keep their due
times and are never dropped by a change. The limit counts items, like netem's ``limit``; an item
arriving at a full line is dropped and counted. `DelayLine.for_link` takes the limit from the
link (`testbed.net.params.held_packets_limit`: the queue plus what is in flight during the
delay), exactly the limit netem gets on a kernel that has it.

The inline process runs one line per direction on frames (bytes); the simulator runs one per
link direction as its propagation stage (after its serialization queue, so unbounded there).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

from testbed.net.params import LinkParams, held_packets_limit

Item = TypeVar("Item")


@dataclass(slots=True)
class DelayStats:
    """What a delay line did; `applied_*` are the delays actually given (due - arrival)."""

    pushed: int = 0
    released: int = 0
    dropped_queue_full: int = 0
    max_depth: int = 0
    applied_min_ms: float | None = None
    applied_max_ms: float | None = None
    applied_sum_ms: float = 0.0
    late_max_ms: float = 0.0
    late_sum_ms: float = 0.0

    def as_dict(self) -> dict[str, float | int | None]:
        released = self.released
        return {
            "pushed": self.pushed,
            "released": released,
            "dropped_queue_full": self.dropped_queue_full,
            "max_depth": self.max_depth,
            "applied_min_ms": self.applied_min_ms,
            "applied_max_ms": self.applied_max_ms,
            "applied_mean_ms": (self.applied_sum_ms / self.pushed) if self.pushed else None,
            "late_max_ms": self.late_max_ms,
            "late_mean_ms": (self.late_sum_ms / released) if released else None,
        }


def _check_timing(delay_ms: float, jitter_ms: float, limit: int | None) -> None:
    for name, value in (("delay_ms", delay_ms), ("jitter_ms", jitter_ms)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number, got {value!r}")
        if not value >= 0 or value == float("inf"):
            raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be an integer >= 1 (or None: unbounded), got {limit!r}")


class DelayLine(Generic[Item]):
    """A FIFO of (due time, item) for one direction.

    push() at arrival, next_deadline() to arm a timer, pop_due(now) when it fires. `late_*`
    stats measure how far after its due time an item was actually popped: the timer error of
    the process running the line (zero in the simulator).
    """

    def __init__(self, rng: random.Random, delay_ms: float = 0.0, jitter_ms: float = 0.0,
                 limit: int | None = None) -> None:
        self._rng = rng
        self._queue: deque[tuple[float, Item]] = deque()
        self._last_due = float("-inf")
        self.stats = DelayStats()
        self.configure(delay_ms, jitter_ms, limit)

    @classmethod
    def for_link(cls, params: LinkParams, rng: random.Random) -> DelayLine[Item]:
        """The delay stage of a link: its delay and jitter, netem's limit."""
        return cls(rng, params.delay_ms, params.jitter_ms, held_packets_limit(params))

    @property
    def delay_ms(self) -> float:
        return self._delay_ms

    @property
    def jitter_ms(self) -> float:
        return self._jitter_ms

    @property
    def limit(self) -> int | None:
        return self._limit

    def configure(self, delay_ms: float, jitter_ms: float, limit: int | None) -> None:
        """New timing and limit for items pushed from now on; queued items keep their due
        times. A lower limit never evicts queued items: it only refuses new ones until the
        line has drained below it."""
        _check_timing(delay_ms, jitter_ms, limit)
        self._delay_ms = delay_ms
        self._jitter_ms = jitter_ms
        self._limit = limit

    def follow_link(self, params: LinkParams) -> None:
        """`configure` from a link's parameters, with netem's limit (see `for_link`)."""
        self.configure(params.delay_ms, params.jitter_ms, held_packets_limit(params))

    def __len__(self) -> int:
        return len(self._queue)

    def push(self, item: Item, now: float) -> bool:
        """Queue `item`; False (and counted) when the line is full."""
        queue = self._queue
        stats = self.stats
        if self._limit is not None and len(queue) >= self._limit:
            stats.dropped_queue_full += 1
            return False
        delay_ms = self._delay_ms
        if self._jitter_ms:
            delay_ms = max(0.0, delay_ms + self._rng.uniform(-self._jitter_ms, self._jitter_ms))
        due = now + delay_ms / 1000.0
        if due < self._last_due:
            due = self._last_due
        self._last_due = due
        queue.append((due, item))
        stats.pushed += 1
        applied_ms = (due - now) * 1000.0
        stats.applied_sum_ms += applied_ms
        if stats.applied_min_ms is None or applied_ms < stats.applied_min_ms:
            stats.applied_min_ms = applied_ms
        if stats.applied_max_ms is None or applied_ms > stats.applied_max_ms:
            stats.applied_max_ms = applied_ms
        if len(queue) > stats.max_depth:
            stats.max_depth = len(queue)
        return True

    def bypass(self, count: int = 1) -> bool:
        """True (and counted as pushed and released with 0 ms) when `count` items arriving now
        may leave at once: no delay, no jitter and nothing queued, so they would be due
        immediately and overtake nothing. Saves the queue round trip on the forwarding fast
        path."""
        if self._queue or self._delay_ms or self._jitter_ms:
            return False
        if not count:
            return True
        stats = self.stats
        stats.pushed += count
        stats.released += count
        if stats.applied_max_ms is None:  # first item: it was neither delayed nor late
            stats.applied_max_ms = 0.0
        if stats.applied_min_ms is None or stats.applied_min_ms > 0.0:
            stats.applied_min_ms = 0.0
            stats.max_depth = max(stats.max_depth, 1)
        return True

    def next_deadline(self) -> float | None:
        """Due time of the head item, or None when the line is empty."""
        return self._queue[0][0] if self._queue else None

    def pop_due(self, now: float) -> list[Item]:
        """Every item due at or before `now`, in arrival order."""
        queue = self._queue
        due_items: list[Item] = []
        stats = self.stats
        while queue and queue[0][0] <= now:
            due, item = queue.popleft()
            late_ms = (now - due) * 1000.0
            stats.late_sum_ms += late_ms
            if late_ms > stats.late_max_ms:
                stats.late_max_ms = late_ms
            due_items.append(item)
        stats.released += len(due_items)
        return due_items

    def clear(self) -> int:
        """Drop everything queued (a cut link); returns how many items were dropped. The
        no-reorder clamp keeps the last due time, as the items already sent keep theirs."""
        dropped = len(self._queue)
        self._queue.clear()
        return dropped
