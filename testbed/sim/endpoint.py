"""The shape of anything that can sit on an endpoint node of the simulated network.

It is the sans-IO shape of the bundled stack (`testbed.mptcp.host.MptcpHost`), written down
here as a Protocol so that the stack never imports the simulator: the simulator feeds packets
and time in, and takes packets and the next deadline out.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from testbed.wire.types import Packet


class PacketEndpoint(Protocol):
    """A sans-IO host.

    receive_packet: one packet addressed to one of the host's addresses arrived at `now`.
    packets_to_send: everything the host wants on the wire at `now`; the host gives up
        ownership of the returned packets (see the ownership rule in testbed.wire.types).
    get_timer: the absolute virtual time at which `handle_timer` must be called, or None.
    handle_timer: the deadline returned by `get_timer` was reached.
    """

    def receive_packet(self, packet: Packet, now: float) -> None: ...

    def packets_to_send(self, now: float) -> Iterable[Packet]: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...
