"""The middlebox chain of a place in the simulated network (a link, or inside a router), in
virtual time: middleboxes.chain.MiddleboxChain (the class the inline process runs too) plus
one scheduled release event per box.

Each box's event is versioned, so that a moved deadline leaves the stale event harmless; a
released packet continues with the boxes after its box. Whatever leaves the chain goes to `emit`.

A box that raises on a packet (or on a release) loses that packet, as in the inline process:
the simulation goes on and `errors` counts it by exception type.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from middleboxes.chain import MiddleboxChain
from middleboxes.contract import Direction, Middlebox
from testbed.sim.scheduler import EventScheduler
from testbed.wire.types import Packet


@dataclass(slots=True)
class _BoxTimer:
    """The release event currently scheduled for one middlebox, and its version."""

    deadline: float | None = None
    version: int = 0


class ScheduledChain:
    def __init__(self, boxes: Sequence[Middlebox], scheduler: EventScheduler,
                 emit: Callable[[Packet, Direction], None]) -> None:
        self.chain = MiddleboxChain(boxes)
        self._scheduler = scheduler
        self._emit = emit
        self._timers = [_BoxTimer() for _ in self.chain.boxes]
        self.errors: dict[str, int] = {}  # "handler:<exception type>" -> packets lost so

    @property
    def boxes(self) -> list[Middlebox]:
        return self.chain.boxes

    def __len__(self) -> int:
        return len(self.chain)

    def push(self, packet: Packet, direction: Direction) -> None:
        """A packet enters the chain from the end it meets first in `direction`."""
        self._through([packet], direction, None)

    def _count(self, error: Exception) -> None:
        key = f"handler:{type(error).__name__}"
        self.errors[key] = self.errors.get(key, 0) + 1

    def _through(self, packets: list[Packet], direction: Direction, after: int | None) -> None:
        try:
            packets = self.chain.run(packets, direction, self._scheduler.now, after)
        except Exception as error:  # a box's bug loses the packet, not the simulation
            self._count(error)
            packets = []
        for index in self.chain.order(direction):  # boxes a packet met may hold one now
            self._arm(index)
        for packet in packets:
            self._emit(packet, direction)

    def _arm(self, index: int) -> None:
        deadline = self.chain.boxes[index].next_deadline()
        timer = self._timers[index]
        if deadline is None or (timer.deadline is not None and timer.deadline <= deadline):
            return
        timer.deadline = deadline
        timer.version += 1
        self._scheduler.call_at(deadline, self._due, (index, timer.version))

    def _due(self, event: tuple[int, int]) -> None:
        index, version = event
        timer = self._timers[index]
        if version != timer.version:
            return
        timer.deadline = None
        try:
            released = self.chain.boxes[index].release(self._scheduler.now)
        except Exception as error:  # a box's bug loses what it held, not the simulation
            self._count(error)
            released = []
        self._arm(index)
        for packet, direction in released:
            self._through([packet], direction, index)

    def counters(self) -> dict[str, dict[str, int]]:
        """Each box's counters by name (a repeated name gets a #N suffix)."""
        return self.chain.counters_by_name()

    def errors_counted(self) -> dict[str, int]:
        return dict(self.errors)
