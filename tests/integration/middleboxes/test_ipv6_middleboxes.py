"""Catalogue boxes on IPv6 packets, live (issue 17 point 4): Linux kernel MPTCP at both ends on
an IPv6-only two_path and on dual_path (path a IPv4 behind a NAT, path b IPv6), each box
running the spec file its IPv4 test runs (experiments/middleboxes), with fewer bytes. The
outcome class and the kernels' counters are the evidence: each is what the box does on IPv4.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from testbed.runner import run_experiment
from testbed.spec import load_spec

from .conftest import SPEC_DIR, _live_problem
from .test_live_middleboxes import assert_clean_checksums, box, carrying, connection, counter

pytestmark = pytest.mark.root

DUAL_SERVER_IPV6 = "fd00:10:0:100::2"  # dual_path's server on the IPv6 side (the join's target)


def run_on(tmp_path: Path, stem: str, family: str, megabytes: int = 5, announce: bool = True,
           timeout_s: float | None = None) -> dict[str, Any]:
    """experiments/middleboxes/<stem>.toml on IPv6 two_path ("ipv6") or dual_path ("dual", the
    server announcing its IPv6 address unless `announce` is false)."""
    problem = _live_problem()
    if problem is not None:
        pytest.skip(problem)
    spec = load_spec(SPEC_DIR / f"{stem}.toml")
    traffic = dataclasses.replace(spec.traffic, bytes=megabytes * 1_000_000,
                                  timeout_s=timeout_s or spec.traffic.timeout_s)
    if family == "ipv6":
        spec = dataclasses.replace(spec, traffic=traffic,
                                   topology_params={**spec.topology_params, "family": "ipv6"})
    else:
        signal = (DUAL_SERVER_IPV6,) if announce else ()
        spec = dataclasses.replace(spec, traffic=traffic, topology="dual_path",
                                   mptcp=dataclasses.replace(spec.mptcp, server_signal=signal))
    out = tmp_path / f"out-{stem}-{family}-{announce}"
    return run_experiment(spec, out, progress=lambda line: None)


def families(result: dict[str, Any]) -> list[str]:
    return [s["family"] for s in carrying(result)]


def test_strip_mp_capable_on_ipv6_falls_back_to_tcp(tmp_path: Path) -> None:
    result = run_on(tmp_path, "strip_mp_capable_syn", "ipv6")
    conn = connection(result)
    assert conn["outcome"] == "fallback-syn", conn["evidence"]
    assert counter(result, "client", "MPCapableFallbackSYNACK") == 1
    assert counter(result, "server", "MPCapableSYNRX") == 0  # the server saw a plain SYN
    assert box(result, "mb_a", "strip_options")["changed"] == 1
    assert families(result) == ["IPv6"] and conn["integrity"] == "ok"
    assert_clean_checksums(result)


def test_strip_mp_join_on_the_ipv6_path_of_dual_path_rejects_that_subflow(tmp_path: Path) -> None:
    result = run_on(tmp_path, "strip_mp_join", "dual")
    conn = connection(result)
    assert conn["outcome"] == "subflow-rejected", conn["evidence"]
    assert box(result, "mb_b", "strip_options")["changed"] >= 1  # the IPv6 join SYN
    assert counter(result, "client", "MPJoinSynTx") >= 1
    assert counter(result, "server", "MPJoinSynRx") == 0  # the join arrived as a plain SYN
    assert families(result) == ["IPv4"] and conn["mptcp"] and conn["integrity"] == "ok"
    assert_clean_checksums(result)


def test_rewrite_payload_on_ipv6_is_delivered_as_tcp_would(tmp_path: Path) -> None:
    result = run_on(tmp_path, "rewrite_payload", "ipv6")
    conn = connection(result)
    assert (conn["outcome"], conn["integrity"]) == ("mptcp", "alg-edited"), conn["evidence"]
    [edit] = result["middlebox_stats"]["mb_a"]["middleboxes"][0]["edit_log"]["entries"]
    assert (edit["old"], edit["new"]) == (b"A".hex(), b"B".hex())
    assert edit["flow"].startswith("[fd00:")  # the box saw the IPv6 flow
    assert families(result) == ["IPv6"]
    assert_clean_checksums(result)  # the IPv6 pseudo-header checksum stayed right


def test_rewrite_seq_on_ipv6_both_subflows_carry_data(tmp_path: Path) -> None:
    result = run_on(tmp_path, "rewrite_seq", "ipv6")
    conn = connection(result)
    assert conn["outcome"] == "mptcp" and conn["integrity"] == "ok", conn["evidence"]
    assert families(result) == ["IPv6", "IPv6"]
    assert box(result, "mb_a", "rewrite_seq")["changed"] > 100
    assert box(result, "mb_b", "rewrite_seq")["changed"] > 100
    assert_clean_checksums(result)


def test_dss_stripped_after_an_add_addr_linux_corrupts_instead_of_falling_back(tmp_path: Path) -> None:
    """What Linux 6.18 does, pinned: DSS stripped on the initial (IPv4) path of dual_path.
    Without an announcement both ends fall back (fallback-infinite-map, as on IPv4 two_path).
    When the server has announced an address (ADD_ADDR, here its IPv6 one; an IPv4 one over an
    IPv6 initial subflow does the same), the client never falls back: it keeps retransmitting
    at the MPTCP level onto the subflow whose server end has fallen back to TCP, and the
    receiver takes the re-sent bytes as new stream data -- corruption, not a fallback, as in
    the full matrix's strip_dss_data row (mptcp_net-next #519). RFC 8684 3.7 asks for a
    fallback when the first data segment comes without a mapping."""
    quiet = run_on(tmp_path, "strip_dss_all", "dual", megabytes=2, announce=False, timeout_s=5)
    conn = connection(quiet)
    assert (conn["outcome"], conn["integrity"]) == ("fallback-infinite-map", "ok"), conn["evidence"]
    assert counter(quiet, "client", "MPCapableDataFallback") == 1
    announced = run_on(tmp_path, "strip_dss_all", "dual", megabytes=2, timeout_s=5)
    conn = connection(announced)
    assert conn["integrity"] == "corrupted", conn["evidence"]
    assert counter(announced, "server", "AddAddrTx") == 1 and counter(announced, "client", "AddAddr") == 1
    assert counter(announced, "server", "DssFallback") == 1  # the server fell back ...
    assert counter(announced, "client", "MPCapableDataFallback") == 0  # ... the client did not
    assert counter(announced, "client", "MPTCPRetrans") > 0
    assert_clean_checksums(announced)
