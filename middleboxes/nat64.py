"""nat64: stateful NAT64 (RFC 6146) from IPv6-only clients to IPv4 servers, TCP only.

Imitates a carrier's NAT64 gateway (paired with DNS64, RFC 6147): an IPv6-only client reaches
the IPv4 server 192.0.2.1 at 64:ff9b::c000:201, the well-known prefix of RFC 6052 with the IPv4
address in its last 32 bits (a /96; other prefix lengths are not modelled). A packet arriving
UPSTREAM to that prefix leaves as IPv4 from `pool_address` (the box answers ARP for it) and a
public port mapped per client address and port (endpoint-independent mapping, RFC 6146 §3.5.2,
as nat.py); DOWNSTREAM packets to a mapped pool port go back as IPv6 from 64:ff9b::<server>.
Headers follow SIIT (RFC 7915 §4.1, §5.1): traffic class <-> type of service, hop limit <->
TTL decremented once (the translator is a router), DF set, identification 0, IPv6 extension
headers dropped (a routing header with segments left is refused); the TCP checksum is computed
again over the new family's pseudo-header, and nothing in the TCP header but the translated
port changes: MP_CAPABLE, MP_JOIN, DSS and ADD_ADDR pass as they are.

The IPv6 header is 20 bytes longer, so the same segment is 20 bytes shorter in IPv4: the IPv4
side never needs fragmenting when both links have one MTU, and the IPv6 side is protected by
the MSS each end derives from its own MTU (no MSS clamping here). An ADD_ADDR from the IPv4
server carries an IPv4 address the IPv6-only client cannot reach; a box could not rewrite it
to 64:ff9b::<address> because its HMAC covers the address (RFC 8684 §3.4.1). IPv6 packets not
to the prefix pass unchanged (native IPv6 beside the NAT64); IPv4 packets from the client side
pass, and IPv4 packets to anything but a mapped pool port are dropped. ICMP and UDP are not
translated (RFC 6146 §3.5.1, §3.5.3 are not modelled).
"""

from __future__ import annotations

import ipaddress
import random
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

from middleboxes.catalogue_base import MiddleboxBase
from middleboxes.contract import Direction
from middleboxes.nat import allocate_public_port
from middleboxes.spec import CommonParams, ParamError, param
from testbed.wire.ipv6 import NEXT_HEADER_ROUTING, Ipv6Packet
from testbed.wire.types import Packet

WELL_KNOWN_PREFIX = "64:ff9b::/96"


@dataclass(frozen=True, kw_only=True)
class Nat64Params(CommonParams):
    pool_address: str = param(doc="the IPv4 address translated packets leave from (the box "
                              "answers ARP for it)")
    prefix: str = param(WELL_KNOWN_PREFIX, "the /96 that embeds IPv4 addresses (RFC 6052)")
    filtering: Literal["endpoint_independent", "address_dependent"] = param(
        "address_dependent", "which IPv4 endpoints may send through a mapping (RFC 6146 §3.5.2.3)")
    port_min: int = param(1024, "lowest pool port allocated", minimum=1, maximum=65535)
    port_max: int = param(65535, "highest pool port allocated", minimum=1, maximum=65535)
    idle_timeout_s: float = param(7440.0, "a mapping without traffic for this long expires "
                                  "(RFC 6146 §4: at least 2 h 4 min for established TCP)")

    def check(self) -> None:
        try:
            pool = ipaddress.ip_address(self.pool_address)
        except ValueError:
            raise ParamError("pool_address",
                             f"got {self.pool_address!r}, expected an IPv4 address") from None
        if pool.version != 4:
            raise ParamError("pool_address", f"got {pool}, an IPv6 address: the pool is the "
                             "IPv4 address the server sees")
        if pool.is_unspecified or pool.is_multicast:
            raise ParamError("pool_address", f"got {pool}, must be a unicast address")
        try:
            prefix = ipaddress.ip_network(self.prefix)
        except ValueError:
            raise ParamError("prefix", f"got {self.prefix!r}, expected an IPv6 /96 such as "
                             f"{WELL_KNOWN_PREFIX}") from None
        if prefix.version != 6 or prefix.prefixlen != 96:
            raise ParamError("prefix", f"got {self.prefix!r}: only an IPv6 /96 is modelled "
                             f"(RFC 6052 §2.2), e.g. {WELL_KNOWN_PREFIX}")
        if self.port_min > self.port_max:
            raise ParamError("port_min", f"port_min {self.port_min} > port_max {self.port_max}")
        if self.idle_timeout_s <= 0:
            raise ParamError("idle_timeout_s", f"got {self.idle_timeout_s}, must be > 0")


@dataclass(slots=True)
class Nat64Mapping:
    """One client transport address (IPv6) and its pool port."""

    client_addr: str
    client_port: int
    pool_port: int
    last_used: float
    remotes: set[str] = field(default_factory=set)  # IPv4 servers this mapping has sent to


def embed(prefix: ipaddress.IPv6Network, ipv4: str) -> str:
    """The IPv6 address of an IPv4 server under a /96 (RFC 6052 §2.2)."""
    return str(ipaddress.IPv6Address(int(prefix.network_address) | int(ipaddress.IPv4Address(ipv4))))


