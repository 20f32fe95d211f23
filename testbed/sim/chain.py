"""A chain of middleboxes at one place in the network (on a link, or inside a router).

Packets travelling UPSTREAM meet the boxes in list order, DOWNSTREAM in reverse order. A box
may return several packets, none, or hold some back; held packets come back through its
`release` at its `next_deadline` (the chain keeps one scheduled event per box, versioned so
that a moved deadline leaves the stale event harmless) and continue from the box after it.
Whatever leaves the last box goes to `emit`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from middleboxes.base import Direction, Middlebox
from testbed.sim.scheduler import EventScheduler
from testbed.wire.types import Packet


@dataclass(slots=True)
class _BoxTimer:
    """The release event currently scheduled for one middlebox, and its version."""

    deadline: float | None = None
    version: int = 0


class MiddleboxChain:
    def __init__(self, boxes: Sequence[Middlebox], scheduler: EventScheduler,
                 emit: Callable[[Packet, Direction], None]) -> None:
        self.boxes: list[Middlebox] = list(boxes)
        self._scheduler = scheduler
        self._emit = emit
        self._timers = [_BoxTimer() for _ in self.boxes]
        self._orders = {
            Direction.UPSTREAM: list(range(len(self.boxes))),
            Direction.DOWNSTREAM: list(range(len(self.boxes)))[::-1],
        }

    def __len__(self) -> int:
        return len(self.boxes)

    def push(self, packet: Packet, direction: Direction) -> None:
        """A packet enters the chain from the end it meets first in `direction`."""
        self._through([packet], direction, 0)

    def _through(self, packets: list[Packet], direction: Direction, start: int) -> None:
        order = self._orders[direction]
        now = self._scheduler.now
        for position in range(start, len(order)):
            index = order[position]
            box = self.boxes[index]
            out: list[Packet] = []
            for packet in packets:
                out.extend(box.process(packet, direction, now))
            self._arm(index)
            packets = out
            if not packets:
                return
        for packet in packets:
            self._emit(packet, direction)

    def _arm(self, index: int) -> None:
        deadline = self.boxes[index].next_deadline()
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
        released = self.boxes[index].release(self._scheduler.now)
        self._arm(index)
        for packet, direction in released:
            position = self._orders[direction].index(index)
            self._through([packet], direction, position + 1)

    def counters(self) -> dict[str, dict[str, int]]:
        """Each box's counters by name (a repeated name gets a #N suffix)."""
        out: dict[str, dict[str, int]] = {}
        for box in self.boxes:
            name = box.name
            suffix = 2
            while name in out:
                name = f"{box.name}#{suffix}"
                suffix += 1
            out[name] = box.counters.as_dict()
        return out
