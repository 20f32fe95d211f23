"""Issue 17 points 2 and 6: the addressing and routing plans of IPv6 and dual-stack topologies,
walked hop by hop through the computed routes and source rules, and the one-line refusals of
what is still IPv4-only. No root needed, nothing is built."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.errors import SpecError
from testbed.net.build import node_sysctls
from testbed.net.families import check_families, check_host_ipv6
from testbed.net.topo import NodeKind, Topology, family_label, ip_version, ula_subnet
from testbed.runner import _addresses, host_port, socket_address
from testbed.spec import check_against_topology, parse_spec
from topologies import TOPOLOGIES, build_topology

REPO = Path(__file__).resolve().parents[3]


def test_ula_plan_repeats_the_ipv4_digits() -> None:
    assert ula_subnet("10.0.1.0/24") == "fd00:10:0:1::/64"
    assert ula_subnet("10.0.100.0/24") == "fd00:10:0:100::/64"
    assert ula_subnet("192.168.1.0/24") == "fd00:192:168:1::/64"
    assert all(ipaddress.ip_network(ula_subnet(f"10.0.{i}.0/24")).prefixlen == 64 for i in range(256))


@pytest.mark.parametrize(("text", "family"), [
    ("10.0.1.1:5201", "IPv4"), ("[fd00:10:0:1::1]:5201", "IPv6"), ("[::ffff:10.0.1.1]:80", "IPv4"),
    ("fd00::1", "IPv6"), ("10.0.1.1", "IPv4"), ("?", "?"),
])
def test_family_label(text: str, family: str) -> None:
    assert family_label(text) == family


FAMILY_CASES = [(name, family) for name in sorted(TOPOLOGIES) if name not in ("dual_path", "nat64_path")
                for family in ("ipv4", "ipv6", "dual")] + [("dual_path", "dual"), ("nat64_path", "dual")]


def _owner(topo: Topology, address: str) -> str | None:
    return next((n for n in topo.nodes if address in topo.host_addresses(n)), None)


def _network(destination: str, version: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if destination == "default":
        return ipaddress.ip_network("0.0.0.0/0" if version == 4 else "::/0")
    return ipaddress.ip_network(destination)


def _next_hop(topo: Topology, node: str, source: str | None, destination: str) -> tuple[str, str]:
    """(outgoing interface, next-hop address) as the kernel picks them: the source's own table
    first (its rule comes before the main table), then the main table with the connected
    subnets, longest prefix first."""
    version = ip_version(destination)
    dst = ipaddress.ip_address(destination)
    table = next((r.table for r in topo.rules[node] if r.source == source), None)
    lookups: list[int | None] = [table, None] if table is not None else [None]
    for lookup in lookups:
        candidates = [(_network(r.destination, version).prefixlen, r.device, r.via or destination)
                      for r in topo.routes[node] if r.version == version and r.table == lookup
                      and dst in _network(r.destination, version)]
        if lookup is None:
            candidates += [(64 if version == 6 else 24, iface.name, destination)
                           for link, iface, _peer in topo.l3_interfaces(node, version)
                           if dst in ipaddress.ip_network(link.subnet_of_version(version))]
        if candidates:
            _length, device, via = max(candidates)
            return device, via
    raise AssertionError(f"{topo.name}: {node} has no route to {destination} (from {source})")


def _walk(topo: Topology, start: str, source: str, destination: str) -> list[str]:
    """The nodes a packet visits from `start` to the owner of `destination`."""
    path, node, src = [start], start, source
    for _ in range(10):
        if destination in topo.host_addresses(node):
            return path
        _device, via = _next_hop(topo, node, src, destination)
        following = _owner(topo, via)
        assert following is not None, f"{topo.name}: {node} sends {destination} to unknown {via}"
        path.append(following)
        node, src = following, None  # routers forward by destination
    raise AssertionError(f"{topo.name}: no way from {start} to {destination}: {path}")


@pytest.mark.parametrize(("name", "family"), FAMILY_CASES)
def test_every_client_address_reaches_the_server_and_back(name: str, family: str) -> None:
    topo = build_topology(name, {"family": family})
    versions = {"ipv4": {4}, "ipv6": {6}, "dual": {4, 6}}[family]
    addresses = [a for n in topo.nodes for a in topo.host_addresses(n)]
    assert len(addresses) == len(set(addresses))
    assert {ip_version(a) for a in addresses} == versions
    natted = {s for n in topo.nodes.values() for s in n.nat_subnets}
    for source in topo.host_addresses(topo.client):
        version = ip_version(source)
        for destination in topo.host_addresses(topo.server, version):
            assert _walk(topo, topo.client, source, destination)[-1] == topo.server
            private = version == 4 and any(ipaddress.ip_address(source) in ipaddress.ip_network(s)
                                           for s in natted)
            if not private:  # a NATed source is answered through the NAT's own address
                path = _walk(topo, topo.server, destination, source)
                assert path[-1] == topo.client
    # a multihomed host has one source rule per address of each family, in distinct tables
    if len(topo.l3_interfaces(topo.client)) > 1:
        for version in versions:
            sources = topo.host_addresses(topo.client, version)
            if len(sources) > 1:
                rules = [r for r in topo.rules[topo.client] if r.version == version]
                assert sorted(r.source for r in rules) == sorted(sources)
                assert len({r.table for r in rules}) == len(rules)


def test_two_path_dual_subflows_leave_by_their_own_interface() -> None:
    topo = build_topology("two_path", {"family": "dual"})
    for source, device in (("10.0.2.1", "client-eth1"), ("fd00:10:0:2::1", "client-eth1"),
                           ("10.0.1.1", "client-eth0"), ("fd00:10:0:1::1", "client-eth0")):
        server = topo.host_addresses("server", ip_version(source))[0]
        assert _next_hop(topo, "client", source, server)[0] == device


def test_ipv4_topologies_are_unchanged_by_the_families() -> None:
    topo = build_topology("two_path")
    assert topo.family == "ipv4" and all(r.version == 4 for rs in topo.routes.values() for r in rs)
    assert all(i.address6 is None for lk in topo.links.values() for s in lk.segments
               for i in (s.left, s.right))
    assert "subnet6" not in topo.describe()["links"][0]


def test_nat_home_routes_the_home_prefix_in_ipv6_but_not_the_private_ipv4() -> None:
    topo = build_topology("nat_home", {"family": "dual"})
    destinations = {r.destination for r in topo.routes["rs"]}
    assert "fd00:192:168:1::/64" in destinations and "192.168.1.0/24" not in destinations


def test_dual_path_has_an_ipv4_only_and_an_ipv6_only_path() -> None:
    topo = build_topology("dual_path")
    assert topo.links["a"].versions == (4,) and topo.links["b"].versions == (6,)
    assert topo.links["server"].versions == (4, 6)
    assert topo.host_addresses("client") == ["192.168.1.1", "fd00:10:0:2::1"]
    assert topo.nodes["nat"].nat_subnets == ["192.168.1.0/24"]
    assert topo.initial_version == 4
    assert build_topology("dual_path", {"initial": "ipv6"}).initial_version == 6
    with pytest.raises(SpecError, match="dual stack by construction"):
        build_topology("dual_path", {"family": "ipv6"})
    with pytest.raises(SpecError, match="initial='dual' must be one family"):
        build_topology("dual_path", {"initial": "dual"})


def test_the_client_binds_its_first_address_of_the_initial_family() -> None:
    topo = build_topology("dual_path", {"initial": "ipv6"})
    assert _addresses(topo, "client") == [("fd00:10:0:2::1", "client-eth1"), ("192.168.1.1", "client-eth0")]
    assert socket_address(topo, "10.0.100.2") == "::ffff:10.0.100.2"  # dual-stack AF_INET6 sockets
    assert socket_address(build_topology("two_path"), "10.0.100.2") == "10.0.100.2"
    assert host_port("fd00:10:0:100::2", 5201) == "[fd00:10:0:100::2]:5201"


def test_bad_families_are_named() -> None:
    with pytest.raises(SpecError, match="family='ipv5' must be one of ipv4, ipv6, dual"):
        build_topology("two_path", {"family": "ipv5"})
    topo = Topology("t", family="ipv4")
    topo.add_host("a")
    topo.add_host("b")
    with pytest.raises(SpecError, match="carries ipv6, which the ipv4 topology does not"):
        topo.add_link("a", "b", family="ipv6")


def test_sysctls_enable_ipv6_only_where_it_is_carried() -> None:
    host4 = node_sysctls(NodeKind.HOST, (4,))
    assert host4["net.ipv6.conf.all.disable_ipv6"] == "1"
    router = node_sysctls(NodeKind.ROUTER, (4, 6))
    assert router["net.ipv6.conf.all.disable_ipv6"] == "0"
    assert router["net.ipv6.conf.all.forwarding"] == "1"
    assert router["net.ipv6.conf.default.accept_dad"] == "0"
    bump = node_sysctls(NodeKind.MIDDLEBOX, (6,))  # bridges frames, owns no address
    assert bump["net.ipv6.conf.all.disable_ipv6"] == "1"


def spec_on(topology: dict, **overrides: object):
    raw: dict = {"topology": topology,
                 "endpoints": [{"role": "server", "stack": "kernel"}, {"role": "client", "stack": "kernel"}],
                 "traffic": {"bytes": 1000}}
    raw.update(overrides)
    spec = parse_spec(raw)
    return spec, build_topology(spec.topology, spec.topology_params)


def test_refusals_name_what_is_still_ipv4_only(tmp_path: Path) -> None:
    v6 = {"name": "two_path", "params": {"family": "ipv6"}}
    spec, topo = spec_on(v6, endpoints=[{"role": "server", "stack": "kernel"},
                                        {"role": "client", "stack": "python"}])
    check_families(spec, topo)  # the python stack runs IPv6 subflows (issue 17 point 3)
    spec, topo = spec_on(v6, endpoints=[{"role": "server", "stack": "kernel", "kernel": "6.18"},
                                        {"role": "client", "stack": "kernel"}])
    with pytest.raises(SpecError, match="VM endpoints are IPv4-only so far"):
        check_families(spec, topo)
    # the catalogue boxes act on IPv6 (the pipeline decodes it): accepted on IPv6 and dual links
    for box_type in ("strip_options", "rewrite_seq", "split", "coalesce", "syn_firewall"):
        spec, topo = spec_on(v6, middleboxes=[{"node": "mb_a", "type": box_type}])
        check_families(spec, topo)
    spec, topo = spec_on({"name": "dual_path"}, middleboxes=[
        {"node": "mb_b", "type": "strip_options"}, {"node": "mb_a", "type": "rewrite_seq"}])
    check_families(spec, topo)
    spec, topo = spec_on(v6, middleboxes=[{"node": "mb_a", "type": "nat",
                                           "params": {"public_address": "10.0.1.100"}}])
    with pytest.raises(SpecError, match="link a is IPv6-only and nat translates IPv4 only"):
        check_families(spec, topo)
    # a NAT44 on a dual link passes IPv6 untranslated, as a dual-stack gateway: accepted
    spec, topo = spec_on({"name": "dual_path"}, middleboxes=[
        {"node": "mb_a", "type": "nat", "params": {"public_address": "10.0.1.100"}}])
    check_families(spec, topo)
    # an IPv6 address where the topology has none
    spec, topo = spec_on({"name": "two_path"}, mptcp={"server_signal": ["fd00:10:0:100::2"]})
    with pytest.raises(SpecError, match="is an IPv6 address but two_path is IPv4-only"):
        check_against_topology(spec, topo)
    spec, topo = spec_on(v6, mptcp={"server_signal": ["10.0.100.2"]})
    with pytest.raises(SpecError, match="is an IPv4 address but two_path is IPv6-only"):
        check_against_topology(spec, topo)


def test_a_kernel_without_ipv6_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="this kernel has no IPv6"):
        check_host_ipv6(tmp_path)
    conf = tmp_path / "sys/net/ipv6/conf/all"
    conf.mkdir(parents=True)
    (conf / "disable_ipv6").write_text("1\n")
    with pytest.raises(SpecError, match=r"net.ipv6.conf.all.disable_ipv6=1\): set it to 0"):
        check_host_ipv6(tmp_path)
    (conf / "disable_ipv6").write_text("0\n")
    check_host_ipv6(tmp_path)


@pytest.mark.parametrize(("extra", "words"), [
    ('[topology.params]\nfamily = "ipv6"\n[[middleboxes]]\nnode = "mb_b"\ntype = "nat"\n'
     '[middleboxes.params]\npublic_address = "10.0.2.100"\n',
     ("'nat' on mb_b", "IPv6-only", "translates IPv4 only")),
    ('[topology.params]\nfamily = "ipv4"\n[mptcp]\nserver_signal = ["fd00:10:0:100::2"]\n',
     ("fd00:10:0:100::2", "IPv4-only", "10.0.100.2")),
    ('[topology.params]\nfamily = "ipv7"\n', ("family='ipv7' must be one of",)),
])
def test_run_refuses_in_one_line_and_builds_nothing(tmp_path: Path, extra: str,
                                                     words: tuple[str, ...]) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text('[topology]\nname = "two_path"\n' + extra + '[[endpoints]]\nrole = "server"\n'
                    'stack = "kernel"\n[[endpoints]]\nrole = "client"\nstack = "kernel"\n'
                    '[traffic]\nseconds = 1\n')
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "run", str(spec), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert all(word in lines[0] for word in words), lines[0]
    assert not (tmp_path / "out").exists()
