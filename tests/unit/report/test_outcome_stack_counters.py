"""testbed.outcome reads a python end's own stack counters (EndpointReport.stack_counters)
exactly as it reads the kernel's MPTcpExt deltas.

Each case is built so that the stack counters alone decide the class or the evidence: with the
counters dropped (the `without_stack_counters` twin) the verdict is a different class, which
the test also asserts, so a classifier that ignores them fails here.
"""

from __future__ import annotations

import dataclasses

import pytest

from testbed.endpoints.payload import expected_digest
from testbed.endpoints.report import EndpointReport, SubflowReport, merge_reports
from testbed.mptcp.counters import new_counters
from testbed.outcome import classify, evidence_counters, stack_counter_name

SEED = 11
SENT = 50_000


def subflow(index: int, local: str, acked: int, open_at_end: bool = True) -> SubflowReport:
    return SubflowReport(index, local, "10.0.100.2:5201", acked, acked, 0, 0, 0, 1000, 0.0, 1.0,
                         open_at_end)


ONE = (subflow(0, "10.0.1.1:40000", SENT),)


def python_end(role: str, counters: dict[str, int] | None, *, received: int = SENT,
               used: bool = True, seen: bool = True, error_kind: str | None = None,
               subflows: tuple[SubflowReport, ...] = ()) -> EndpointReport:
    """A python endpoint's report; `counters` are set on top of a fresh stack counter dict
    (every name at 0, as the stack reports them)."""
    stack = None
    if counters is not None:
        stack = new_counters()
        stack.update(counters)
    count = SENT if role == "client" else received
    return EndpointReport(
        role=role, connection=0, transport="mptcp", mptcp_requested=True,  # type: ignore[arg-type]
        mptcp_used=used, direction="upload", sending=role == "client", mode="bytes",
        requested_bytes=SENT, requested_seconds=None, seed=SEED, bytes=count,
        sha256=expected_digest(SEED, count), duration_s=1.0, goodput_mbps=1.0, local=None,
        remote=None, started_at_unix=None, subflows=subflows, mptcp_seen=seen,
        error=None if error_kind is None else f"{error_kind} happened",
        error_kind=error_kind, stack_counters=stack)  # type: ignore[arg-type]


def verdict(client: EndpointReport, server: EndpointReport,
            expected_subflows: int = 1) -> tuple[str, list[str]]:
    return classify(merge_reports(client, server), {}, expected_subflows)


def without_stack_counters(client: EndpointReport, server: EndpointReport,
                           expected_subflows: int = 1) -> str:
    return verdict(dataclasses.replace(client, stack_counters=None),
                   dataclasses.replace(server, stack_counters=None), expected_subflows)[0]


def test_names_follow_the_kernel_and_own_counters_keep_theirs() -> None:
    assert stack_counter_name("DataCsumErr") == "MPTcpExtDataCsumErr"
    assert stack_counter_name("MPJoinSynTx") == "MPTcpExtMPJoinSynTx"
    assert stack_counter_name("SubflowResetMiddlebox") == "SubflowResetMiddlebox"
    record = merge_reports(python_end("client", {"InfiniteMapTx": 2}), python_end("server", None))
    merged = evidence_counters(record, {"server": {"MPTcpExtDssFallback": 1}})
    assert merged["client (bundled stack)"]["MPTcpExtInfiniteMapTx"] == 2
    assert merged["server"] == {"MPTcpExtDssFallback": 1}  # a kernel namespace, untouched
    assert "server (bundled stack)" not in merged  # a kernel end has no stack counters


def test_fallback_before_the_first_sample_is_an_infinite_map_fallback() -> None:
    """strip_dss_all python-python: both ends fell back before any sample saw MPTCP; only the
    stack counters show the handshake completed and the DSS-missing fallback on each end."""
    client = python_end("client", {"MPCapableSYNACKRX": 1, "MPCapableDataFallback": 1,
                                   "InfiniteMapTx": 1}, used=False, seen=False, subflows=ONE)
    server = python_end("server", {"MPCapableACKRX": 1, "DssFallback": 1}, used=False, seen=False)
    outcome, evidence = verdict(client, server)
    assert outcome == "fallback-infinite-map"
    assert ("client (bundled stack): MPTcpExtMPCapableDataFallback +1 (first packet after the "
            "handshake without DSS: fell back)") in evidence
    assert any(line.startswith("server (bundled stack): MPTcpExtDssFallback +1") for line in evidence)
    assert any("MP_CAPABLE handshake completed" in line and "fell back after the handshake" in line
               for line in evidence)
    assert not any("neither end ever saw MPTCP" in line for line in evidence)
    assert without_stack_counters(client, server) == "fallback-syn"


def test_handshake_counters_alone_rule_out_a_syn_fallback() -> None:
    """No fallback counter at all, but MP_CAPABLE on the SYN/ACK and the third ACK: MPTCP was
    negotiated, so plain TCP at the end is a fallback after the handshake, never `mptcp`."""
    client = python_end("client", {"MPCapableSYNACKRX": 1}, used=False, seen=False, subflows=ONE)
    server = python_end("server", {"MPCapableACKRX": 1}, used=False, seen=False)
    assert verdict(client, server)[0] == "fallback-infinite-map"


def test_a_syn_fallback_counted_by_the_stack_is_evidence() -> None:
    client = python_end("client", {"MPCapableSYNTX": 1, "MPCapableFallbackSYNACK": 1},
                        used=False, seen=False, subflows=ONE)
    server = python_end("server", {"MPCapableSYNRX": 1, "MPCapableFallbackACK": 1},
                        used=False, seen=False)
    outcome, evidence = verdict(client, server)
    assert outcome == "fallback-syn"
    assert evidence[0] == ("client (bundled stack): MPTcpExtMPCapableFallbackSYNACK +1 "
                           "(SYN/ACK without MP_CAPABLE: plain TCP)")
    assert evidence[1].startswith("server (bundled stack): MPTcpExtMPCapableFallbackACK +1")


