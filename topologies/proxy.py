"""proxy: a multihomed client, two paths to an MPTCP converter proxy, a legacy server behind it.

    client -eth0--[mb_a]-- ra --+
                                 +-- proxy ---- server  (10.0.100.2, MPTCP disabled)
    client -eth1--[mb_b]-- rb --+

The client addresses the server; both its paths meet at `proxy`, a router, which is the only
way to the server, so a proxy program there can intercept every subflow transparently (an
operator's converter, IETF 80 and RFC 8803's setting). Without a proxy program the node just
routes, and the client's MPTCP falls back to TCP against the server. The server's namespace
gets `net.mptcp.enabled=0` from the experiment (testbed.proxy), not from the topology.
"""

from __future__ import annotations

from typing import Any

from testbed.net.topo import Topology
from topologies._paths import path_params

PROXY_NODE = "proxy"
SERVER_NODE = "server"


class ProxyTopology(Topology):
    """A Topology that names its proxy node (for `testbed topo show` and the spec checks)."""

    proxy = PROXY_NODE

    def describe(self) -> dict:
        return {**super().describe(), "proxy": self.proxy}


def build(
    *,
    rate_mbit: float | None = 100.0,
    delay_ms: float = 0.0,
    jitter_ms: float = 0.0,
    loss_pct: float = 0.0,
    queue_pkts: int | None = None,
    path_a: dict[str, Any] | None = None,
    path_b: dict[str, Any] | None = None,
    family: str = "ipv4",
) -> Topology:
    common = {"rate_mbit": rate_mbit, "delay_ms": delay_ms, "jitter_ms": jitter_ms,
              "loss_pct": loss_pct, "queue_pkts": queue_pkts}
    topo = ProxyTopology("proxy", "multihomed client, two paths to a converter proxy, a legacy server",
                         family=family)
    client = topo.client = topo.add_host("client")
    server = topo.server = topo.add_host(SERVER_NODE)
    ra, rb = topo.add_router("ra"), topo.add_router("rb")
    proxy = topo.add_router(PROXY_NODE)
    mb_a, mb_b = topo.add_middlebox("mb_a"), topo.add_middlebox("mb_b")
    topo.add_link(client, ra, name="a", via=[mb_a], subnet="10.0.1.0/24",
                  params=path_params(common, path_a, "proxy.path_a"))
    topo.add_link(client, rb, name="b", via=[mb_b], subnet="10.0.2.0/24",
                  params=path_params(common, path_b, "proxy.path_b"))
    topo.add_link(ra, proxy, name="core_a", subnet="10.0.11.0/24")
    topo.add_link(rb, proxy, name="core_b", subnet="10.0.12.0/24")
    topo.add_link(proxy, server, name="server", subnet="10.0.100.0/24")
    return topo
