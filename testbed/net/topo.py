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

Address families (docs/ipv6.md): a topology is "ipv4", "ipv6" or "dual"; each link carries the
topology's families unless drawn with its own. A link's IPv4 subnet also names its IPv6 one
(`ula_subnet`: 10.0.1.0/24 -> fd00:10:0:1::/64), so the same host number ends both addresses
and routes, per-source rules and MPTCP endpoints are computed per family from one drawing.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from testbed.errors import SpecError
from testbed.net.params import LinkParams
from testbed.wire.ipv6 import is_ipv6_text

MAX_NODE_NAME = 10  # "<node>-eth<N>" must fit the kernel's 15-character interface names
FAMILIES: dict[str, tuple[int, ...]] = {"ipv4": (4,), "ipv6": (6,), "dual": (4, 6)}
ULA_PREFIX = "fd00"  # the testbed's unique local prefix (RFC 4193 form, not randomised: no leak)


def check_family(family: object, where: str) -> tuple[int, ...]:
    """The IP versions a `family` parameter names; a SpecError naming the choices otherwise."""
    if not isinstance(family, str) or family not in FAMILIES:
        raise SpecError(f"{where}: family={family!r} must be one of {', '.join(FAMILIES)}")
    return FAMILIES[family]


def ula_subnet(ipv4_subnet: str) -> str:
    """The IPv6 /64 of a link drawn with an IPv4 subnet: the first three octets, written in
    decimal, become the three groups after the ULA prefix (192.168.1.0/24 ->
    fd00:192:168:1::/64), so an address reads the same in both families."""
    octets = str(ipaddress.ip_network(ipv4_subnet).network_address).split(".")[:3]
    return f"{ULA_PREFIX}:{':'.join(octets)}::/64"


def ip_version(address: str) -> int:
    """4 or 6 for an address or network in text ("10.0.1.1", "fd00::1/64", "[fd00::1]")."""
    return 6 if is_ipv6_text(address) else 4


