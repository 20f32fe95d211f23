"""Issue 17 point 6, first part: an IPv6 address where the testbed supports IPv4 only is refused
before anything is built, with one line naming the field and why (exit 2 from the CLI)."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from middleboxes.registry import MiddleboxSpecError, build_middlebox
from testbed.errors import SpecError
from testbed.net.topo import Topology
from testbed.wire.ipv6 import is_ipv6_text

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(("text", "expected"), [
    ("fd00::1", True), ("[fd00::1]", True), ("fd00:1::/64", True), ("fe80::1%eth0", True),
    ("::ffff:10.0.0.1", True), ("10.0.0.1", False), ("10.0.1.0/24", False), ("host", False),
    ("", False), (None, False), (42, False),
])
def test_is_ipv6_text(text: object, expected: bool) -> None:
    assert is_ipv6_text(text) is expected


def _testbed_run(spec_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    spec = tmp_path / "spec.toml"
    spec.write_text(spec_text)
    return subprocess.run([sys.executable, "-m", "testbed.cli", "run", "--out",
                           str(tmp_path / "out"), str(spec)],
                          capture_output=True, text=True, timeout=60, cwd=REPO)


def _assert_refused(result: subprocess.CompletedProcess[str], tmp_path: Path, *words: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert not (tmp_path / "out").exists()  # nothing was built or written


def test_run_refuses_an_ipv6_nat_public_address(tmp_path: Path) -> None:
    spec = (REPO / "experiments/middleboxes/nat.toml").read_text()
    assert 'public_address = "10.0.1.100"' in spec
    result = _testbed_run(spec.replace("10.0.1.100", "fd00:1::100"), tmp_path)
    _assert_refused(result, tmp_path, "public_address", "fd00:1::100", "IPv6", "IPv4 only")


def test_run_refuses_an_ipv6_server_signal_address(tmp_path: Path) -> None:
    spec = (REPO / "experiments/two_path_kernel.toml").read_text()
    assert "\n[mptcp]\n" in spec
    spec = spec.replace("\n[mptcp]\n", '\n[mptcp]\nserver_signal = ["fd00:100::2"]\n')
    result = _testbed_run(spec, tmp_path)
    _assert_refused(result, tmp_path, "[mptcp].server_signal", "fd00:100::2", "IPv6",
                    "IPv4-only", "10.0.100.2")


def test_subflow_tuple_takes_bracketed_ipv6_and_refuses_it_bare_or_mixed() -> None:
    build_middlebox("drop", {"match": ["subflow"], "subflow_tuple": "[fd00::1]:40000-[fd00:1::2]:5201"},
                    random.Random(1))
    with pytest.raises(MiddleboxSpecError, match=r"IPv6 addresses go in brackets"):
        build_middlebox("drop", {"match": ["subflow"], "subflow_tuple": "fd00::1:40000-fd00:1::2:5201"},
                        random.Random(1))
    with pytest.raises(MiddleboxSpecError, match="both ends of one family"):
        build_middlebox("drop", {"match": ["subflow"], "subflow_tuple": "[fd00::1]:40000-10.0.1.1:5201"},
                        random.Random(1))


def test_topology_refuses_an_ipv6_subnet() -> None:
    topo = Topology("t")
    topo.add_host("a")
    topo.add_host("b")
    # a link is drawn with its IPv4 subnet; its IPv6 /64 follows from it (docs/ipv6.md)
    with pytest.raises(SpecError, match=r"subnet 'fd00:1::/64' is IPv6; give the IPv4 subnet"):
        topo.add_link("a", "b", subnet="fd00:1::/64")