def test_a_third_ack_fallback_is_still_a_syn_fallback() -> None:
    """MP_CAPABLE reached the client on the SYN/ACK but not the server on the third ACK: the
    handshake did not complete, the server's counter says so."""
    client = python_end("client", {"MPCapableSYNACKRX": 1}, used=False, seen=False, subflows=ONE)
    server = python_end("server", {"MPCapableFallbackACK": 1}, used=False, seen=False)
    outcome, evidence = verdict(client, server)
    assert outcome == "fallback-syn"
    assert any("neither end ever saw MPTCP" in line for line in evidence)


def test_checksum_failure_counted_by_the_stack_is_mp_fail() -> None:
    """rewrite_payload_dss_checksum with a python receiver: the failed range is never
    delivered; the transfer then stalls. Without the counters it would read `stalled`."""
    client = python_end("client", {"MPFailRx": 1}, error_kind="timeout", subflows=ONE)
    server = python_end("server", {"DataCsumErr": 1, "MPFailTx": 1}, received=20_000,
                        error_kind="timeout")
    outcome, evidence = verdict(client, server)
    assert outcome == "mp-fail"
    assert evidence[:3] == [
        "client (bundled stack): MPTcpExtMPFailRx +1 (MP_FAIL received)",
        "server (bundled stack): MPTcpExtDataCsumErr +1 (DSS checksum failed)",
        "server (bundled stack): MPTcpExtMPFailTx +1 (MP_FAIL sent)"]
    assert "no corrupted byte delivered" in evidence[-1]
    assert without_stack_counters(client, server) == "stalled"


def test_checksum_failure_then_infinite_mapping_completes_as_mp_fail() -> None:
    client = python_end("client", {"MPFailRx": 1, "InfiniteMapTx": 1}, used=False, subflows=ONE)
    server = python_end("server", {"DataCsumErr": 1, "MPFailTx": 1, "InfiniteMapRx": 1},
                        used=False)
    outcome, evidence = verdict(client, server)
    assert outcome == "mp-fail"
    assert any(line.startswith("also fallback-infinite-map: client (bundled stack): "
                               "MPTcpExtInfiniteMapTx +1") for line in evidence)
    assert without_stack_counters(client, server) == "fallback-infinite-map"


def test_join_refused_by_a_stripping_box_is_subflow_rejected() -> None:
    """strip_mp_join with a python client: the join's SYN/ACK came back without MP_JOIN, the
    stack reset that subflow. The sender's report lists only the subflow that carried data."""
    client = python_end("client", {"MPCapableSYNACKRX": 1, "MPJoinSynTx": 1, "MPRstTx": 1},
                        subflows=ONE)
    server = python_end("server", {"MPCapableACKRX": 1})
    outcome, evidence = verdict(client, server, expected_subflows=2)
    assert outcome == "subflow-rejected"
    assert evidence[:3] == [
        "1 of 2 expected subflows carried data",
        "client (bundled stack): MPTcpExtMPJoinSynTx +1 (MP_JOIN SYN sent)",
        "client (bundled stack): MPTcpExtMPRstTx +1 (MP_TCPRST sent (subflow reset))"]
    assert without_stack_counters(client, server, expected_subflows=2) == "mptcp"


def test_a_middlebox_reset_of_a_join_uses_the_stack_s_own_counter() -> None:
    client = python_end("client", {"SubflowResetMiddlebox": 1}, subflows=ONE)
    server = python_end("server", None)  # a kernel server: no stack counters
    outcome, evidence = verdict(client, server, expected_subflows=2)
    assert outcome == "subflow-rejected"
    assert ("client (bundled stack): SubflowResetMiddlebox +1 (subflow reset with MP_TCPRST "
            "reason 6 (middlebox interference))") in evidence
    assert without_stack_counters(client, server, expected_subflows=2) == "mptcp"


def test_kernel_and_stack_counters_are_told_apart_in_one_verdict() -> None:
    """python client, kernel server: each counter line names its source."""
    client = python_end("client", {"MPJoinSynTx": 1, "MPRstRx": 1}, subflows=ONE)
    server = python_end("server", None)
    outcome, evidence = classify(merge_reports(client, server),
                                 {"server": {"MPTcpExtMPJoinSynRx": 1, "MPTcpExtMPRstTx": 1}}, 2)
    assert outcome == "subflow-rejected"
    assert "client (bundled stack): MPTcpExtMPJoinSynTx +1 (MP_JOIN SYN sent)" in evidence
    assert "server: MPTcpExtMPJoinSynRx +1 (MP_JOIN SYN received)" in evidence


@pytest.mark.parametrize("zeroes", [True, False])
def test_counters_that_did_not_move_say_nothing(zeroes: bool) -> None:
    client = python_end("client", {} if zeroes else None, subflows=ONE)
    server = python_end("server", {} if zeroes else None)
    outcome, evidence = verdict(client, server)
    assert outcome == "mptcp"
    assert not any("bundled stack" in line for line in evidence)


def test_reset_evidence_carries_the_stack_counters_of_what_came_before() -> None:
    client = python_end("client", {"MPCapableDataFallback": 1}, used=False, error_kind="reset",
                        subflows=ONE)
    server = python_end("server", {"DssFallback": 1}, used=False, received=10_000,
                        error_kind="reset")
    outcome, evidence = verdict(client, server)
    assert outcome == "reset"
    assert any(line.startswith("also fallback-infinite-map: server (bundled stack): "
                               "MPTcpExtDssFallback +1") for line in evidence)
