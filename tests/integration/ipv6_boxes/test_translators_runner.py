"""experiments/middleboxes/nptv6.toml and nat64.toml through `testbed run`'s runner, kernel
MPTCP at both ends: on an IPv6 two_path with the nptv6 box on path A, and on nat64_path (an
IPv6-only client, a NAT64 on each path, an IPv4-only server). Both subflows carry data and the
stream arrives intact."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from middleboxes.registry import build_middlebox
from testbed.runner import run_experiment
from testbed.spec import load_spec
from tests.integration.live_checks import live_problem

SPECS = Path(__file__).resolve().parents[3] / "experiments" / "middleboxes"


def _problem() -> str | None:
    return live_problem()


pytestmark = [pytest.mark.root, pytest.mark.skipif(_problem() is not None, reason=str(_problem()))]


def test_mptcp_crosses_nptv6_on_an_ipv6_two_path(tmp_path: Path) -> None:
    spec = load_spec(SPECS / "nptv6.toml")
    result = run_experiment(spec, tmp_path, progress=lambda line: None)
    conn = result["connections"][0]
    assert conn["outcome"] == "mptcp" and conn["integrity"] == "ok", conn["evidence"]
    carrying = {s["local"].split("]")[0].strip("[") for s in conn["subflows"] if s["bytes"] > 0}
    assert carrying == {"fd00:10:0:1::1", "fd00:10:0:2::1"}, conn["subflows"]
    for host in ("client", "server"):
        assert conn["counters"].get(host, {}).get("TcpInCsumErrors", 0) == 0
    assert conn["counters"]["server"].get("MPTcpExtMPJoinAckRx", 0) == 1
    [stats] = result["middlebox_stats"]["mb_a"]["middleboxes"]
    assert stats["counters"]["changed"] > 1000 and stats["counters"]["dropped"] == 0
    params = spec.middleboxes[0].params
    outside = build_middlebox("nptv6", params, random.Random(1)).outside_address("fd00:10:0:1::1")
    first = stats["change_log"]["entries"][0]["change"]
    assert first == f"src fd00:10:0:1::1->{outside}"  # what the server saw path A come from
    assert result["expectations"]["passed"], result["expectations"]


def test_mptcp_crosses_two_nat64s_from_an_ipv6_only_client(tmp_path: Path) -> None:
    spec = load_spec(SPECS / "nat64.toml")
    result = run_experiment(spec, tmp_path, progress=lambda line: None)
    conn = result["connections"][0]
    assert conn["outcome"] == "mptcp" and conn["integrity"] == "ok", conn["evidence"]
    carrying = [s for s in conn["subflows"] if s["bytes"] > 0]
    assert {s["local"].split("]")[0].strip("[") for s in carrying} == {"fd00:10:0:1::1",
                                                                       "fd00:10:0:2::1"}
    assert {s["remote"] for s in carrying} == {"[64:ff9b::a00:6402]:5201"}
    for host in ("client", "server"):
        assert conn["counters"].get(host, {}).get("TcpInCsumErrors", 0) == 0
    assert conn["counters"]["server"].get("MPTcpExtMPJoinAckRx", 0) == 1
    for node in ("mb_a", "mb_b"):
        [stats] = result["middlebox_stats"][node]["middleboxes"]
        assert stats["counters"]["changed"] > 1000 and stats["state"]["mappings"] == 1
    first = result["middlebox_stats"]["mb_a"]["middleboxes"][0]["change_log"]["entries"][0]
    assert first["flow"].startswith("10.0.1.100:") and first["flow"].endswith(">10.0.100.2:5201")
    assert result["expectations"]["passed"], result["expectations"]
