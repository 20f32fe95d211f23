"""The three balancers, installed on the `lb` topology's balancer node.

- hash: stateless 5-tuple hashing, done by the kernel's own ECMP: the VIP is one multipath
  route with a next hop per backend and `fib_multipath_hash_policy=1` (source and destination
  address and port, protocol), as an ECMP router or a Maglev forwarder spreads flows. No
  state: the same 5-tuple always takes the same next hop, and a join's 5-tuple (another client
  address and port) hashes independently of its connection's first subflow. The backends
  own the VIP (on their loopback) and packets reach them unchanged, as behind Maglev.
- table: stateful, a per-flow table: nftables DNAT in conntrack, the backend picked round-robin
  (`numgen inc`, like LVS's default scheduler) when a flow's first packet arrives and kept in
  the conntrack entry for the rest of the flow; the replies are translated back. A round-robin
  pick cannot be recomputed from the packet, so this variant needs its table by construction.
- token: token-aware. SYNs to the VIP go to a Python program (NFQUEUE, token_lb.py) that
  routes an MP_JOIN by the token of the backend that issued it and hashes the rest; the choice
  becomes the packet's mark, conntrack keeps it for the flow (CONNMARK) and policy routing
  (fwmark i -> backend i) forwards. Unmarked packets fall back to the hash variant's ECMP route.

Why kernel paths for hash and table: they run at line rate and are what deployed balancers do
(ECMP routers, LVS/nftables DNAT); only the token-aware decision needs to read MPTCP options,
and only on SYNs, so Python sees a handful of packets per connection, never the data.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.command import run_command
from testbed.errors import EnvironmentProblem, SpecError
from testbed.net.loss import nft
from testbed.net.topo import NodeKind, Topology

VARIANTS = ("hash", "table", "token")
QUEUE = 0
TABLE_BASE = 100  # policy routing table of backend i: TABLE_BASE + i
READY_TIMEOUT_S = 10.0


def check_variant(variant: object, where: str) -> str:
    if variant not in VARIANTS:
        raise SpecError(f"{where}: unknown balancer variant {variant!r} (known: {', '.join(VARIANTS)})")
    return str(variant)


def check_balancer_node(topo: Topology, node: object, backends: list[str], where: str) -> str:
    """The balancer must be a router that every backend's traffic crosses: each backend's only
    link ends on it. Anything else could not see the packets it is meant to balance."""
    if node not in topo.nodes:
        raise SpecError(f"{where}: node {node!r} is not in topology {topo.name} "
                        f"(nodes: {', '.join(topo.nodes)})")
    assert isinstance(node, str)
    if topo.nodes[node].kind is not NodeKind.ROUTER:
        raise SpecError(f"{where}: node {node!r} is a {topo.nodes[node].kind.value}, not a router "
                        f"on the path to the backends (give the node every backend is linked to)")
    for backend in backends:
        peers = {link.b if link.a == backend else link.a for link, _i, _p in topo.l3_interfaces(backend)}
        if peers != {node}:
            raise SpecError(f"{where}: node {node!r} is not on the path to backend {backend} "
                            f"(its traffic crosses {', '.join(sorted(peers))}; give that node)")
    return node


@dataclass
class Backend:
    name: str
    address: str  # its unicast address
    balancer_device: str  # the balancer's interface towards it


def backends_of(topo: Topology, node: str, names: list[str]) -> list[Backend]:
    out = []
    for name in names:
        link, _iface, _peer = topo.l3_interfaces(name)[0]
        local = link.a_interface if link.a == node else link.b_interface
        out.append(Backend(name, link.address_of(name), local.name))
    return out


@dataclass
class InstalledBalancer:
    """What `install` started; `stop` ends it and returns the token program's counters."""

    variant: str
    process: subprocess.Popen[bytes] | None = None
    stats_path: Path | None = None
    log_path: Path | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    def stop(self) -> dict[str, Any]:
        if self.process is None:
            return {}
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        returncode = self.process.returncode
        self.process = None
        if self.stats_path is not None and self.stats_path.exists():
            import json

            self.stats = json.loads(self.stats_path.read_text())
        self.stats["exit_status"] = returncode
        return self.stats


def _ecmp_route(netns: str, vip: str, backends: list[Backend]) -> None:
    run_command(["sysctl", "-q", "-w", "net.ipv4.fib_multipath_hash_policy=1"], netns=netns,
                what="5-tuple ECMP hashing on the balancer")
    hops = [word for b in backends for word in ("nexthop", "via", b.address, "dev", b.balancer_device)]
    run_command(["ip", "route", "replace", f"{vip}/32", *hops], netns=netns,
                what="the VIP's multipath route on the balancer")


