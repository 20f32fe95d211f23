"""handover: a wifi-like and a cellular-like path of different rate and delay, for link flaps.

    client -eth0--[mb_wifi]-- ap  --+
                                     +-- rs ---- server
    client -eth1--[mb_cell]-- bts --+

Defaults: wifi 50 Mbit/s, 5 ms one way; cellular 10 Mbit/s, 30 ms one way. A spec's timeline
takes a path down and up (`up = false` / `up = true`) to emulate a handover.
"""

from __future__ import annotations

from typing import Any

from testbed.net.topo import Topology
from topologies._paths import path_params


def build(
    *,
    wifi: dict[str, Any] | None = None,
    cellular: dict[str, Any] | None = None,
    family: str = "ipv4",
) -> Topology:
    topo = Topology("handover", "wifi-like and cellular-like paths for link flaps", family=family)
    client = topo.client = topo.add_host("client")
    server = topo.server = topo.add_host("server")
    ap, bts, rs = topo.add_router("ap"), topo.add_router("bts"), topo.add_router("rs")
    mb_wifi, mb_cell = topo.add_middlebox("mb_wifi"), topo.add_middlebox("mb_cell")
    topo.add_link(client, ap, name="wifi", via=[mb_wifi], subnet="10.0.1.0/24",
                  params=path_params({"rate_mbit": 50.0, "delay_ms": 5.0}, wifi, "handover.wifi"))
    topo.add_link(client, bts, name="cellular", via=[mb_cell], subnet="10.0.2.0/24",
                  params=path_params({"rate_mbit": 10.0, "delay_ms": 30.0}, cellular,
                                     "handover.cellular"))
    topo.add_link(ap, rs, name="core_wifi", subnet="10.0.11.0/24")
    topo.add_link(bts, rs, name="core_cell", subnet="10.0.12.0/24")
    topo.add_link(rs, server, name="server", subnet="10.0.100.0/24")
    return topo
