"""Transparent interception on the proxy node: nftables TPROXY, and the on-path check.

Every TCP packet for the server's address and port that reaches the proxy node is handed to
the local relay's port without rewriting it (TPROXY: the relay's socket answers as the
server's address; IP_TRANSPARENT lets it). The mark sends those packets to a routing table
whose only route is "local", so the node delivers them instead of forwarding. The nft table,
rule and route live in the proxy node's namespace and go away with it.
"""

from __future__ import annotations

import itertools

from testbed.command import run_command
from testbed.errors import SpecError
from testbed.net.loss import nft
from testbed.net.topo import NodeKind, Topology

TABLE = "testbed_proxy"
MARK = 0x70
ROUTE_TABLE = 170


def install(netns: str, server_address: str, server_port: int) -> None:
    """TPROXY to the relay listening on the server's own port on the proxy node: a join's
    listener must have the port of the connection's first subflow, or Linux refuses it
    (MPTcpExtMismatchPortSynRx)."""
    nft(netns, "\n".join([
        f"add table ip {TABLE}",
        f"add chain ip {TABLE} prerouting {{ type filter hook prerouting priority mangle; policy accept; }}",
        f"add rule ip {TABLE} prerouting ip daddr {server_address} tcp dport {server_port} "
        f"tproxy to :{server_port} meta mark set {MARK:#x} accept",
    ]) + "\n")
    run_command(["ip", "rule", "add", "fwmark", f"{MARK:#x}", "lookup", str(ROUTE_TABLE)], netns=netns,
                what="the proxy's policy rule")
    run_command(["ip", "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", str(ROUTE_TABLE)],
                netns=netns, what="the proxy's local route")


def _reachable(topo: Topology, start: str, goal: str, without: str) -> bool:
    """Whether `goal` is reachable from `start` over the topology's links avoiding `without`."""
    neighbours: dict[str, set[str]] = {}
    for link in topo.links.values():
        chain = [link.a, *link.via, link.b]
        for one, other in itertools.pairwise(chain):
            neighbours.setdefault(one, set()).add(other)
            neighbours.setdefault(other, set()).add(one)
    seen, todo = {start}, [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        for peer in neighbours.get(node, ()):
            if peer != without and peer not in seen:
                seen.add(peer)
                todo.append(peer)
    return False


def check_proxy_node(topo: Topology, node: object, server: object, where: str) -> tuple[str, str]:
    """The proxy must be a router that every path from the client to the server crosses (else
    some subflow would pass it by), and the server a host: (node, server) checked."""
    if server is None:
        raise SpecError(f"{where}: no server: give server = \"server\" (the legacy host the client "
                        f"addresses, which the proxy relays to)")
    if server not in topo.nodes or topo.nodes[str(server)].kind is not NodeKind.HOST or server == topo.client:
        hosts = [n for n, s in topo.nodes.items() if s.kind is NodeKind.HOST and n != topo.client]
        raise SpecError(f"{where}: server {server!r} is not a server host of topology {topo.name} "
                        f"(hosts: {', '.join(hosts)})")
    if node not in topo.nodes:
        raise SpecError(f"{where}: node {node!r} is not in topology {topo.name} "
                        f"(nodes: {', '.join(topo.nodes)})")
    assert isinstance(node, str) and isinstance(server, str)
    if topo.nodes[node].kind is not NodeKind.ROUTER:
        raise SpecError(f"{where}: node {node!r} is a {topo.nodes[node].kind.value}, not a router on the "
                        f"path (give a router every path from {topo.client} to {server} crosses)")
    if _reachable(topo, str(topo.client), server, without=node):
        raise SpecError(f"{where}: node {node!r} is not on every path from {topo.client} to {server} "
                        f"(traffic can pass it by; on topology proxy give node = \"proxy\")")
    return node, server
