"""One middlebox chain: the boxes at one place on a path, in path order, sans-IO.

The inline process (testbed.inline.pipeline, on frames) and the simulator (testbed.sim.chain,
in virtual time) both run their boxes through this class, so a chain behaves the same in both.

Order is spatial: the list runs from the client side to the server side, so packets travelling
UPSTREAM meet the boxes in list order and DOWNSTREAM in reverse. A box may return several
packets, none, or hold some back; a held packet comes back through the box's `release` at its
`next_deadline` and continues with the boxes after that box in its direction (`run(...,
after=index)`). Timers belong to the caller: the inline loop polls `next_deadline`, the
simulator schedules one event per box.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from middleboxes.contract import Direction, Middlebox
from testbed.wire.types import Packet


class MiddleboxChain:
    """Boxes in path order (client side first)."""

    def __init__(self, boxes: Sequence[Middlebox]) -> None:
        self.boxes: list[Middlebox] = list(boxes)
        count = len(self.boxes)
        # Per direction, built once: the per-packet path must not rebuild them.
        self._orders = {Direction.UPSTREAM: list(range(count)),
                        Direction.DOWNSTREAM: list(range(count))[::-1]}
        self._full = {Direction.UPSTREAM: self.boxes, Direction.DOWNSTREAM: self.boxes[::-1]}

    def __len__(self) -> int:
        return len(self.boxes)

    def order(self, direction: Direction) -> list[int]:
        """Indexes of the boxes in the order a packet travelling in `direction` meets them."""
        return self._orders[direction]

    def boxes_after(self, direction: Direction, index: int | None = None) -> list[Middlebox]:
        """The boxes a packet travelling in `direction` meets, after box `index` if given."""
        if index is None:
            return self._full[direction]
        if direction is Direction.UPSTREAM:
            return self.boxes[index + 1:]
        return self.boxes[:index][::-1]

    def run(self, packets: list[Packet], direction: Direction, now: float,
            after: int | None = None) -> list[Packet]:
        """What leaves the chain for `packets` entering it (after box `after`, if given)."""
        for box in self.boxes_after(direction, after):
            if not packets:
                break
            out: list[Packet] = []
            for packet in packets:
                out.extend(box.process(packet, direction, now))
            packets = out
        return packets

    def next_deadline(self) -> float | None:
        """The earliest time any box wants `release` called, or None."""
        deadlines = [d for box in self.boxes if (d := box.next_deadline()) is not None]
        return min(deadlines) if deadlines else None

    def release_due(self, now: float) -> Iterator[tuple[int, Packet, Direction]]:
        """Packets the boxes whose deadline has come release now, each with the index of the box
        that held it: it continues with `run([packet], direction, now, after=index)`.

        Lazy, box by box in list order: run each packet on before taking the next, so a later
        box's deadline is read after the earlier releases have passed through it."""
        for index, box in enumerate(self.boxes):
            deadline = box.next_deadline()
            if deadline is None or deadline > now:
                continue
            for packet, direction in box.release(now):
                yield index, packet, direction

    def counters_by_name(self) -> dict[str, dict[str, int]]:
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
