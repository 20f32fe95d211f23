"""Nodes of the simulated network: endpoints that host a sans-IO stack, and routers.

A multihomed endpoint routes by SOURCE address: each of its addresses is tied to one link,
as per-source policy routing does on the real testbed (PROTOCOL-NOTES.md), so a subflow
bound to an address always leaves through that address's path. Routers forward by destination
with static routes, longest prefix first.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from testbed.sim.endpoint import PacketEndpoint

if TYPE_CHECKING:
    from testbed.sim.chain import ScheduledChain
    from testbed.sim.link import Link


@dataclass(slots=True)
class NodeCounters:
    """Packets a node could not place: no route, not addressed to it, TTL expired; and, at an
    endpoint, packets its receive handler raised on (dropped and counted by reason,
    `receive:<exception type>`, as the python endpoint's driver does)."""

    sent: int = 0
    received: int = 0
    forwarded: int = 0
    dropped_no_route: int = 0
    dropped_not_local: int = 0
    dropped_ttl: int = 0
    dropped_receive_error: int = 0
    receive_error_reasons: dict[str, int] = field(default_factory=dict)
    last_receive_error: str = ""

    def count_receive_error(self, error: Exception) -> None:
        reason = f"receive:{type(error).__name__}"
        self.dropped_receive_error += 1
        self.receive_error_reasons[reason] = self.receive_error_reasons.get(reason, 0) + 1
        self.last_receive_error = f"{type(error).__name__}: {error}"[:200]

    def as_dict(self) -> dict[str, int]:
        return {
            "sent": self.sent, "received": self.received, "forwarded": self.forwarded,
            "dropped_no_route": self.dropped_no_route,
            "dropped_not_local": self.dropped_not_local, "dropped_ttl": self.dropped_ttl,
            "dropped_receive_error": self.dropped_receive_error,
        }


class Node:
    """Something links attach to."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.links: list[Link] = []
        self.counters = NodeCounters()


class EndpointNode(Node):
    """Hosts one PacketEndpoint; each address is bound to exactly one link."""

    def __init__(self, name: str, endpoint: PacketEndpoint) -> None:
        super().__init__(name)
        self.endpoint = endpoint
        self.link_by_address: dict[str, Link] = {}
        # Driving state, owned by the network: the timer event scheduled, its version, whether
        # a pump (collect packets to send, re-read the timer) is already pending at this instant.
        self.timer_deadline: float | None = None
        self.timer_version = 0
        self.pump_pending = False
        self.same_instant_timer_fires = 0
        self.last_timer_fire: float | None = None

    def check_bindable(self, address: str) -> None:
        """Raise ValueError if `address` is malformed or already bound on this node."""
        ipaddress.ip_address(address)  # raises ValueError naming a malformed address
        if address in self.link_by_address:
            raise ValueError(f"node {self.name}: address {address} is already bound to "
                             f"link {self.link_by_address[address].name}")

    def bind(self, address: str, link: Link) -> None:
        """Tie `address` to `link`: packets from that source address leave through it."""
        self.check_bindable(address)
        self.link_by_address[address] = link

    def route_for_source(self, source: str) -> Link | None:
        """The link for a packet from `source`; a single-homed node needs no source match."""
        link = self.link_by_address.get(source)
        if link is None and len(self.links) == 1 and not self.link_by_address:
            return self.links[0]
        return link


@dataclass(slots=True)
class _Route:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    link: Link


class RouterNode(Node):
    """Forwards by destination address along static routes (longest prefix wins).

    `chain` (set by the network) holds the router's own middleboxes, if any: a packet that
    arrived on a link where this router is the `b` end travelled a -> b, so it is UPSTREAM.
    """

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.chain: ScheduledChain | None = None
        self._routes: list[_Route] = []
        self._cache: dict[str, Link | None] = {}

    def add_route(self, prefix: str, link: Link) -> None:
        if link not in self.links:
            raise ValueError(f"router {self.name}: link {link.name} is not attached to it")
        network = ipaddress.ip_network(prefix, strict=False)
        self._routes.append(_Route(network, link))
        self._routes.sort(key=lambda route: route.network.prefixlen, reverse=True)
        self._cache.clear()

    def routes(self) -> list[tuple[str, str]]:
        return [(str(route.network), route.link.name) for route in self._routes]

    def route_for_destination(self, destination: str) -> Link | None:
        cached = self._cache.get(destination, False)
        if cached is not False:
            return cached  # type: ignore[return-value]
        address = ipaddress.ip_address(destination)
        found: Link | None = None
        for route in self._routes:
            if address.version == route.network.version and address in route.network:
                found = route.link
                break
        self._cache[destination] = found
        return found

