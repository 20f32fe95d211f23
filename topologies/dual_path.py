"""dual_path: the phone case -- wifi is IPv4 behind a home NAT, cellular is IPv6-only.

    client -eth0-- nat --[mb_a]-- isp --+
       (IPv4 192.168.1.0/24, NATed)      +-- rs ---- server   (dual stack)
    client -eth1--------[mb_b]-- cell --+
       (IPv6 only, fd00:10:0:2::/64)

Path a carries IPv4 only: `nat` masquerades 192.168.1.0/24 (kernel NAT), so the server sees
that subflow from 10.0.1.1. Path b carries IPv6 only, routed end to end. The server has both
families on one interface, so one MPTCP connection holds an IPv4 and an IPv6 subflow: the
initial subflow uses the family `initial` names ("ipv4": path a; "ipv6": path b) and the other
path joins once the server announces its address of the other family ([mptcp].server_signal).
`family` is accepted for symmetry with the other topologies and must be "dual".
"""

from __future__ import annotations

from typing import Any

from testbed.errors import SpecError
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
    initial: str = "ipv4",
    family: str = "dual",
) -> Topology:
    if family != "dual":
        raise SpecError(f"dual_path: family={family!r}: this topology is dual stack by construction "
                        "(path a IPv4, path b IPv6); use two_path for a single family")
    common = {"rate_mbit": rate_mbit, "delay_ms": delay_ms, "jitter_ms": jitter_ms,
              "loss_pct": loss_pct, "queue_pkts": queue_pkts}
    topo = Topology("dual_path", "IPv4 path behind a NAT and an IPv6-only path to a dual-stack server",
                    family="dual", initial_family=initial)
    client = topo.client = topo.add_host("client")
    server = topo.server = topo.add_host("server")
    nat = topo.add_router("nat", masquerade=["192.168.1.0/24"])
    isp, cell, rs = topo.add_router("isp"), topo.add_router("cell"), topo.add_router("rs")
    mb_a, mb_b = topo.add_middlebox("mb_a"), topo.add_middlebox("mb_b")
    topo.add_link(client, nat, name="home", subnet="192.168.1.0/24", family="ipv4")
    topo.add_link(nat, isp, name="a", via=[mb_a], subnet="10.0.1.0/24", family="ipv4",
                  params=path_params(common, path_a, "dual_path.path_a"))
    topo.add_link(client, cell, name="b", via=[mb_b], subnet="10.0.2.0/24", family="ipv6",
                  params=path_params(common, path_b, "dual_path.path_b"))
    topo.add_link(isp, rs, name="core_a", subnet="10.0.11.0/24", family="ipv4")
    topo.add_link(cell, rs, name="core_b", subnet="10.0.12.0/24", family="ipv6")
    topo.add_link(rs, server, name="server", subnet="10.0.100.0/24")
    return topo
