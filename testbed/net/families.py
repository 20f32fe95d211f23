"""Whether a spec can run on its topology's address families: one line and exit 2 before anything
is built when it cannot (docs/ipv6.md).

What supports IPv6 so far: the topologies, link emulation (netem, nft loss in the netdev family,
the userspace delay stage: all see frames, not packets), kernel endpoints (native and through
NAT44 on dual_path), the Python stack's endpoints (IPv6 subflows, and both families in one
connection, docs/ipv6.md). What does not: VM endpoints (the guest
network is IPv4-only) and the simulator. The inline middleboxes decode IPv6/TCP as they do
IPv4/TCP (testbed.inline.pipeline) and every catalogue box acts on both families, except
`nat`: it is a NAT44, and passing IPv6 untranslated is what a dual-stack gateway does, so it may
sit on a dual link but not on an IPv6-only one, where it would do nothing at all. The IPv6
translators `nptv6` and `nat64` must sit on a link carrying IPv6 (docs/ipv6-middleboxes.md).
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from testbed.errors import SpecError
from testbed.net.topo import Topology

if TYPE_CHECKING:
    from testbed.spec import ExperimentSpec

IPV4_ONLY_BOXES = frozenset({"nat"})  # act on IPv4 and pass IPv6 unchanged, by design
IPV6_TRANSLATORS = frozenset({"nptv6", "nat64"})  # act on IPv6: their link must carry it
IPPROTO_MPTCP = 262


def check_host_ipv6(proc_root: Path = Path("/proc")) -> None:
    """The running kernel has IPv6 and has not switched it off."""
    conf = proc_root / "sys/net/ipv6/conf/all/disable_ipv6"
    if not conf.parent.parent.parent.is_dir():
        raise SpecError("this kernel has no IPv6 (booted with ipv6.disable=1, or no ipv6 module): "
                        "use [topology.params] family = \"ipv4\"")
    if conf.exists() and conf.read_text().strip() == "1":
        raise SpecError("IPv6 is disabled on this machine (sysctl net.ipv6.conf.all.disable_ipv6=1): "
                        "set it to 0 or use [topology.params] family = \"ipv4\"")


def check_mptcp_ipv6() -> None:
    """The kernel's MPTCP takes IPv6 sockets (CONFIG_MPTCP_IPV6)."""
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_STREAM, IPPROTO_MPTCP).close()
    except OSError as exc:
        if exc.errno in (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT):
            raise SpecError("this kernel's MPTCP has no IPv6 (CONFIG_MPTCP_IPV6 off): use "
                            "[topology.params] family = \"ipv4\"") from None
        # MPTCP switched off in this namespace (ENOPROTOOPT): the endpoints' own namespaces decide


def check_nat64_boxes(spec: ExperimentSpec, topo: Topology) -> None:
    """A NAT64 topology (nat64_path) carries nothing to the IPv4 server unless each path's bump
    runs a nat64 box with the pool address and prefix the topology routes."""
    from middleboxes.nat64 import WELL_KNOWN_PREFIX

    for link in topo.links.values():
        pools = [p.split("/")[0] for p in link.routed_to_a if ":" not in p and 4 not in link.versions]
        for pool in pools:
            boxes = [box for box in spec.middleboxes if box.node in link.via and box.type == "nat64"]
            ok = any(str(box.params.get("pool_address")) == pool
                     and str(box.params.get("prefix", WELL_KNOWN_PREFIX)) == topo.nat64_prefix
                     for box in boxes)
            if not ok:
                raise SpecError(f"{spec.source}: {topo.name}: path {link.name} needs a nat64 box on "
                                f"{' or '.join(link.via)} with pool_address = \"{pool}\" and prefix "
                                f"{topo.nat64_prefix} (the topology routes that pool there); without it "
                                "nothing reaches the IPv4 server")


def check_vm_endpoints(spec: ExperimentSpec, topo: Topology) -> None:
    """A VM endpoint (`kernel = VERSION`) only on an IPv4-only topology: the guest is given
    IPv4 addresses alone. Checked with the spec, before anything runs (a matrix: every cell)."""
    if topo.versions == (4,):
        return
    for endpoint in spec.endpoints:
        if endpoint.kernel is not None:
            raise SpecError(f"{spec.source}: {endpoint.role} kernel {endpoint.kernel!r}: VM endpoints are "
                            f"IPv4-only so far; drop `kernel` or use family = \"ipv4\" on {topo.name}")


def check_families(spec: ExperimentSpec, topo: Topology, *, proc_root: Path = Path("/proc")) -> None:
    """Refuse what cannot run on the topology's families, naming what to change."""
    where = spec.source
    for box in spec.middleboxes:
        link = topo.link_of_middlebox(box.node)
        if box.type in IPV6_TRANSLATORS and 6 not in link.versions:
            raise SpecError(f"{where}: middlebox {box.type!r} on {box.node}: link {link.name} carries no "
                            f"IPv6 and {box.type} translates IPv6 packets, it would do nothing there; "
                            f"use [topology.params] family = \"ipv6\" or \"dual\"")
    if topo.nat64_prefix is not None:
        check_nat64_boxes(spec, topo)
    if topo.versions == (4,):  # [mptcp].server_signal's family: testbed.spec.check_against_topology
        return
    check_vm_endpoints(spec, topo)
    for box in spec.middleboxes:
        link = topo.link_of_middlebox(box.node)
        if 6 not in link.versions:
            continue
        if box.type in IPV4_ONLY_BOXES and 4 not in link.versions:
            raise SpecError(f"{where}: middlebox {box.type!r} on {box.node}: link {link.name} is IPv6-only "
                            f"and {box.type} translates IPv4 only; it would do nothing there")
    check_host_ipv6(proc_root)
    if any(endpoint.stack != "python" for endpoint in spec.endpoints):
        check_mptcp_ipv6()
