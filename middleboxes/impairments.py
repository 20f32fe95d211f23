"""drop and delay: targeted impairments on the packets a predicate selects.

These imitate what makes MPTCP's recovery paths run in real networks: a lossy or congested
path losing exactly the packet that matters (an ADD_ADDR, which Linux retransmits only after
`add_addr_timeout`; the MP_JOIN third ACK, which RFC 8684 §3.2 makes reliable by requiring the
fourth ACK; a DATA_FIN), middleboxes that delay control packets (policers, slow-path processing
of packets with options in routers), and loss confined to one subflow. netem cannot select
packets like this, and the development kernel has no netem at all.
`delay` holds matching packets and hands them out through release(); packets that do not match
pass at once, so a delayed packet can be overtaken, which is what a slow path does.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass

from middleboxes.catalogue_base import MiddleboxBase
from middleboxes.contract import Direction
from middleboxes.predicates import MatchParams, PacketMatcher
from middleboxes.spec import ParamError, param
from testbed.wire.types import Packet


@dataclass(frozen=True, kw_only=True)
class DropParams(MatchParams):
    pass


@dataclass(frozen=True, kw_only=True)
class DelayParams(MatchParams):
    delay_ms: float = param(doc="how long matching packets are held, milliseconds",
                            minimum=0.0)
    jitter_ms: float = param(0.0, "add a uniform random extra delay in [0, jitter_ms) from the "
                             "seeded rng (may reorder delayed packets)", minimum=0.0)

    def check(self) -> None:
        super().check()
        if self.delay_ms == 0 and self.jitter_ms == 0:
            raise ParamError("delay_ms", "delay_ms and jitter_ms are both 0: nothing to delay")


class Drop(MiddleboxBase):
    name = "drop"
    imitates = "targeted loss: a lossy path or policer losing the packet that matters"
    params_type = DropParams

    def __init__(self, params: DropParams, rng: random.Random) -> None:
        super().__init__(params, rng)
        self.params: DropParams = params
        self.matcher = PacketMatcher(params, rng)

    def process(self, packet: Packet, direction: Direction, now: float) -> list[Packet]:
        self.counters.seen += 1
        if not self.matcher.decide(packet, direction):
            return [packet]
        self.counters.dropped += 1
        self.change_log.record(now, direction, packet, f"dropped ({'+'.join(self.params.match)})")
        return []


class Delay(MiddleboxBase):
    name = "delay"
    imitates = "targeted delay: slow-path processing or a queue holding selected packets"
    params_type = DelayParams

    def __init__(self, params: DelayParams, rng: random.Random) -> None:
        super().__init__(params, rng)
        self.params: DelayParams = params
        self.matcher = PacketMatcher(params, rng)
        self._queue: list[tuple[float, int, Packet, Direction]] = []
        self._arrivals = 0

    def process(self, packet: Packet, direction: Direction, now: float) -> list[Packet]:
        self.counters.seen += 1
        if not self.matcher.decide(packet, direction):
            return [packet]
        hold_ms = self.params.delay_ms
        if self.params.jitter_ms:
            hold_ms += self.rng.random() * self.params.jitter_ms
        self._arrivals += 1
        heapq.heappush(self._queue, (now + hold_ms / 1000.0, self._arrivals, packet, direction))
        self.counters.changed += 1
        self.change_log.record(now, direction, packet,
                               f"delayed {hold_ms:.3f} ms ({'+'.join(self.params.match)})")
        return []

    def next_deadline(self) -> float | None:
        return self._queue[0][0] if self._queue else None

    def release(self, now: float) -> list[tuple[Packet, Direction]]:
        released = []
        while self._queue and self._queue[0][0] <= now:
            _, _, packet, direction = heapq.heappop(self._queue)
            released.append((packet, direction))
        return released

    def flush(self, now: float) -> list[tuple[Packet, Direction]]:
        """Everything still held, in due order (for a runtime shutting down)."""
        held = [(packet, direction) for _, _, packet, direction in sorted(self._queue)]
        self._queue.clear()
        return held
