"""The bundled stack against catalogue middleboxes on a path: what a fallback matrix checks.

Each case runs one transfer with the middlebox on one or both paths and checks the outcome
class and the payload (SHA-256 and every byte). Expectations follow RFC 8684 and
PROTOCOL-NOTES.md: sequence-number rewriting, coalescing and splitting are harmless to MPTCP
(mappings are relative; copied DSS options are tolerated); a stripped MP_JOIN refuses that
subflow only; a firewall dropping SYNs with unknown options makes the client retry without
MP_CAPABLE (plain TCP).
"""

from __future__ import annotations

from typing import Any

from middleboxes.contract import Middlebox
from middleboxes.registry import build_middlebox
from testbed.net.params import LinkParams
from testbed.sim.rng import derive_rng
from testbed.sim.transfer import PathSpec, TransferResult, TransferSpec, run_transfer
from tests.unit.scenarios.test_transfers import assert_intact

SIZE = 400_000


def box(name: str, params: dict[str, Any], tag: str) -> Middlebox:
    return build_middlebox(name, params, derive_rng(1, f"matrix/{tag}"))


def two_paths(path1: list[Middlebox], path2: list[Middlebox]) -> TransferResult:
    link = LinkParams(rate_mbit=10, delay_ms=5, queue_pkts=100)
    return run_transfer(TransferSpec(paths=[PathSpec(link, middleboxes=path1),
                                            PathSpec(link, middleboxes=path2)], size=SIZE))


def test_stripped_mp_join_refuses_only_that_subflow() -> None:
    stripper = box("strip_options", {"what": ["mp_join"], "packets": ["syn"]}, "join")
    result = two_paths([], [stripper])
    assert stripper.counters.changed >= 1
    assert_intact(result)
    assert result.outcome == "subflow-rejected"
    assert result.bytes_on_path("path2") == 0


def test_sequence_number_rewriting_firewalls_are_harmless() -> None:
    result = two_paths([box("rewrite_seq", {}, "seq1")], [box("rewrite_seq", {}, "seq2")])
    assert_intact(result)
    assert result.outcome == "mptcp"
    assert result.bytes_on_path("path1") > 0 and result.bytes_on_path("path2") > 0


def test_splitting_with_dss_copied_onto_every_piece_is_tolerated() -> None:
    splitter = box("split", {"mss_bytes": 536, "options_on_pieces": "all",
                             "direction": "upstream"}, "split")
    result = two_paths([splitter], [])
    assert splitter.counters.injected > 0  # segments really were cut into pieces
    assert_intact(result)
    assert result.outcome == "mptcp"


def test_coalescing_segments_never_corrupts_and_never_stalls() -> None:
    """A coalescer keeping only the first segment's options leaves the second segment's bytes
    without a mapping when the sender maps each segment separately (this stack does; Linux
    with TSO often maps many segments at once). Treating that like stripped options (an
    infinite-mapping fallback, or resetting the affected subflow) is correct; corrupting,
    stalling or resetting the connection is not."""
    merger = box("coalesce", {"max_bytes": 2896, "mtu_bytes": 0, "direction": "upstream"},
                 "coalesce")  # a jumbo path: whole segments merge two by two
    result = two_paths([merger], [])
    assert merger.counters.changed > 0  # segments really were merged
    assert_intact(result)
    assert result.outcome in ("mptcp", "fallback-infinite-map")


def test_a_firewall_dropping_syns_with_unknown_options_leads_to_plain_tcp() -> None:
    firewall = box("syn_firewall", {}, "firewall")
    link = LinkParams(rate_mbit=10, delay_ms=5)
    result = run_transfer(TransferSpec(paths=[PathSpec(link, middleboxes=[firewall])],
                                       size=SIZE, time_limit=30.0))
    assert firewall.counters.dropped >= 1
    assert_intact(result)
    assert result.outcome == "fallback-syn"
