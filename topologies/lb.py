"""lb: a multihomed client in front of a layer-4 load balancer and N backend servers.

    client -eth0--[mb_a]-- ra --+                +-- be1  (10.0.101.2)
                                 +-- lb (VIP) --+-- be2  (10.0.102.2)
    client -eth1--[mb_b]-- rb --+                +-- be3  (10.0.103.2) ...

`lb` is a router that owns the virtual address (VIP, 10.0.200.1/32, on no link; with IPv6
also fd00:10:0:200::1/128, though the balancers are IPv4 only so far): ra and rb
route the VIP to it, and what it does with a packet for the VIP is the balancer variant's
business (testbed.balancer: route it to a backend that also holds the VIP, or DNAT it).
Each backend also has its own unicast address, routed through lb
as a plain router: the address a backend announces with ADD_ADDR (remedy (a) of issue 16).
Every backend runs the same server on the same port, so a subflow is served wherever it lands.
"""

from __future__ import annotations

from typing import Any

from testbed.errors import SpecError
from testbed.net.topo import Route, Topology
from topologies._paths import path_params

VIP = "10.0.200.1"
VIP6 = "fd00:10:0:200::1"  # the same digits in the ULA plan (testbed.net.topo.ula_subnet)
BALANCER_NODE = "lb"
MAX_BACKENDS = 8  # subnets 10.0.101-108.0/24; enough to show the hashing, small enough to build fast


def backend_names(count: int) -> list[str]:
    return [f"be{index}" for index in range(1, count + 1)]


class LbTopology(Topology):
    """A Topology whose access routers also route the VIP (a /32 on no link) to the balancer."""

    vip = VIP
    vip6 = VIP6
    balancer = BALANCER_NODE

    def __init__(self, backends: int, **kwargs: Any) -> None:
        super().__init__("lb", **kwargs)
        self.backends = backend_names(backends)

    def finalize(self) -> Topology:
        if self._finalized:
            return self
        super().finalize()
        for router in ("ra", "rb"):
            link = self.links[f"core_{router[1]}"]
            iface = link.a_interface if link.a == router else link.b_interface
            for version in self.versions:
                vip = f"{VIP}/32" if version == 4 else f"{VIP6}/128"
                self.routes[router].append(Route(vip, link.address_of(BALANCER_NODE, version), iface.name,
                                                 version=version))
        return self

    def describe(self) -> dict:
        return {**super().describe(), "vip": self.vip, **({"vip6": self.vip6} if 6 in self.versions else {}),
                "balancer": self.balancer, "backends": self.backends}


def build(
    *,
    backends: int = 3,
    rate_mbit: float | None = 100.0,
    delay_ms: float = 0.0,
    jitter_ms: float = 0.0,
    loss_pct: float = 0.0,
    queue_pkts: int | None = None,
    path_a: dict[str, Any] | None = None,
    path_b: dict[str, Any] | None = None,
    family: str = "ipv4",
) -> Topology:
    if isinstance(backends, bool) or not isinstance(backends, int) or not 1 <= backends <= MAX_BACKENDS:
        raise SpecError(f"topology lb: backends={backends!r}: a balancer needs 1 to {MAX_BACKENDS} "
                        f"backend servers (give backends = 3, the default)")
    common = {"rate_mbit": rate_mbit, "delay_ms": delay_ms, "jitter_ms": jitter_ms,
              "loss_pct": loss_pct, "queue_pkts": queue_pkts}
    topo = LbTopology(backends, description=f"multihomed client, a layer-4 balancer with VIP {VIP}, "
                      f"{backends} backends", family=family)
    client = topo.client = topo.add_host("client")
    ra, rb = topo.add_router("ra"), topo.add_router("rb")
    balancer = topo.add_router(BALANCER_NODE)
    mb_a, mb_b = topo.add_middlebox("mb_a"), topo.add_middlebox("mb_b")
    topo.add_link(client, ra, name="a", via=[mb_a], subnet="10.0.1.0/24",
                  params=path_params(common, path_a, "lb.path_a"))
    topo.add_link(client, rb, name="b", via=[mb_b], subnet="10.0.2.0/24",
                  params=path_params(common, path_b, "lb.path_b"))
    topo.add_link(ra, balancer, name="core_a", subnet="10.0.11.0/24")
    topo.add_link(rb, balancer, name="core_b", subnet="10.0.12.0/24")
    for index, name in enumerate(topo.backends, start=1):
        topo.add_host(name)
        topo.add_link(balancer, name, name=name, subnet=f"10.0.{100 + index}.0/24")
    topo.server = topo.backends[0]
    return topo
