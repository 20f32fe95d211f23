"""nat_home: a client whose first path sits behind a home NAT, the second path direct (cellular).

    client -eth0-- nat --[mb_a]-- isp --+
                                          +-- rs ---- server
    client -eth1--------[mb_b]-- cell --+

`nat` is a router that masquerades the private 192.168.1.0/24 (kernel NAT, as a home gateway
does), so the server sees the first subflow from 10.0.1.1, not from the client's own address.
The Python `nat` middlebox can be placed on mb_a or mb_b for a user-space NAT instead.
"""

from __future__ import annotations

from typing import Any

from testbed.net.topo import Topology
from topologies._paths import path_params


def build(
    *,
    rate_mbit: float | None = 50.0,
    delay_ms: float = 5.0,
    jitter_ms: float = 0.0,
    loss_pct: float = 0.0,
    queue_pkts: int | None = None,
    path_a: dict[str, Any] | None = None,
    path_b: dict[str, Any] | None = None,
    family: str = "ipv4",
) -> Topology:
    common = {"rate_mbit": rate_mbit, "delay_ms": delay_ms, "jitter_ms": jitter_ms,
              "loss_pct": loss_pct, "queue_pkts": queue_pkts}
    topo = Topology("nat_home", "client behind a home NAT on path a, direct on path b", family=family)
    client = topo.client = topo.add_host("client")
    server = topo.server = topo.add_host("server")
    nat = topo.add_router("nat", masquerade=["192.168.1.0/24"])
    isp, cell, rs = topo.add_router("isp"), topo.add_router("cell"), topo.add_router("rs")
    mb_a, mb_b = topo.add_middlebox("mb_a"), topo.add_middlebox("mb_b")
    topo.add_link(client, nat, name="home", subnet="192.168.1.0/24")
    topo.add_link(nat, isp, name="a", via=[mb_a], subnet="10.0.1.0/24",
                  params=path_params(common, path_a, "nat_home.path_a"))
    topo.add_link(client, cell, name="b", via=[mb_b], subnet="10.0.2.0/24",
                  params=path_params(common, path_b, "nat_home.path_b"))
    topo.add_link(isp, rs, name="core_a", subnet="10.0.11.0/24")
    topo.add_link(cell, rs, name="core_b", subnet="10.0.12.0/24")
    topo.add_link(rs, server, name="server", subnet="10.0.100.0/24")
    return topo
