"""Build a simulated network from a named testbed topology (testbed.net.topo.Topology).

The same drawing then runs in Mininet namespaces or in virtual time: hosts become endpoint
nodes (each address bound to its link: per-source routing, as the real hosts' policy rules
do), routers become router nodes with the topology's computed static routes, and middlebox
bump nodes (`via`) become the middlebox chain of their link. Link parameters map one to one,
except that the queue defaults to the testbed's BDP-based length (`effective_queue_pkts`),
the same queue the real HTB/TBF shaping uses.

Masquerading routers (nat_home) are refused with a clear error: the simulator has no NAT
router; put the catalogue's `nat` middlebox on a link instead.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence

from middleboxes.contract import Middlebox
from testbed.net.params import LinkParams
from testbed.net.topo import LinkSpec, NodeKind, Topology
from testbed.sim.endpoint import PacketEndpoint
from testbed.sim.network import SimNetwork
from testbed.sim.nodes import EndpointNode, Node, RouterNode


class TopologyError(ValueError):
    """The topology cannot be simulated as asked (a host without endpoint, a NAT router...)."""


def check_simulable(topology: Topology) -> None:
    """Raise TopologyError if the simulator cannot build this topology."""
    if topology.versions != (4,):
        raise TopologyError(f"topology {topology.name}: family {topology.family!r}: the simulator is "
                            "IPv4-only so far; use family = \"ipv4\"")
    for name, spec in topology.nodes.items():
        if spec.kind is NodeKind.ROUTER and spec.nat_subnets:
            raise TopologyError(
                f"topology {topology.name}: router {name!r} masquerades "
                f"{spec.nat_subnets}; the simulator has no NAT router (put a 'nat' "
                "middlebox on a link instead)")


def sim_params(params: LinkParams) -> LinkParams:
    """The simulator's parameters for a topology link (same in both directions): the link's
    own, with the queue the testbed builds made explicit."""
    return params.updated({"queue_pkts": params.effective_queue_pkts()})


def network_from_topology(
    topology: Topology,
    endpoints: Mapping[str, PacketEndpoint],
    *,
    seed: int = 0,
    codec: bool = True,
    middleboxes: Mapping[str, Sequence[Middlebox]] | None = None,
    link_middleboxes: Mapping[str, Sequence[Middlebox]] | None = None,
    trace: bool = False,
) -> SimNetwork:
    """A SimNetwork shaped like `topology`.

    endpoints: one PacketEndpoint per host node, by host name.
    middleboxes: per middlebox node name (e.g. "mb_a"), the chain placed at that bump; the
        bumps of one link are met in `via` order going from `a` (client side) to `b`.
    link_middleboxes: per link name, a chain placed after the bumps' (nearest `b`).
    """
    topology.finalize()
    check_simulable(topology)
    middleboxes = dict(middleboxes or {})
    link_middleboxes = dict(link_middleboxes or {})
    unknown_links = sorted(set(link_middleboxes) - set(topology.links))
    if unknown_links:
        raise TopologyError(f"topology {topology.name}: middleboxes given for unknown links "
                            f"{unknown_links} (links: {sorted(topology.links)})")
    network = SimNetwork(seed, codec=codec, trace=trace)
    nodes: dict[str, Node] = {}
    for name, spec in topology.nodes.items():
        if spec.kind is NodeKind.HOST:
            if name not in endpoints:
                raise TopologyError(f"topology {topology.name}: no endpoint given for host "
                                    f"{name!r} (hosts: {sorted(_hosts(topology))})")
            nodes[name] = network.add_endpoint(name, endpoints[name])
        elif spec.kind is NodeKind.ROUTER:
            nodes[name] = network.add_router(name)
    unknown = sorted(set(endpoints) - set(_hosts(topology)))
    if unknown:
        raise TopologyError(f"topology {topology.name}: endpoints given for unknown hosts "
                            f"{unknown}")
    placed: set[str] = set()
    for link in topology.links.values():
        chain: list[Middlebox] = []
        for bump in link.via:
            chain.extend(middleboxes.get(bump, ()))
            placed.add(bump)
        chain.extend(link_middleboxes.get(link.name, ()))
        node_a, node_b = nodes[link.a], nodes[link.b]
        network.add_link(
            link.name, node_a, node_b, sim_params(link.params),
            a_address=link.address_of(link.a) if isinstance(node_a, EndpointNode) else None,
            b_address=link.address_of(link.b) if isinstance(node_b, EndpointNode) else None,
            middleboxes=chain,
        )
    stray = sorted(set(middleboxes) - placed)
    if stray:
        raise TopologyError(f"topology {topology.name}: middleboxes given for {stray}, which "
                            "are not middlebox nodes on a link")
    for name, node in nodes.items():
        if isinstance(node, RouterNode):
            _add_routes(topology, network, name, node)
    return network


def _hosts(topology: Topology) -> list[str]:
    return [name for name, spec in topology.nodes.items() if spec.kind is NodeKind.HOST]


def _add_routes(topology: Topology, network: SimNetwork, name: str, router: RouterNode) -> None:
    """The topology's main-table routes of one router, by outgoing interface."""
    link_by_device: dict[str, LinkSpec] = {}
    for link, interface, _peer in topology.l3_interfaces(name):
        link_by_device[interface.name] = link
    for route in topology.routes.get(name, []):
        if route.table is not None:
            continue
        link = link_by_device.get(route.device)
        if link is None:
            raise TopologyError(f"topology {topology.name}: router {name} routes "
                                f"{route.destination} via unknown device {route.device}")
        prefix = "0.0.0.0/0" if route.destination == "default" else route.destination
        ipaddress.ip_network(prefix, strict=False)
        network.add_route(router, prefix, network.link(link.name))
