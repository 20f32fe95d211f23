"""The benchmark's inline and NFQUEUE modes on real namespaces: short runs that prove the flow
goes through the box and that the box rewrites essentially every packet (figures are not
asserted beyond "traffic flows": they depend on the machine and its load)."""

from __future__ import annotations

import os
import shutil

import pytest

from testbed.inline.bench_rewrite import format_results, measure

pytestmark = pytest.mark.root


@pytest.fixture(autouse=True)
def _needs_root_and_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    missing = [t for t in ("ip", "ethtool", "iperf3", "iptables-legacy") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing tools: {missing}")


def test_strip_mode_rewrites_every_packet_after_the_handshake() -> None:
    result = measure("strip", 1.5)
    assert result["mbit_s"] > 20, result
    assert result["box_changed"] >= 0.98 * result["box_seen"], result  # SYNs are not rewritten
    assert result["pipeline"]["raw_fast_path"] >= result["box_seen"] - 20, result["pipeline"]
    assert result["send_errors"] == 0 and result["retransmits"] < 1000
    assert result["bump_cpu_us_per_frame"] > 0
    assert "strip_options rewriting every packet" in format_results([{**result,
                                                                       "runs_mbit_s": [1.0]}])


def test_nfqueue_strip_mode_carries_the_flow() -> None:
    result = measure("nfqueue-strip", 1.5)
    assert result["mbit_s"] > 20, result
    assert result["bump_cpu_share"] > 0.01, result  # the consumer gave the verdicts