def extract(ipv6: str) -> str:
    """The IPv4 address in the last 32 bits of an address under a /96."""
    return str(ipaddress.IPv4Address(int(ipaddress.IPv6Address(ipv6)) & 0xFFFFFFFF))


class Nat64(MiddleboxBase):
    name = "nat64"
    imitates = "NAT64 gateway (RFC 6146, RFC 7915 headers, RFC 6052 prefix)"
    params_type = Nat64Params

    def __init__(self, params: Nat64Params, rng: random.Random) -> None:
        super().__init__(params, rng)
        self.params: Nat64Params = params
        self.pool = str(ipaddress.IPv4Address(params.pool_address))
        self.prefix = ipaddress.IPv6Network(params.prefix)
        self._by_client: OrderedDict[tuple[str, int], Nat64Mapping] = OrderedDict()
        self._by_port: dict[int, Nat64Mapping] = {}
        self.expired = 0
        self.exhausted = 0

    def owned_addresses(self) -> list[str]:
        return [self.pool]

    def state_counters(self) -> dict[str, int]:
        return {"mappings": len(self._by_client), "expired": self.expired,
                "exhausted": self.exhausted}

    def mappings(self) -> list[Nat64Mapping]:
        return list(self._by_client.values())

    def process(self, packet: Packet, direction: Direction, now: float) -> list[Packet]:
        self.counters.seen += 1
        self._expire(now)
        if direction is Direction.UPSTREAM:
            if type(packet) is not Ipv6Packet or ipaddress.IPv6Address(packet.dst) not in self.prefix:
                return [packet]
            return self._to_ipv4(packet, now)  # type: ignore[list-item]
        if type(packet) is Ipv6Packet:
            return [packet]
        return self._to_ipv6(packet, now)  # type: ignore[list-item]

    def _drop(self, packet: Packet | Ipv6Packet, direction: Direction, now: float,
              reason: str) -> list[Packet]:
        self.counters.dropped += 1
        self.change_log.record(now, direction, packet, f"dropped: {reason}")  # type: ignore[arg-type]
        return []

    def _expire(self, now: float) -> None:
        while self._by_client:
            oldest = next(iter(self._by_client.values()))
            if now - oldest.last_used < self.params.idle_timeout_s:
                return
            del self._by_client[(oldest.client_addr, oldest.client_port)]
            del self._by_port[oldest.pool_port]
            self.expired += 1

    def _allocate_port(self) -> int | None:
        return allocate_public_port(self.rng, self.params.port_min, self.params.port_max, self._by_port)

    def _to_ipv4(self, packet: Ipv6Packet, now: float) -> list[Packet]:
        up = Direction.UPSTREAM
        for extension in packet.extensions:
            if extension.kind == NEXT_HEADER_ROUTING and len(extension.data) > 3 and extension.data[3]:
                return self._drop(packet, up, now, "routing header with segments left "
                                  "(RFC 7915 §5.1)")
        if packet.hop_limit <= 1:
            return self._drop(packet, up, now, "hop limit exhausted")
        tcp = packet.tcp
        key = (packet.src, tcp.src_port)
        mapping = self._by_client.get(key)
        created = mapping is None
        if mapping is None:
            port = self._allocate_port()
            if port is None:
                self.exhausted += 1
                return self._drop(packet, up, now, "no free pool port")
            mapping = Nat64Mapping(packet.src, tcp.src_port, port, now)
            self._by_client[key] = mapping
            self._by_port[port] = mapping
        server = extract(packet.dst)
        mapping.remotes.add(server)
        mapping.last_used = now
        self._by_client.move_to_end(key)
        old = f"[{packet.src}]:{tcp.src_port}>[{packet.dst}]"
        tcp.src_port = mapping.pool_port
        tcp.checksum = None
        out = Packet(src=self.pool, dst=server, tcp=tcp, ttl=packet.hop_limit - 1, ident=0,
                     tos=packet.traffic_class, dont_fragment=True)
        self.counters.changed += 1
        self.change_log.record(now, up, out, f"{old} -> IPv4" + (" (new mapping)" if created else ""))
        return [out]

    def _to_ipv6(self, packet: Packet, now: float) -> list[Packet]:
        down = Direction.DOWNSTREAM
        tcp = packet.tcp
        mapping = self._by_port.get(tcp.dst_port) if packet.dst == self.pool else None
        if mapping is None:
            return self._drop(packet, down, now, "not addressed to the pool address"
                              if packet.dst != self.pool else f"no mapping for port {tcp.dst_port}")
        if self.params.filtering == "address_dependent" and packet.src not in mapping.remotes:
            return self._drop(packet, down, now, f"filtered: {packet.src} never contacted "
                              "from this mapping")
        if packet.ttl <= 1:
            return self._drop(packet, down, now, "TTL exhausted")
        mapping.last_used = now
        self._by_client.move_to_end((mapping.client_addr, mapping.client_port))
        old = f"{packet.src}:{tcp.src_port}>{packet.dst}:{tcp.dst_port}"
        tcp.dst_port = mapping.client_port
        tcp.checksum = None
        out = Ipv6Packet(embed(self.prefix, packet.src), mapping.client_addr, tcp,
                         hop_limit=packet.ttl - 1, traffic_class=packet.tos)
        self.counters.changed += 1
        self.change_log.record(now, down, packet, f"{old} -> IPv6 [{out.dst}]:{tcp.dst_port}")
        return [out]  # type: ignore[list-item]
