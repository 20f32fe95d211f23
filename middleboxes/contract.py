"""The middlebox contract: a function of (packet, direction, time) -> packets out, plus state.

The same objects run in the inline packet process of a testbed node (on real packets) and in
the stack's simulated network (testbed.sim), so nothing here may do I/O, read a clock or use
global randomness: time arrives as `now` (seconds, float) and randomness from an injected
`random.Random` seeded by the experiment seed.

Direction is relative to the connection's initiator: UPSTREAM is client -> server. A node
decides the direction from which of its two legs the packet arrived on, so a middlebox never
has to guess it from addresses.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from testbed.wire.types import Packet


class Direction(enum.Enum):
    UPSTREAM = "upstream"  # client -> server (the leg nearer the client is the input)
    DOWNSTREAM = "downstream"  # server -> client

    def reverse(self) -> Direction:
        return Direction.DOWNSTREAM if self is Direction.UPSTREAM else Direction.UPSTREAM


@dataclass(slots=True)
class MiddleboxCounters:
    """Per-middlebox counts written into result.json."""

    seen: int = 0
    changed: int = 0
    dropped: int = 0
    injected: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"seen": self.seen, "changed": self.changed, "dropped": self.dropped,
                "injected": self.injected}


class Middlebox(Protocol):
    """What every middlebox implements.

    process: called once per arriving packet; returns the packets to forward now, in order
    (empty list = dropped; several = split or injected). A middlebox may hold packets back
    (delay, coalesce) and hand them out later through `release`.
    next_deadline: the earliest time a held packet is due, or None when nothing is held.
    release: the held packets due at `now`, each with the direction it travels in.
    """

    name: str
    counters: MiddleboxCounters

    def process(self, packet: Packet, direction: Direction, now: float) -> list[Packet]: ...

    def next_deadline(self) -> float | None: ...

    def release(self, now: float) -> list[tuple[Packet, Direction]]: ...
