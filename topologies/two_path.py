"""two_path: the IETF 80 (Prague) demo network.

    client -eth0--[mb_a]-- ra --+
                                 +-- rs ---- server
    client -eth1--[mb_b]-- rb --+

The client has two interfaces, each through its own access router (paths "a" and "b", 100 Mbit/s
each by default); both routers reach the single-homed server through a core router rs over
unshaped links, so the shaped access links are the bottlenecks and each subflow keeps to its
path in both directions. mb_a and mb_b are middlebox bumps on the access links: plain wires
unless a spec puts middleboxes on them. `routed_to_client = { a = "fd00:99:0:1::/64" }` routes an
extra prefix to the client over a path (every router learns it; ra sends it to the client's
address): the outside prefix of an nptv6 box on mb_a (docs/ipv6-middleboxes.md).
"""

from __future__ import annotations

from typing import Any

from testbed.errors import SpecError
from testbed.net.topo import Topology
from topologies._paths import path_params


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
    routed_to_client: dict[str, str] | None = None,
) -> Topology:
    common = {"rate_mbit": rate_mbit, "delay_ms": delay_ms, "jitter_ms": jitter_ms,
              "loss_pct": loss_pct, "queue_pkts": queue_pkts}
    topo = Topology("two_path", "client with two 100 Mbit/s paths to a single-homed server", family=family)
    client = topo.client = topo.add_host("client")
    server = topo.server = topo.add_host("server")
    ra, rb, rs = topo.add_router("ra"), topo.add_router("rb"), topo.add_router("rs")
    mb_a, mb_b = topo.add_middlebox("mb_a"), topo.add_middlebox("mb_b")
    topo.add_link(client, ra, name="a", via=[mb_a], subnet="10.0.1.0/24",
                  params=path_params(common, path_a, "two_path.path_a"))
    topo.add_link(client, rb, name="b", via=[mb_b], subnet="10.0.2.0/24",
                  params=path_params(common, path_b, "two_path.path_b"))
    topo.add_link(ra, rs, name="core_a", subnet="10.0.11.0/24")
    topo.add_link(rb, rs, name="core_b", subnet="10.0.12.0/24")
    topo.add_link(rs, server, name="server", subnet="10.0.100.0/24")
    if routed_to_client is not None and not isinstance(routed_to_client, dict):
        raise SpecError("two_path.routed_to_client: must be a table of path (a or b) = prefix")
    for path, prefix in (routed_to_client or {}).items():
        if path not in ("a", "b"):
            raise SpecError(f"two_path.routed_to_client: unknown path {path!r} (a or b)")
        topo.route_to_client_end(path, prefix)
    return topo
