"""Bad input for the IPv6 translators stops `testbed run` in one line, exit 2, nothing built:
an IPv4 prefix for nptv6, a prefix length outside /48../64, nat64 on a link without IPv6."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from topologies import build_topology

REPO = Path(__file__).resolve().parents[3]
NPTV6 = '[[middleboxes]]\nnode = "mb_a"\ntype = "nptv6"\n[middleboxes.params]\n'


@pytest.mark.parametrize(("extra", "words"), [
    ('[topology.params]\nfamily = "ipv6"\n' + NPTV6
     + 'inside_prefix = "10.0.1.0/24"\noutside_prefix = "fd00:99::/48"\n',
     ("'nptv6'", "inside_prefix", "an IPv4 prefix")),
    ('[topology.params]\nfamily = "ipv6"\n' + NPTV6
     + 'inside_prefix = "fd00:10::/40"\noutside_prefix = "fd00:99::/40"\n',
     ("'nptv6'", "inside_prefix", "/48 to /64")),
    ('[topology.params]\nfamily = "ipv6"\n' + NPTV6
     + 'inside_prefix = "fd00:10:0:1::/64"\noutside_prefix = "fd00:99:0:1::/72"\n',
     ("'nptv6'", "outside_prefix", "/48 to /64")),
    ('[[middleboxes]]\nnode = "mb_a"\ntype = "nat64"\n[middleboxes.params]\n'
     'pool_address = "10.0.1.100"\n',
     ("'nat64' on mb_a", "link a carries no IPv6", 'family = "ipv6"')),
    ('[topology.params]\nfamily = "ipv4"\n' + NPTV6
     + 'inside_prefix = "fd00:10:0:1::/64"\noutside_prefix = "fd00:99:0:1::/64"\n',
     ("'nptv6' on mb_a", "link a carries no IPv6")),
    ('[topology.params]\nfamily = "ipv6"\nrouted_to_client = { c = "fd00:99::/48" }\n',
     ("routed_to_client", "unknown path 'c'")),
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


@pytest.mark.parametrize(("params", "words"), [
    ({"family": "ipv6"}, "must be \"dual\""),
    ({"pool_a": "10.0.2.100"}, "must lie in its path's 10.0.1.0/24"),
    ({"prefix": "64:ff9b::/64"}, "must be a /96"),
])
def test_nat64_path_refuses_bad_parameters(params: dict, words: str) -> None:
    from testbed.errors import SpecError

    with pytest.raises(SpecError, match=words.replace("(", r"\(")):
        build_topology("nat64_path", params)


@pytest.mark.parametrize(("boxes", "words"), [
    ([], "path a needs a nat64 box on mb_a with pool_address = \"10.0.1.100\""),
    ([{"node": "mb_a", "type": "nat64", "params": {"pool_address": "10.0.1.100"}}],
     "path b needs a nat64 box on mb_b"),
    ([{"node": "mb_a", "type": "nat64", "params": {"pool_address": "10.0.1.7"}},
      {"node": "mb_b", "type": "nat64", "params": {"pool_address": "10.0.2.100"}}],
     "path a needs"),
])
def test_nat64_path_without_its_boxes_is_refused(boxes: list, words: str) -> None:
    from testbed.errors import SpecError
    from testbed.net.families import check_families
    from testbed.spec import parse_spec

    spec = parse_spec({"topology": {"name": "nat64_path"}, "middleboxes": boxes,
                       "endpoints": [{"role": "server", "stack": "kernel"},
                                     {"role": "client", "stack": "kernel"}],
                       "traffic": {"bytes": 1000}})
    topo = build_topology("nat64_path", {})
    with pytest.raises(SpecError, match=words.replace(".", r"\.")) as caught:
        check_families(spec, topo)
    assert "\n" not in str(caught.value)


def test_nat64_path_routes_the_pools_back_to_their_paths() -> None:
    topo = build_topology("nat64_path", {})
    routes = {(node, r.destination): (r.via, r.device) for node in ("ra", "rb", "rs")
              for r in topo.routes[node]}
    assert routes[("ra", "10.0.1.100/32")] == (None, "ra-eth0")  # on-link: the bump answers ARP
    assert routes[("rs", "10.0.2.100/32")] == ("10.0.12.1", "rs-eth1")
    assert topo.host_addresses("client", 4) == [] and topo.host_addresses("server", 6) == []
