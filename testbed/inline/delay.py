"""The userspace delay/jitter stage: one FIFO delay line per direction, sans-IO.

This replaces netem's delay on kernels without sch_netem. A frame pushed at time `now` is due at
``now + d`` where ``d`` is drawn uniformly from ``[delay - jitter, delay + jitter]`` (clamped at
zero): the same distribution netem uses for ``delay D J`` without a distribution table.

Jitter never reorders: a frame is never due before the frame queued ahead of it, so its due time
is ``max(now + d, due time of the previous frame)``. When frames arrive closer together than the
jitter span, this clamp shifts the effective distribution upwards (the mean delay grows and the
spread shrinks); the stats report the delays actually applied so a result can say so.

Changing the parameters affects only frames pushed afterwards; frames already queued keep their
due times and are never dropped by a change. The queue limit counts frames (like netem's
``limit``); a frame arriving at a full line is dropped and counted.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

DEFAULT_QUEUE_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class DelayParams:
    """One direction's delay settings. Units are in the names; an invalid value raises."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    queue_limit: int = DEFAULT_QUEUE_LIMIT

    def __post_init__(self) -> None:
        for name in ("delay_ms", "jitter_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if not value >= 0 or value == float("inf"):
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        limit = self.queue_limit
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"queue_limit must be an integer >= 1, got {limit!r}")


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


class DelayLine:
    """A FIFO of (due time, frame) for one direction.

    push() at arrival, next_deadline() to arm the event loop's timer, pop_due(now) when it
    fires. `late_*` stats measure how far after its due time a frame was actually popped: the
    timer error of the process running the line.
    """

    def __init__(self, params: DelayParams, rng: random.Random) -> None:
        self._params = params
        self._rng = rng
        self._queue: deque[tuple[float, bytes]] = deque()
        self._last_due = float("-inf")
        self.stats = DelayStats()

    @property
    def params(self) -> DelayParams:
        return self._params

    def set_params(self, params: DelayParams) -> None:
        """New settings for frames pushed from now on; queued frames keep their due times.

        A lower queue limit never evicts frames already queued: it only refuses new ones until
        the line has drained below it.
        """
        self._params = params

    def __len__(self) -> int:
        return len(self._queue)

    def push(self, frame: bytes, now: float) -> bool:
        """Queue `frame`; False (and counted) when the line is full."""
        params = self._params
        if len(self._queue) >= params.queue_limit:
            self.stats.dropped_queue_full += 1
            return False
        delay_ms = params.delay_ms
        if params.jitter_ms:
            delay_ms = max(0.0, delay_ms + self._rng.uniform(-params.jitter_ms, params.jitter_ms))
        due = now + delay_ms / 1000.0
        if due < self._last_due:
            due = self._last_due
        self._last_due = due
        self._queue.append((due, frame))
        stats = self.stats
        stats.pushed += 1
        applied_ms = (due - now) * 1000.0
        stats.applied_sum_ms += applied_ms
        if stats.applied_min_ms is None or applied_ms < stats.applied_min_ms:
            stats.applied_min_ms = applied_ms
        if stats.applied_max_ms is None or applied_ms > stats.applied_max_ms:
            stats.applied_max_ms = applied_ms
        if len(self._queue) > stats.max_depth:
            stats.max_depth = len(self._queue)
        return True

    def bypass(self) -> bool:
        """True (and counted as pushed and released with 0 ms) when a frame arriving now may
        leave at once: no delay, no jitter and nothing queued, so it would be due immediately
        and overtake nothing. Saves the queue round trip on the forwarding fast path."""
        if self._queue:
            return False
        params = self._params
        if params.delay_ms or params.jitter_ms:
            return False
        stats = self.stats
        stats.pushed += 1
        stats.released += 1
        if stats.applied_max_ms is None:  # first frame: it was neither delayed nor late
            stats.applied_max_ms = 0.0
        if stats.applied_min_ms is None or stats.applied_min_ms > 0.0:
            stats.applied_min_ms = 0.0
            stats.max_depth = max(stats.max_depth, 1)
        return True

    def next_deadline(self) -> float | None:
        """Due time of the head frame, or None when the line is empty."""
        return self._queue[0][0] if self._queue else None

    def pop_due(self, now: float) -> list[bytes]:
        """Every frame due at or before `now`, in arrival order."""
        queue = self._queue
        due_frames: list[bytes] = []
        stats = self.stats
        while queue and queue[0][0] <= now:
            due, frame = queue.popleft()
            late_ms = (now - due) * 1000.0
            stats.late_sum_ms += late_ms
            if late_ms > stats.late_max_ms:
                stats.late_max_ms = late_ms
            due_frames.append(frame)
        stats.released += len(due_frames)
        return due_frames
