"""nat: network address and port translation (NAPT) for the private, client side of a path.

Imitates home gateways and carrier-grade NATs as characterised by RFC 4787 / RFC 5382 (TCP):
packets arriving UPSTREAM come from the private side and leave with the public address and an
allocated public port; DOWNSTREAM packets to a mapped public port are translated back, others
are dropped. Mapping is endpoint-independent (one public port per private address:port, as
RFC 5382 REQ-1 asks) or address-and-port-dependent ("symmetric": a new public port for every
remote endpoint, as many CGNs and enterprise firewalls do). Filtering decides which remote
endpoints may use a mapping. Mappings expire after `idle_timeout_s` without traffic, after
which the flow's packets are dropped (downstream) or get a new port (upstream): the "NAT
rebinding" that breaks long-idle subflows. MPTCP meets NATs in RFC 8684 §3.4 and §6: an
ADD_ADDR carrying the private address is useless to the peer, and a server cannot open
subflows towards the client.
TCP-state-aware timeouts (RFC 5382 transitory timers), hairpinning and ALGs are not modelled
here (rewrite_payload is the ALG).
"""

from __future__ import annotations

import ipaddress
import random
from collections import OrderedDict
from collections.abc import Container
from dataclasses import dataclass, field
from typing import Literal

from middleboxes.catalogue_base import MiddleboxBase
from middleboxes.contract import Direction
from middleboxes.spec import CommonParams, ParamError, param
from testbed.wire.ipv6 import is_ipv6_text
from testbed.wire.types import Packet

_RANDOM_PORT_TRIES = 32


def allocate_public_port(rng: random.Random, low: int, high: int, taken: Container[int]) -> int | None:
    """A free public port in [low, high]: random tries first (RFC 6056-like port
    randomisation), then a sweep from a random start, so a nearly full range still finds the
    last free port; None when every port is taken. Shared by nat and nat64."""
    for _ in range(_RANDOM_PORT_TRIES):
        port = rng.randint(low, high)
        if port not in taken:
            return port
    span = high - low + 1
    start = rng.randint(low, high)
    for step in range(span):
        port = low + (start - low + step) % span
        if port not in taken:
            return port
    return None


@dataclass(frozen=True, kw_only=True)
class NatParams(CommonParams):
    public_address: str = param(doc="the NAT's public IPv4 address (it answers ARP for it)")
    mapping: Literal["endpoint_independent", "address_and_port_dependent"] = param(
        "endpoint_independent", "endpoint_independent (one public port per private endpoint) "
        "or address_and_port_dependent (symmetric NAT: one per remote endpoint too)")
    filtering: Literal["endpoint_independent", "address_dependent",
                       "address_and_port_dependent"] = param(
        "address_and_port_dependent", "which remote endpoints may send through a mapping "
        "(RFC 4787 §5)")
    port_min: int = param(1024, "lowest public port allocated", minimum=1, maximum=65535)
    port_max: int = param(65535, "highest public port allocated", minimum=1, maximum=65535)
    port_preservation: bool = param(False, "keep the private source port when it is free")
    idle_timeout_s: float = param(7440.0, "a mapping without traffic for this long expires "
                                  "(RFC 5382 asks for >= 7440 s; home NATs often use far less)")
    inbound_refresh: bool = param(True, "downstream packets also keep a mapping alive")

    def check(self) -> None:
        if is_ipv6_text(self.public_address):
            raise ParamError("public_address", f"got {self.public_address!r}, an IPv6 address: the "
                             "nat box translates IPv4 only (no NPTv6 or NAT64 yet)")
        try:
            address = ipaddress.IPv4Address(self.public_address)
        except ValueError:
            raise ParamError("public_address",
                             f"got {self.public_address!r}, expected an IPv4 address") from None
        if address.is_unspecified or address.is_multicast:
            raise ParamError("public_address", f"got {address}, must be a unicast address")
        if self.port_min > self.port_max:
            raise ParamError("port_min", f"port_min {self.port_min} > port_max {self.port_max}")
        if self.idle_timeout_s <= 0:
            raise ParamError("idle_timeout_s", f"got {self.idle_timeout_s}, must be > 0")


MappingKey = tuple[str, int] | tuple[str, int, str, int]


@dataclass(slots=True)
class NatMapping:
    """One translation: a private endpoint (per remote, when symmetric) to a public port."""

    key: MappingKey
    private_addr: str
    private_port: int
    public_port: int
    last_used: float
    remotes: set[tuple[str, int]] = field(default_factory=set)


