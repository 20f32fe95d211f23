"""A link between two nodes: two independently shaped directions and optional middleboxes.

Direction.UPSTREAM is node_a -> node_b, so build links with the client-side node as `node_a`.
A packet entering the link goes through the link's middlebox chain (testbed.sim.chain, over
middleboxes.chain: a to b for UPSTREAM, b to a for DOWNSTREAM), then through the shaper of its
direction. Any object
with the middleboxes.contract.Middlebox shape drops in unchanged.

With the codec on, each packet is encoded when it enters the shaper (its exact length sets the
serialization time) and decoded on arrival, so every hop exercises testbed.wire; a packet the
codec refuses is dropped and counted as malformed, with the codec's message kept.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from middleboxes.contract import Direction, Middlebox
from testbed.net.params import LinkParams
from testbed.sim.chain import ScheduledChain
from testbed.sim.packets import WireCodec, copy_packet, packet_size
from testbed.sim.scheduler import EventScheduler
from testbed.sim.shaper import Shaper
from testbed.wire.errors import WireError
from testbed.wire.types import Packet

if TYPE_CHECKING:
    from testbed.sim.nodes import Node

MAX_MALFORMED_MESSAGES = 20


class Link:
    """Two shapers (one per direction) plus a middlebox chain, between node_a and node_b."""

    def __init__(
        self,
        name: str,
        node_a: Node,
        node_b: Node,
        upstream: LinkParams,
        downstream: LinkParams,
        *,
        scheduler: EventScheduler,
        rng_for: Callable[[str], random.Random],
        codec: WireCodec | None,
        middleboxes: Sequence[Middlebox],
        on_arrival: Callable[[Node, Packet, Link], None],
    ) -> None:
        self.name = name
        self.node_a = node_a
        self.node_b = node_b
        self.malformed = 0
        self.malformed_messages: list[str] = []
        self._scheduler = scheduler
        self._codec = codec
        self._on_arrival = on_arrival
        self.shapers: dict[Direction, Shaper] = {
            Direction.UPSTREAM: Shaper(
                f"{name}:up", upstream, rng_for(f"link/{name}/upstream"), scheduler,
                self._arrival_handler(node_b, Direction.UPSTREAM)),
            Direction.DOWNSTREAM: Shaper(
                f"{name}:down", downstream, rng_for(f"link/{name}/downstream"), scheduler,
                self._arrival_handler(node_a, Direction.DOWNSTREAM)),
        }
        self.chain = ScheduledChain(middleboxes, scheduler, self._enter_shaper)
        # Observers of every packet the link delivers: (virtual time, direction, packet).
        self.taps: list[Callable[[float, Direction, Packet], None]] = []

    @property
    def middleboxes(self) -> list[Middlebox]:
        return self.chain.boxes

    # --- control -------------------------------------------------------------------------
    def other_end(self, node: Node) -> Node:
        if node is self.node_a:
            return self.node_b
        if node is self.node_b:
            return self.node_a
        raise ValueError(f"link {self.name}: node {node.name} is not on this link")

    def cut(self) -> None:
        """Both directions down (a cable pulled): queued and in-flight packets are lost."""
        for shaper in self.shapers.values():
            shaper.cut()

    def restore(self) -> None:
        for shaper in self.shapers.values():
            shaper.restore()

    @property
    def is_up(self) -> bool:
        return all(shaper.is_up for shaper in self.shapers.values())

    def set_params(self, params: LinkParams, direction: Direction | None = None) -> None:
        """New shaping for one direction, or both when `direction` is None."""
        for which, shaper in self.shapers.items():
            if direction is None or which is direction:
                shaper.set_params(params)

    def change_params(self, changes: dict[str, object],
                      direction: Direction | None = None) -> None:
        """Change only the named fields (LinkParams names) of each direction's current
        shaping, like `tc change` with the rest of the state carried over."""
        for which, shaper in self.shapers.items():
            if direction is None or which is direction:
                shaper.set_params(shaper.params.updated(changes))

    # --- data path -----------------------------------------------------------------------
    def send(self, packet: Packet, sender: Node) -> None:
        """`sender` (one of the two ends) puts `packet` on this link now."""
        direction = Direction.UPSTREAM if sender is self.node_a else Direction.DOWNSTREAM
        if self.chain:
            if self._codec is not None:
                decoded = self._round_trip(packet)
                if decoded is None:
                    return
                packet = decoded
            else:
                packet = copy_packet(packet)
            self.chain.push(packet, direction)
        else:
            self._enter_shaper(packet, direction)

    def _enter_shaper(self, packet: Packet, direction: Direction) -> None:
        shaper = self.shapers[direction]
        if self._codec is None:
            shaper.enqueue(packet, packet_size(packet))
            return
        try:
            data = self._codec.encode(packet)
        except WireError as error:
            self._count_malformed(f"encode on {shaper.name}: {error}")
            return
        shaper.enqueue(data, len(data))

    def _arrival_handler(self, receiver: Node, direction: Direction) -> Callable[[Any], None]:
        def arrived(item: Any) -> None:
            if self._codec is None:
                for tap in self.taps:
                    tap(self._scheduler.now, direction, item)
                self._on_arrival(receiver, item, self)
                return
            try:
                packet = self._codec.decode(item)
                if self._codec.verify is not None and not self._codec.verify(item):
                    raise WireError("checksum", "IPv4 or TCP checksum of an encoded packet "
                                                "does not verify")
            except WireError as error:
                self._count_malformed(f"decode at {receiver.name}: {error}")
                return
            for tap in self.taps:
                tap(self._scheduler.now, direction, packet)
            self._on_arrival(receiver, packet, self)

        return arrived

    def _round_trip(self, packet: Packet) -> Packet | None:
        assert self._codec is not None
        try:
            return self._codec.decode(self._codec.encode(packet))
        except WireError as error:
            self._count_malformed(f"round trip before middleboxes of {self.name}: {error}")
            return None

    def _count_malformed(self, message: str) -> None:
        self.malformed += 1
        if len(self.malformed_messages) < MAX_MALFORMED_MESSAGES:
            self.malformed_messages.append(message)

    # --- reporting -----------------------------------------------------------------------
    def counters(self) -> dict[str, object]:
        """Per-direction shaper counters, malformed drops and each middlebox's counters."""
        return {
            "up": self.is_up,
            "upstream": self.shapers[Direction.UPSTREAM].counters.as_dict(),
            "downstream": self.shapers[Direction.DOWNSTREAM].counters.as_dict(),
            "malformed": self.malformed,
            "malformed_messages": list(self.malformed_messages),
            "middleboxes": self.chain.counters(),
            "middlebox_errors": self.chain.errors_counted(),
        }
