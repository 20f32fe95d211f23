"""One direction of a link: entry loss, a drop-tail queue, serialization at a rate, propagation.

Propagation is the project's one jittered FIFO (testbed.net.delayline.DelayLine, the same class
the inline delay stage runs on frames), unbounded here because the queue before it already
bounds what is in flight; with `reorder` each packet keeps its own jittered delay instead (not
a FIFO). queue_pkts None is the testbed's BDP-sized default (LinkParams.effective_queue_pkts),
so a path shapes alike here and under HTB.

Event-driven rather than computed ahead, so that a rate change or a cut at a given virtual time
affects exactly the packets that are still in the queue or on the wire at that time. A cut
drops everything queued or in flight (counted as `dropped_down`); a generation number makes
the arrival events already scheduled for those packets harmless.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from testbed.net.delayline import DelayLine
from testbed.net.params import LinkParams
from testbed.sim.scheduler import EventScheduler


@dataclass(slots=True)
class ShaperCounters:
    """What happened to the packets that entered one direction of a link."""

    packets_in: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    dropped_loss: int = 0
    dropped_queue: int = 0
    dropped_down: int = 0
    max_queue_packets: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "packets_in": self.packets_in, "bytes_in": self.bytes_in,
            "packets_out": self.packets_out, "bytes_out": self.bytes_out,
            "dropped_loss": self.dropped_loss, "dropped_queue": self.dropped_queue,
            "dropped_down": self.dropped_down, "max_queue_packets": self.max_queue_packets,
        }


class Shaper:
    """Shapes one direction; hands each surviving item to `deliver(item)` on arrival.

    Items are opaque (a Packet, or its encoded bytes when the codec runs per hop); the caller
    gives their size in bytes.
    """

    def __init__(
        self,
        name: str,
        params: LinkParams,
        rng: random.Random,
        scheduler: EventScheduler,
        deliver: Callable[[Any], None],
    ) -> None:
        self.name = name
        self.counters = ShaperCounters()
        self.is_up = True
        self._rng = rng
        self._scheduler = scheduler
        self._deliver = deliver
        self._queue: deque[tuple[Any, int]] = deque()
        self._queued_bytes = 0
        self._transmitting = False
        self._in_flight = 0  # serializing or propagating
        self._generation = 0
        self._propagation: DelayLine[tuple[Any, int]] = DelayLine(rng)
        self._propagation_armed: float | None = None
        self.set_params(params)

    @property
    def params(self) -> LinkParams:
        return self._params

    def set_params(self, params: LinkParams) -> None:
        """Applies from now on: to packets that start serializing or propagating after this."""
        self._params = params
        self._bits_per_second = None if params.rate_mbit is None else params.rate_mbit * 1e6
        self._delay_s = params.delay_ms / 1000.0
        self._jitter_s = params.jitter_ms / 1000.0
        self._loss = params.loss_pct / 100.0
        self._queue_packets = params.effective_queue_pkts()
        self._queue_bytes = params.queue_bytes
        self._reorder = params.reorder
        self._propagation.configure(params.delay_ms, params.jitter_ms, None)

    def queue_length(self) -> int:
        return len(self._queue)

    def cut(self) -> None:
        """Take the direction down: drop what is queued or on the wire, refuse new packets."""
        if not self.is_up:
            return
        self.is_up = False
        self.counters.dropped_down += len(self._queue) + self._in_flight
        self._queue.clear()
        self._queued_bytes = 0
        self._transmitting = False
        self._in_flight = 0
        self._generation += 1
        self._propagation.clear()
        self._propagation_armed = None

    def restore(self) -> None:
        self.is_up = True

    def enqueue(self, item: Any, size: int) -> None:
        """A packet of `size` bytes enters this direction now."""
        counters = self.counters
        counters.packets_in += 1
        counters.bytes_in += size
        if not self.is_up:
            counters.dropped_down += 1
            return
        if self._loss and self._rng.random() < self._loss:
            counters.dropped_loss += 1
            return
        if self._bits_per_second is None:
            self._in_flight += 1
            self._propagate(item, size)
            return
        queue = self._queue
        if self._transmitting:
            if len(queue) >= self._queue_packets or (
                self._queue_bytes is not None and self._queued_bytes + size > self._queue_bytes
            ):
                counters.dropped_queue += 1
                return
            queue.append((item, size))
            self._queued_bytes += size
            if len(queue) > counters.max_queue_packets:
                counters.max_queue_packets = len(queue)
            return
        self._in_flight += 1
        self._transmit(item, size)

    def _transmit(self, item: Any, size: int) -> None:
        self._transmitting = True
        seconds = size * 8 / self._bits_per_second  # type: ignore[operator]
        self._scheduler.call_later(seconds, self._transmitted, (item, size, self._generation))

    def _transmitted(self, event: tuple[Any, int, int]) -> None:
        item, size, generation = event
        if generation != self._generation:
            return
        self._transmitting = False
        self._propagate(item, size)
        if self._queue:
            next_item, next_size = self._queue.popleft()
            self._queued_bytes -= next_size
            self._in_flight += 1
            self._transmit(next_item, next_size)

    def _propagate(self, item: Any, size: int) -> None:
        now = self._scheduler.now
        if self._reorder:
            delay = self._delay_s
            if self._jitter_s:
                delay += self._rng.uniform(-self._jitter_s, self._jitter_s)
                if delay < 0.0:
                    delay = 0.0
            self._scheduler.call_at(now + delay, self._arrived, (item, size, self._generation))
            return
        line = self._propagation
        if not line and not self._delay_s and not self._jitter_s:
            self._arrive(item, size)  # a zero-delay hop (an unshaped core link): no event
            return
        line.push((item, size), now)
        self._arm_propagation()

    def _arm_propagation(self) -> None:
        """One event at the head item's due time (none when one is already set for it)."""
        deadline = self._propagation.next_deadline()
        if deadline is None or deadline == self._propagation_armed:
            return
        self._propagation_armed = deadline
        self._scheduler.call_at(deadline, self._propagated, self._generation)

    def _propagated(self, generation: int) -> None:
        if generation != self._generation:
            return
        self._propagation_armed = None
        for item, size in self._propagation.pop_due(self._scheduler.now):
            self._arrive(item, size)
        self._arm_propagation()

    def _arrived(self, event: tuple[Any, int, int]) -> None:
        item, size, generation = event
        if generation != self._generation:
            return
        self._arrive(item, size)

    def _arrive(self, item: Any, size: int) -> None:
        self._in_flight -= 1
        self.counters.packets_out += 1
        self.counters.bytes_out += size
        self._deliver(item)
