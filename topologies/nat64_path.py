"""nat64_path: an IPv6-only client with two paths, each through a NAT64, to an IPv4-only server.

    client -eth0--[mb_a]-- ra --+
     (IPv6 only)                 +-- rs ---- server   (IPv4 only)
    client -eth1--[mb_b]-- rb --+

Paths a and b carry IPv6 only (fd00:10:0:1::/64, fd00:10:0:2::/64); the core and the server's
link carry IPv4 only. A `nat64` box on mb_a and mb_b (pool addresses `pool_a` and `pool_b`,
which ra and rb reach on-link and the other routers through them) turns the client's packets to
`prefix` (64:ff9b::/96, RFC 6052) into IPv4, and the runner dials the server's IPv4 address
under that prefix (testbed.runner.socket_address). Without the boxes nothing gets through.
`family` is accepted for symmetry with the other topologies and must be "dual".
"""

from __future__ import annotations

import ipaddress
from typing import Any

from testbed.errors import SpecError
from testbed.net.topo import Topology
from topologies._paths import path_params


def _pool(name: str, text: str, subnet: str) -> str:
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        raise SpecError(f"nat64_path.{name}: {text!r} is not an IPv4 address") from None
    if address not in ipaddress.IPv4Network(subnet):
        raise SpecError(f"nat64_path.{name}: {address} must lie in its path's {subnet}, where the "
                        "nat64 box answers ARP for it")
    return f"{address}/32"


def build(
    *,
    rate_mbit: float | None = 100.0,
    delay_ms: float = 0.0,
    jitter_ms: float = 0.0,
    loss_pct: float = 0.0,
    queue_pkts: int | None = None,
    path_a: dict[str, Any] | None = None,
    path_b: dict[str, Any] | None = None,
    pool_a: str = "10.0.1.100",
    pool_b: str = "10.0.2.100",
    prefix: str = "64:ff9b::/96",
    family: str = "dual",
) -> Topology:
    if family != "dual":
        raise SpecError(f"nat64_path: family={family!r}: this topology is IPv6 on the client's side "
                        "and IPv4 on the server's by construction; it must be \"dual\"")
    try:
        network = ipaddress.IPv6Network(prefix)
    except ValueError:
        raise SpecError(f"nat64_path.prefix: {prefix!r} is not an IPv6 prefix") from None
    if network.prefixlen != 96:
        raise SpecError(f"nat64_path.prefix: {prefix!r} must be a /96 (RFC 6052), e.g. 64:ff9b::/96")
    common = {"rate_mbit": rate_mbit, "delay_ms": delay_ms, "jitter_ms": jitter_ms,
              "loss_pct": loss_pct, "queue_pkts": queue_pkts}
    topo = Topology("nat64_path", "IPv6-only client, two paths through NAT64s, IPv4-only server",
                    family="dual", initial_family="ipv6")
    client = topo.client = topo.add_host("client")
    server = topo.server = topo.add_host("server")
    ra, rb, rs = topo.add_router("ra"), topo.add_router("rb"), topo.add_router("rs")
    mb_a, mb_b = topo.add_middlebox("mb_a"), topo.add_middlebox("mb_b")
    topo.add_link(client, ra, name="a", via=[mb_a], subnet="10.0.1.0/24", family="ipv6",
                  params=path_params(common, path_a, "nat64_path.path_a"))
    topo.add_link(client, rb, name="b", via=[mb_b], subnet="10.0.2.0/24", family="ipv6",
                  params=path_params(common, path_b, "nat64_path.path_b"))
    topo.add_link(ra, rs, name="core_a", subnet="10.0.11.0/24", family="ipv4")
    topo.add_link(rb, rs, name="core_b", subnet="10.0.12.0/24", family="ipv4")
    topo.add_link(rs, server, name="server", subnet="10.0.100.0/24", family="ipv4")
    topo.route_to_client_end("a", _pool("pool_a", pool_a, "10.0.1.0/24"))
    topo.route_to_client_end("b", _pool("pool_b", pool_b, "10.0.2.0/24"))
    topo.nat64_prefix = str(network)
    return topo
