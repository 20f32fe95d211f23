"""Topologies as data: nodes, links, addresses and routes, computed before anything is built.

A topology builder (see topologies/) calls add_host/add_router/add_middlebox/add_link, which
return names, so the builder reads like a drawing of the network. Building the real network is
a separate step (testbed.net.build), as Mininet separates Topo from Mininet.buildFromTopo.

Node kinds:
- host: runs endpoints; multihomed hosts get per-source policy routing automatically.
- router: a forwarding host with static routes to every subnet (shortest path).
- middlebox: a two-legged L2 bump on a link (no IP addresses); forwards with a kernel bridge,
  or through the inline Python process when middleboxes or a userspace delay stage are placed
  on it.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from testbed.errors import SpecError
from testbed.net.params import LinkParams
from testbed.wire.ipv6 import IPV4_ONLY_REASON, is_ipv6_text

MAX_NODE_NAME = 10  # "<node>-eth<N>" must fit the kernel's 15-character interface names


class NodeKind(str, Enum):
    HOST = "host"
    ROUTER = "router"
    MIDDLEBOX = "middlebox"


@dataclass(slots=True)
class NodeSpec:
    name: str
    kind: NodeKind
    nat_subnets: list[str] = field(default_factory=list)  # routers that masquerade these


@dataclass(slots=True)
class Interface:
    """One end of a veth: `address` is "A.B.C.D/len" on L3 nodes, None on middlebox legs."""

    node: str
    name: str
    address: str | None
    link: str


@dataclass(slots=True)
class Segment:
    """One veth pair. A link through k middlebox nodes is k+1 segments."""

    left: Interface
    right: Interface


@dataclass(slots=True)
class LinkSpec:
    """An IP link between two L3 nodes, possibly through middlebox bumps (`via`).

    `a` is the client-side end: traffic a -> b is UPSTREAM for the middleboxes on it.
    """

    name: str
    a: str
    b: str
    via: list[str]
    params: LinkParams
    subnet: str
    segments: list[Segment] = field(default_factory=list)

    @property
    def a_interface(self) -> Interface:
        return self.segments[0].left

    @property
    def b_interface(self) -> Interface:
        return self.segments[-1].right

    def address_of(self, node: str) -> str:
        iface = self.a_interface if node == self.a else self.b_interface
        assert iface.address is not None
        return iface.address.split("/")[0]


@dataclass(frozen=True, slots=True)
class Route:
    destination: str  # "default" or a CIDR
    via: str | None
    device: str
    table: int | None = None  # None = main table


@dataclass(frozen=True, slots=True)
class SourceRule:
    source: str
    table: int


class Topology:
    """A network drawn as data. Call `finalize()` (done by the builders' callers) before use."""

    def __init__(self, name: str, description: str = "") -> None:
        self.name = name
        self.description = description
        self.nodes: dict[str, NodeSpec] = {}
        self.links: dict[str, LinkSpec] = {}
        self.routes: dict[str, list[Route]] = {}
        self.rules: dict[str, list[SourceRule]] = {}
        self.client = ""
        self.server = ""
        self._finalized = False

    # --- drawing ------------------------------------------------------------------------------
    def _add_node(self, name: str, kind: NodeKind) -> str:
        if not name.replace("_", "").isalnum() or not name[0].isalpha():
            raise SpecError(f"topology {self.name}: node name {name!r} must be alphanumeric")
        if len(name) > MAX_NODE_NAME:
            raise SpecError(
                f"topology {self.name}: node name {name!r} is longer than {MAX_NODE_NAME} characters"
            )
        if name in self.nodes:
            raise SpecError(f"topology {self.name}: node {name!r} defined twice")
        self.nodes[name] = NodeSpec(name, kind)
        return name

    def add_host(self, name: str) -> str:
        return self._add_node(name, NodeKind.HOST)

    def add_router(self, name: str, *, masquerade: list[str] | None = None) -> str:
        node = self._add_node(name, NodeKind.ROUTER)
        self.nodes[node].nat_subnets = list(masquerade or [])
        return node

    def add_middlebox(self, name: str) -> str:
        return self._add_node(name, NodeKind.MIDDLEBOX)

    def add_link(
        self,
        a: str,
        b: str,
        *,
        name: str | None = None,
        via: tuple[str, ...] | list[str] = (),
        params: LinkParams | None = None,
        subnet: str | None = None,
    ) -> str:
        for node in (a, b, *via):
            if node not in self.nodes:
                raise SpecError(f"topology {self.name}: link to unknown node {node!r}")
        for node in (a, b):
            if self.nodes[node].kind is NodeKind.MIDDLEBOX:
                raise SpecError(f"topology {self.name}: middlebox {node!r} belongs in via=, not as an end")
        for node in via:
            if self.nodes[node].kind is not NodeKind.MIDDLEBOX:
                raise SpecError(f"topology {self.name}: {node!r} in via= is not a middlebox node")
            if any(node in link.via for link in self.links.values()):
                raise SpecError(f"topology {self.name}: middlebox {node!r} is on two links")
        link_name = name or f"{a}_{b}"
        if link_name in self.links:
            raise SpecError(f"topology {self.name}: link {link_name!r} defined twice")
        network = subnet or f"10.0.{len(self.links) + 1}.0/24"
        if is_ipv6_text(network):
            raise SpecError(f"topology {self.name}: link {link_name}: subnet {network!r} is IPv6: "
                            f"{IPV4_ONLY_REASON}")
        try:
            ipaddress.ip_network(network)
        except ValueError as exc:
            raise SpecError(f"topology {self.name}: link {link_name}: bad subnet {network!r}") from exc
        self.links[link_name] = LinkSpec(link_name, a, b, list(via), params or LinkParams(), network)
        return link_name

    # --- derived data -------------------------------------------------------------------------
    def finalize(self) -> Topology:
        """Assign interface names and addresses and compute routes and policy rules."""
        if self._finalized:
            return self
        if not self.client or not self.server:
            raise SpecError(f"topology {self.name}: builder must set client and server hosts")
        counters = dict.fromkeys(self.nodes, 0)

        def new_interface(node: str, link: str, address: str | None) -> Interface:
            index = counters[node]
            counters[node] += 1
            return Interface(node, f"{node}-eth{index}", address, link)

        for link in self.links.values():
            hosts = list(ipaddress.ip_network(link.subnet).hosts())
            prefix = ipaddress.ip_network(link.subnet).prefixlen
            chain = [link.a, *link.via, link.b]
            for i in range(len(chain) - 1):
                left_addr = f"{hosts[0]}/{prefix}" if i == 0 else None
                right_addr = f"{hosts[1]}/{prefix}" if i == len(chain) - 2 else None
                link.segments.append(Segment(
                    new_interface(chain[i], link.name, left_addr),
                    new_interface(chain[i + 1], link.name, right_addr),
                ))
        self._compute_routes()
        self._finalized = True
        return self

    def l3_interfaces(self, node: str) -> list[tuple[LinkSpec, Interface, str]]:
        """(link, local interface, peer address) for each IP link of an L3 node."""
        out = []
        for link in self.links.values():
            if link.a == node:
                out.append((link, link.a_interface, link.address_of(link.b)))
            elif link.b == node:
                out.append((link, link.b_interface, link.address_of(link.a)))
        return out

    def _next_hops(self, start: str) -> dict[str, tuple[LinkSpec, str]]:
        """For every L3 node reachable from `start`: the first link and peer on a shortest path."""
        first: dict[str, tuple[LinkSpec, str]] = {}
        queue: deque[str] = deque([start])
        seen = {start}
        while queue:
            node = queue.popleft()
            for link, _iface, _peer_addr in self.l3_interfaces(node):
                peer = link.b if link.a == node else link.a
                if peer in seen:
                    continue
                seen.add(peer)
                first[peer] = (link, peer) if node == start else first[node]
                # hosts do not forward: do not route through them
                if self.nodes[peer].kind is NodeKind.ROUTER:
                    queue.append(peer)
        return first

    def _compute_routes(self) -> None:
        for name, node in self.nodes.items():
            if node.kind is NodeKind.MIDDLEBOX:
                continue
            own = self.l3_interfaces(name)
            routes: list[Route] = []
            rules: list[SourceRule] = []
            if node.kind is NodeKind.HOST:
                gateways = [(iface, peer_addr) for link, iface, peer_addr in own
                            if self.nodes[link.b if link.a == name else link.a].kind
                            is NodeKind.ROUTER]
                if gateways:
                    iface, gw = gateways[0]
                    routes.append(Route("default", gw, iface.name))
                if len(own) > 1:
                    for index, (link, iface, peer_addr) in enumerate(own):
                        table = 100 + index
                        routes.append(Route(link.subnet, None, iface.name, table))
                        routes.append(Route("default", peer_addr, iface.name, table))
                        assert iface.address is not None
                        rules.append(SourceRule(iface.address.split("/")[0], table))
            else:
                hops = self._next_hops(name)
                direct = {link.name for link, _i, _p in own}
                private = {s for n in self.nodes.values() for s in n.nat_subnets}
                for link in self.links.values():
                    if link.name in direct or link.subnet in private:
                        continue
                    # a subnet is reached through a router on it: hosts do not forward
                    candidates = [hops[end] for end in (link.a, link.b)
                                  if end in hops and self.nodes[end].kind is NodeKind.ROUTER]
                    if not candidates:
                        continue
                    first_link, peer = candidates[0]
                    iface = first_link.a_interface if first_link.a == name else first_link.b_interface
                    routes.append(Route(link.subnet, first_link.address_of(peer), iface.name))
            self.routes[name] = routes
            self.rules[name] = rules

    # --- queries ------------------------------------------------------------------------------
    def host_addresses(self, node: str) -> list[str]:
        return [iface.address.split("/")[0] for _l, iface, _p in self.l3_interfaces(node)
                if iface.address]

    def link_of_middlebox(self, node: str) -> LinkSpec:
        for link in self.links.values():
            if node in link.via:
                return link
        raise SpecError(f"topology {self.name}: {node!r} is not a middlebox node on a link")

    def describe(self) -> dict:
        """Everything `topo show` prints and result.json records."""
        self.finalize()
        return {
            "name": self.name,
            "description": self.description,
            "client": self.client,
            "server": self.server,
            "nodes": [
                {"name": n.name, "kind": n.kind.value,
                 "addresses": [i.address for _l, i, _p in self.l3_interfaces(n.name)],
                 **({"masquerade": n.nat_subnets} if n.nat_subnets else {})}
                for n in self.nodes.values()
            ],
            "links": [
                {"name": link.name, "a": link.a, "b": link.b, "via": link.via,
                 "subnet": link.subnet,
                 "a_address": link.a_interface.address, "b_address": link.b_interface.address,
                 "params": link.params.as_dict()}
                for link in self.links.values()
            ],
            "routes": {n: [r.__repr__() for r in rs] for n, rs in self.routes.items() if rs},
        }