def _vip_on_backends(net: Any, vip: str, backends: list[Backend]) -> None:
    for backend in backends:
        run_command(["ip", "address", "add", f"{vip}/32", "dev", "lo"], netns=net.netns(backend.name),
                    what=f"the VIP on {backend.name}'s loopback")


def _table_rules(vip: str, port: int, backends: list[Backend]) -> str:
    choices = ", ".join(f"{i} : {b.address}" for i, b in enumerate(backends))
    return ("add table ip testbed_lb\n"
            "add chain ip testbed_lb pre { type nat hook prerouting priority dstnat; }\n"
            f"add rule ip testbed_lb pre ip daddr {vip} tcp dport {port} "
            f"dnat to numgen inc mod {len(backends)} map {{ {choices} }}\n")


def _token_queue_rules(vip: str, port: int) -> list[list[str]]:
    """iptables rules (mangle PREROUTING) that queue SYNs to the VIP and the backends' SYN/ACKs,
    the latter after restoring their flow's mark. iptables, not nft: hosts whose kernel lacks
    nft_queue (this project's development machine) still have the xt NFQUEUE target."""
    to_vip = ["-d", vip, "-p", "tcp", "--dport", str(port)]
    from_vip = ["-s", vip, "-p", "tcp", "--sport", str(port)]
    queue = ["-j", "NFQUEUE", "--queue-num", str(QUEUE), "--queue-bypass"]
    return [
        [*to_vip, "--tcp-flags", "SYN,ACK", "SYN", *queue],
        [*to_vip, "-j", "CONNMARK", "--restore-mark"],
        [*from_vip, "--tcp-flags", "SYN,ACK", "SYN,ACK", "-j", "CONNMARK", "--restore-mark"],
        [*from_vip, "--tcp-flags", "SYN,ACK", "SYN,ACK", *queue],
    ]


def _token_remember_rules(vip: str, port: int) -> str:
    """After the verdict (a later hook priority): the chosen mark into the flow's conntrack entry."""
    return ("add table ip testbed_lb\n"
            "add chain ip testbed_lb remember { type filter hook prerouting priority -140; }\n"
            f"add rule ip testbed_lb remember ip daddr {vip} tcp dport {port} "
            f"tcp flags & (syn | ack) == syn ct mark set meta mark\n")


def install(net: Any, node: str, variant: str, vip: str, port: int, backends: list[Backend],
            work_dir: Path) -> InstalledBalancer:
    """Set the balancer up on `node`; everything lives in the namespaces (gone with them)."""
    netns = net.netns(node)
    if variant == "table":
        nft(netns, _table_rules(vip, port, backends))
        return InstalledBalancer(variant)
    _vip_on_backends(net, vip, backends)
    _ecmp_route(netns, vip, backends)
    if variant == "hash":
        return InstalledBalancer(variant)
    for index, backend in enumerate(backends, start=1):
        run_command(["ip", "route", "replace", f"{vip}/32", "via", backend.address, "dev",
                     backend.balancer_device, "table", str(TABLE_BASE + index)], netns=netns,
                    what=f"policy route to {backend.name}")
        run_command(["ip", "rule", "add", "fwmark", str(index), "table", str(TABLE_BASE + index),
                     "priority", "500"], netns=netns, what=f"fwmark rule of {backend.name}")
    ready = work_dir / "token_lb.ready"
    stats = work_dir / "token_lb.stats.json"
    log = work_dir / "token_lb.log"
    with log.open("wb") as log_file:
        process = net.popen(node, [sys.executable, "-m", "testbed.balancer.token_lb", "--queue", str(QUEUE),
                                   "--backends", str(len(backends)), "--stats", str(stats),
                                   "--ready", str(ready)], stdout=log_file, stderr=subprocess.STDOUT)
    installed = InstalledBalancer(variant, process, stats, log)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            installed.stop()
            raise EnvironmentProblem(f"the token-aware balancer did not start (log: {log}): "
                                     f"{log.read_text(errors='replace').strip()[-300:]}")
        time.sleep(0.05)
    nft(netns, _token_remember_rules(vip, port))
    for rule in _token_queue_rules(vip, port):
        run_command(["iptables-legacy", "-t", "mangle", "-A", "PREROUTING", *rule], netns=netns,
                    what="queueing SYNs to the token-aware balancer")
    return installed