def host_port(address: str, port: int) -> str:
    """"10.0.1.1:5201" or "[fd00::1]:5201": an address and port as reports print them."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def family_label(address: str) -> str:
    """"IPv4" or "IPv6" for an address as reports print it ("10.0.1.1:5201", "[fd00::1]:5201");
    an IPv4-mapped IPv6 address is IPv4 on the wire."""
    text = address.strip()
    if text.startswith("["):
        text = text[1:].split("]")[0]
    elif text.count(":") == 1:
        text = text.split(":")[0]
    try:
        parsed = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return "?"
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is None:
        return "IPv6"
    return "IPv4"


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
    """One end of a veth: `address` is "A.B.C.D/len" and `address6` "X::Y/len" on L3 nodes of
    links carrying that family; both None on middlebox legs."""

    node: str
    name: str
    address: str | None
    link: str
    address6: str | None = None

    @property
    def addresses(self) -> list[str]:
        """Every address with its prefix length, IPv4 first."""
        return [a for a in (self.address, self.address6) if a]

    def address_of_version(self, version: int) -> str | None:
        """The address (with prefix length) of one family, None if the link does not carry it."""
        return self.address if version == 4 else self.address6


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
    subnet: str  # IPv4; it also names the IPv6 subnet (ula_subnet) unless subnet6 is given
    segments: list[Segment] = field(default_factory=list)
    versions: tuple[int, ...] = (4,)
    subnet6: str = ""
    # prefixes beyond the link's own subnets that are reached through its `a` end (an NPTv6
    # box's outside prefix): the router on the link sends them to `a`'s address
    routed_to_a: list[str] = field(default_factory=list)

    def subnet_of_version(self, version: int) -> str:
        return self.subnet if version == 4 else self.subnet6

    @property
    def a_interface(self) -> Interface:
        return self.segments[0].left

    @property
    def b_interface(self) -> Interface:
        return self.segments[-1].right

    def address_of(self, node: str, version: int | None = None) -> str:
        """The address of an end of the link (no prefix length); `version` None: IPv4 if the
        link carries it, else IPv6."""
        iface = self.a_interface if node == self.a else self.b_interface
        address = iface.address_of_version(version) if version else (iface.address or iface.address6)
        assert address is not None, f"link {self.name} has no IPv{version} address on {node}"
        return address.split("/")[0]


@dataclass(frozen=True, slots=True)
class Route:
    destination: str  # "default" or a CIDR
    via: str | None
    device: str
    table: int | None = None  # None = main table
    version: int = 4


@dataclass(frozen=True, slots=True)
class SourceRule:
    source: str
    table: int

    @property
    def version(self) -> int:
        return ip_version(self.source)


class Topology:
    """A network drawn as data. Call `finalize()` (done by the builders' callers) before use."""

    def __init__(self, name: str, description: str = "", *, family: str = "ipv4",
                 initial_family: str | None = None) -> None:
        self.name = name
        self.description = description
        self.family = family
        self.versions = check_family(family, f"topology {name}")
        # the family of the client's first subflow (the runner binds and connects with it)
        self.initial_version = 6 if self.versions == (6,) else 4
        if initial_family is not None:
            initial = check_family(initial_family, f"topology {name}: initial")
            if len(initial) != 1 or initial[0] not in self.versions:
                raise SpecError(f"topology {name}: initial={initial_family!r} must be one family "
                                f"the topology carries ({' or '.join(f'ipv{v}' for v in self.versions)})")
            self.initial_version = initial[0]
        self.nodes: dict[str, NodeSpec] = {}
        self.links: dict[str, LinkSpec] = {}
        self.routes: dict[str, list[Route]] = {}
        self.rules: dict[str, list[SourceRule]] = {}
        self.client = ""
        self.server = ""
        # an IPv6-only client reaches IPv4 servers at addresses under this /96 (a NAT64 on
        # its paths): the runner dials the server's IPv4 address embedded in it
        self.nat64_prefix: str | None = None
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
        family: str | None = None,
    ) -> str:
        """`family` None: the topology's; a link may carry fewer families than the topology
        (dual_path's IPv4-only and IPv6-only paths), never one it does not carry."""
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
            raise SpecError(f"topology {self.name}: link {link_name}: subnet {network!r} is IPv6; "
                            f"give the IPv4 subnet, its IPv6 /64 follows from it ({ULA_PREFIX}:A:B:C::/64)")
        try:
            ipaddress.IPv4Network(network)
        except ValueError as exc:
            raise SpecError(f"topology {self.name}: link {link_name}: bad subnet {network!r}") from exc
        versions = self.versions if family is None else check_family(family, f"link {link_name}")
        if not set(versions) <= set(self.versions):
            raise SpecError(f"topology {self.name}: link {link_name} carries {family}, which the "
                            f"{self.family} topology does not")
        self.links[link_name] = LinkSpec(link_name, a, b, list(via), params or LinkParams(), network,
                                         versions=versions, subnet6=ula_subnet(network))
        return link_name

    def route_to_client_end(self, link_name: str, prefix: str) -> None:
        """Route `prefix` through link `link_name` to its client-side (`a`) end, from every
        router: what a network does for a translator's outside prefix (NPTv6) when the
        translator is a bump on that link and owns no address of its own. On a link that does
        not carry the prefix's family the router's route is on-link: a NAT64 pool address,
        for which the bump answers ARP."""
        link = self.links.get(link_name)
        if link is None:
            raise SpecError(f"topology {self.name}: no link {link_name!r} to route {prefix} to "
                            f"(links: {', '.join(self.links)})")
        try:
            network = ipaddress.ip_network(prefix)
        except ValueError:
            raise SpecError(f"topology {self.name}: link {link_name}: {prefix!r} is not a prefix "
                            "(bits set after its length?)") from None
        if network.version not in self.versions:
            raise SpecError(f"topology {self.name}: carries no IPv{network.version} for {prefix}")
        link.routed_to_a.append(str(network))

    # --- derived data -------------------------------------------------------------------------
    def finalize(self) -> Topology:
        """Assign interface names and addresses and compute routes and policy rules."""
        if self._finalized:
            return self
        if not self.client or not self.server:
            raise SpecError(f"topology {self.name}: builder must set client and server hosts")
        counters = dict.fromkeys(self.nodes, 0)

        def new_interface(node: str, link: str, address: str | None, address6: str | None) -> Interface:
            index = counters[node]
            counters[node] += 1
            return Interface(node, f"{node}-eth{index}", address, link, address6)

        for link in self.links.values():
            ends: dict[int, tuple[str, str]] = {}
            for version in link.versions:
                network = ipaddress.ip_network(link.subnet_of_version(version))
                first, second = network.network_address + 1, network.network_address + 2
                ends[version] = (f"{first}/{network.prefixlen}", f"{second}/{network.prefixlen}")
            chain = [link.a, *link.via, link.b]
            for i in range(len(chain) - 1):
                left = [ends[v][0] if v in ends and i == 0 else None for v in (4, 6)]
                right = [ends[v][1] if v in ends and i == len(chain) - 2 else None for v in (4, 6)]
                link.segments.append(Segment(
                    new_interface(chain[i], link.name, *left),
                    new_interface(chain[i + 1], link.name, *right),
                ))
        self._compute_routes()
        self._finalized = True
        return self

    def l3_interfaces(self, node: str, version: int | None = None) -> list[tuple[LinkSpec, Interface, str]]:
        """(link, local interface, peer address) for each IP link of an L3 node; with `version`,
        only the links carrying that family, with the peer's address of that family."""
        out = []
        for link in self.links.values():
            if version is not None and version not in link.versions:
                continue
            if link.a == node:
                out.append((link, link.a_interface, link.address_of(link.b, version)))
            elif link.b == node:
                out.append((link, link.b_interface, link.address_of(link.a, version)))
        return out

    def _next_hops(self, start: str, version: int) -> dict[str, tuple[LinkSpec, str]]:
        """For every L3 node reachable from `start` over links of one family: the first link and
        peer on a shortest path."""
        first: dict[str, tuple[LinkSpec, str]] = {}
        queue: deque[str] = deque([start])
        seen = {start}
        while queue:
            node = queue.popleft()
            for link, _iface, _peer_addr in self.l3_interfaces(node, version):
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
            self.routes[name] = []
            self.rules[name] = []
            for version in self.versions:
                if node.kind is NodeKind.HOST:
                    self._host_routes(name, version)
                else:
                    self._router_routes(name, version)

    def _host_routes(self, name: str, version: int) -> None:
        """A default route through the first router, and, on a host with several interfaces of
        this family, one table per source address so each subflow leaves where its address
        lives (the replies too)."""
        own = self.l3_interfaces(name, version)
        gateways = [(iface, peer_addr) for link, iface, peer_addr in own
                    if self.nodes[link.b if link.a == name else link.a].kind is NodeKind.ROUTER]
        if gateways:
            iface, gw = gateways[0]
            self.routes[name].append(Route("default", gw, iface.name, version=version))
        if len(own) > 1:
            for link, iface, peer_addr in own:
                table = 100 + int(iface.name.rsplit("-eth", 1)[1])
                self.routes[name].append(Route(link.subnet_of_version(version), None, iface.name, table,
                                               version))
                self.routes[name].append(Route("default", peer_addr, iface.name, table, version))
                address = iface.address_of_version(version)
                assert address is not None
                self.rules[name].append(SourceRule(address.split("/")[0], table))

    def _router_routes(self, name: str, version: int) -> None:
        """A route to every subnet of this family that is not on the router, through the first
        router on a shortest path; IPv4 subnets behind a NAT stay private (IPv6 is routed, as
        on a dual-stack home gateway)."""
        hops = self._next_hops(name, version)
        direct = {link.name for link, _i, _p in self.l3_interfaces(name, version)}
        private = {s for n in self.nodes.values() for s in n.nat_subnets} if version == 4 else set()
        for link in self.links.values():
            if version not in link.versions or link.name in direct or link.subnet in private:
                continue
            # a subnet is reached through a router on it: hosts do not forward
            candidates = [hops[end] for end in (link.a, link.b)
                          if end in hops and self.nodes[end].kind is NodeKind.ROUTER]
            if not candidates:
                continue
            first_link, peer = candidates[0]
            iface = first_link.a_interface if first_link.a == name else first_link.b_interface
            self.routes[name].append(Route(link.subnet_of_version(version),
                                           first_link.address_of(peer, version), iface.name,
                                           version=version))
        for link in self.links.values():
            for prefix in link.routed_to_a:
                if ip_version(prefix) != version:
                    continue
                if link.b == name:  # on the link: to the client end's address, or on-link
                    via = link.address_of(link.a, version) if version in link.versions else None
                    self.routes[name].append(Route(prefix, via, link.b_interface.name,
                                                   version=version))
                elif link.b in hops:
                    first_link, peer = hops[link.b]
                    iface = first_link.a_interface if first_link.a == name else first_link.b_interface
                    self.routes[name].append(Route(prefix, first_link.address_of(peer, version),
                                                   iface.name, version=version))

    # --- queries ------------------------------------------------------------------------------
    def host_addresses(self, node: str, version: int | None = None) -> list[str]:
        """A node's addresses (no prefix length) in interface order, IPv4 before IPv6 on each."""
        return [address.split("/")[0] for _l, iface, _p in self.l3_interfaces(node)
                for address in iface.addresses if version is None or ip_version(address) == version]

    def link_versions(self, link_name: str) -> tuple[int, ...]:
        return self.links[link_name].versions

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
            "family": self.family,
            "initial_family": f"ipv{self.initial_version}",
            "nodes": [
                {"name": n.name, "kind": n.kind.value,
                 "addresses": [a for _l, i, _p in self.l3_interfaces(n.name) for a in i.addresses],
                 **({"masquerade": n.nat_subnets} if n.nat_subnets else {})}
                for n in self.nodes.values()
            ],
            "links": [
                {"name": link.name, "a": link.a, "b": link.b, "via": link.via,
                 "family": "dual" if len(link.versions) == 2 else f"ipv{link.versions[0]}",
                 **({"subnet": link.subnet} if 4 in link.versions else {}),
                 **({"subnet6": link.subnet6} if 6 in link.versions else {}),
                 "a_address": link.a_interface.address, "b_address": link.b_interface.address,
                 **({"a_address6": link.a_interface.address6, "b_address6": link.b_interface.address6}
                    if 6 in link.versions else {}),
                 "params": link.params.as_dict()}
                for link in self.links.values()
            ],
            "routes": {n: [r.__repr__() for r in rs] for n, rs in self.routes.items() if rs},
        }