class Nat(MiddleboxBase):
    name = "nat"
    imitates = "NAPT home gateway / CGN (RFC 4787, RFC 5382; RFC 8684 §3.4, §6)"
    params_type = NatParams

    def __init__(self, params: NatParams, rng: random.Random) -> None:
        super().__init__(params, rng)
        self.params: NatParams = params
        self.public_address = str(ipaddress.IPv4Address(params.public_address))
        # Least recently used first, so expiry only ever looks at the front.
        self._by_key: OrderedDict[MappingKey, NatMapping] = OrderedDict()
        self._by_port: dict[int, NatMapping] = {}
        self.expired = 0
        self.exhausted = 0

    def owned_addresses(self) -> list[str]:
        return [self.public_address]

    def state_counters(self) -> dict[str, int]:
        """Mappings live, expired and refused for lack of ports (result.json, the soak)."""
        return {"mappings": len(self._by_key), "expired": self.expired, "exhausted": self.exhausted}

    def mappings(self) -> list[NatMapping]:
        """Live mappings, least recently used first (for tests and result files)."""
        return list(self._by_key.values())

    def process(self, packet: Packet, direction: Direction, now: float) -> list[Packet]:
        if type(packet) is not Packet:  # IPv6: a NAT44 on a dual-stack link passes it (families.py)
            return [packet]
        self.counters.seen += 1
        self._expire(now)
        if direction is Direction.UPSTREAM:
            return self._outbound(packet, now)
        return self._inbound(packet, now)

    def _expire(self, now: float) -> None:
        timeout = self.params.idle_timeout_s
        while self._by_key:
            oldest = next(iter(self._by_key.values()))
            if now - oldest.last_used < timeout:
                return
            del self._by_key[oldest.key]
            del self._by_port[oldest.public_port]
            self.expired += 1

    def _touch(self, mapping: NatMapping, now: float) -> None:
        mapping.last_used = now
        self._by_key.move_to_end(mapping.key)

    def _outbound(self, packet: Packet, now: float) -> list[Packet]:
        tcp = packet.tcp
        remote = (packet.dst, tcp.dst_port)
        key: MappingKey = (packet.src, tcp.src_port)
        if self.params.mapping == "address_and_port_dependent":
            key = (packet.src, tcp.src_port, *remote)
        mapping = self._by_key.get(key)
        created = mapping is None
        if mapping is None:
            port = self._allocate_port(tcp.src_port)
            if port is None:
                self.exhausted += 1
                self.counters.dropped += 1
                self.change_log.record(now, Direction.UPSTREAM, packet,
                                       "dropped: no free public port")
                return []
            mapping = NatMapping(key, packet.src, tcp.src_port, port, now)
            self._by_key[key] = mapping
            self._by_port[port] = mapping
        mapping.remotes.add(remote)
        self._touch(mapping, now)
        old = f"{packet.src}:{tcp.src_port}"
        packet.src = self.public_address
        tcp.src_port = mapping.public_port
        self.counters.changed += 1
        self.change_log.record(now, Direction.UPSTREAM, packet,
                               f"src {old}->{packet.src}:{tcp.src_port}"
                               + (" (new mapping)" if created else ""))
        return [packet]

    def _allocate_port(self, private_port: int) -> int | None:
        low, high = self.params.port_min, self.params.port_max
        if self.params.port_preservation and low <= private_port <= high \
                and private_port not in self._by_port:
            return private_port
        return allocate_public_port(self.rng, low, high, self._by_port)

    def _inbound(self, packet: Packet, now: float) -> list[Packet]:
        tcp = packet.tcp
        mapping = self._by_port.get(tcp.dst_port) if packet.dst == self.public_address else None
        reason = None
        if mapping is None:
            reason = ("not addressed to the public address" if packet.dst != self.public_address
                      else f"no mapping for port {tcp.dst_port}")
        elif not self._filter_allows(mapping, packet.src, tcp.src_port):
            reason = f"filtered: {packet.src}:{tcp.src_port} never contacted from this mapping"
        if reason is not None or mapping is None:
            self.counters.dropped += 1
            self.change_log.record(now, Direction.DOWNSTREAM, packet, f"dropped: {reason}")
            return []
        if self.params.inbound_refresh:
            self._touch(mapping, now)
        old = f"{packet.dst}:{tcp.dst_port}"
        packet.dst = mapping.private_addr
        tcp.dst_port = mapping.private_port
        self.counters.changed += 1
        self.change_log.record(now, Direction.DOWNSTREAM, packet,
                               f"dst {old}->{packet.dst}:{tcp.dst_port}")
        return [packet]

    def _filter_allows(self, mapping: NatMapping, remote_addr: str, remote_port: int) -> bool:
        if self.params.filtering == "endpoint_independent":
            return True
        if self.params.filtering == "address_dependent":
            return any(addr == remote_addr for addr, _ in mapping.remotes)
        return (remote_addr, remote_port) in mapping.remotes
