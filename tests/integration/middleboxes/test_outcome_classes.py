"""testbed.outcome on hand-made evidence: every class of DESIGN.md, and the precedence between
them (corruption is never hidden). Pure: no namespaces, runs anywhere."""

from __future__ import annotations

import dataclasses
import hashlib

from testbed.endpoints.payload import expected_digest
from testbed.endpoints.report import EndpointReport, SubflowReport, merge_reports
from testbed.outcome import OUTCOMES, classify, delivered_prefix_intact

SEED = 7
SENT = 100_000


def subflow(index: int, local: str, acked: int, open_at_end: bool = True) -> SubflowReport:
    return SubflowReport(index, local, "10.0.100.2:5201", acked, acked, 0, 0, 0, 1000, 0.0, 1.0,
                         open_at_end)


def report(role: str, *, received: int = SENT, sha: str | None = None, mptcp: bool = True,
           seen: bool = True, requested: bool = True, error_kind: str | None = None,
           subflows: tuple[SubflowReport, ...] = ()) -> EndpointReport:
    count = SENT if role == "client" else received
    return EndpointReport(
        role=role, connection=0, transport="mptcp" if requested else "tcp",  # type: ignore[arg-type]
        mptcp_requested=requested, mptcp_used=mptcp, direction="upload",
        sending=role == "client", mode="bytes", requested_bytes=SENT, requested_seconds=None,
        seed=SEED, bytes=count, sha256=sha or expected_digest(SEED, count), duration_s=1.0,
        goodput_mbps=1.0, local=None, remote=None, started_at_unix=None, subflows=subflows,
        mptcp_seen=seen, error=None if error_kind is None else f"{error_kind} happened",
        error_kind=error_kind)  # type: ignore[arg-type]


TWO = (subflow(0, "10.0.1.1:1", 60_000), subflow(1, "10.0.2.1:2", 40_000))
ONE = (subflow(0, "10.0.1.1:1", 100_000),)


def verdict(client: EndpointReport, server: EndpointReport,
            counters: dict[str, dict[str, int]] | None = None,
            expected_subflows: int = 2) -> tuple[str, list[str]]:
    return classify(merge_reports(client, server), counters or {}, expected_subflows)


def test_mptcp_two_subflows() -> None:
    outcome, evidence = verdict(report("client", subflows=TWO), report("server"))
    assert outcome == "mptcp"
    assert "2 subflow(s) carried data" in evidence[0]
    assert evidence[-1].startswith("integrity ok")


def test_fallback_syn_from_counter() -> None:
    outcome, evidence = verdict(report("client", mptcp=False, seen=False, subflows=ONE),
                                report("server", mptcp=False, seen=False),
                                {"client": {"MPTcpExtMPCapableFallbackSYNACK": 1}})
    assert outcome == "fallback-syn"
    assert any("client: MPTcpExtMPCapableFallbackSYNACK +1" in line for line in evidence)


def test_fallback_syn_with_a_plain_tcp_server() -> None:
    outcome, evidence = verdict(report("client", mptcp=False, seen=False, subflows=ONE),
                                report("server", mptcp=False, seen=False, requested=False))
    assert outcome == "fallback-syn"
    assert any("plain TCP endpoint(s): server" in line for line in evidence)


def test_fallback_after_the_handshake() -> None:
    outcome, evidence = verdict(report("client", mptcp=False, subflows=ONE),
                                report("server", mptcp=False),
                                {"server": {"MPTcpExtDssFallback": 1}})
    assert outcome == "fallback-infinite-map"
    assert any("DssFallback" in line for line in evidence)


def test_mp_fail_wins_over_the_stall_that_follows() -> None:
    outcome, evidence = verdict(
        report("client", error_kind="timeout", subflows=ONE),
        report("server", received=40_000, error_kind="timeout"),
        {"server": {"MPTcpExtDataCsumErr": 1, "MPTcpExtMPFailTx": 1}})
    assert outcome == "mp-fail"
    assert any(line.startswith("also stalled") for line in evidence)
    assert "no corrupted byte delivered" in evidence[-1]


def test_subflow_rejected() -> None:
    outcome, evidence = verdict(
        report("client", subflows=(*ONE, subflow(1, "10.0.2.1:2", 0, open_at_end=False))),
        report("server"), {"client": {"MPTcpExtMPJoinSynTx": 1, "MPTcpExtMPRstTx": 1}})
    assert outcome == "subflow-rejected"
    assert evidence[0] == "1 of 2 expected subflows carried data"


def test_fewer_subflows_without_any_join_attempt_is_still_mptcp() -> None:
    outcome, _ = verdict(report("client", subflows=ONE), report("server"))
    assert outcome == "mptcp"


def test_reset_with_intact_prefix() -> None:
    outcome, evidence = verdict(report("client", error_kind="reset", subflows=ONE),
                                report("server", received=30_000, error_kind="reset"))
    assert outcome == "reset"
    assert "first 30000 of 100000" in evidence[-1]


def test_stalled_when_nothing_arrives() -> None:
    outcome, evidence = verdict(report("client", error_kind="timeout", subflows=ONE),
                                report("server", received=0, error_kind="timeout"))
    assert outcome == "stalled"
    assert "no payload byte delivered" in evidence


def test_corrupted_same_length_is_the_integrity_axis_not_an_outcome() -> None:
    outcome, evidence = verdict(report("client", subflows=TWO),
                                report("server", sha=hashlib.sha256(b"other").hexdigest()))
    assert outcome == "mptcp"  # what the protocol did; the oracle judges the bytes
    assert evidence[-1] == "corrupted bytes were delivered to the application"


def test_corruption_never_hides_mp_fail_or_reset_and_is_still_stated() -> None:
    bad_prefix = hashlib.sha256(b"x" * 30_000).hexdigest()
    outcome, evidence = verdict(
        report("client", error_kind="reset", subflows=ONE),
        report("server", received=30_000, sha=bad_prefix, error_kind="reset"),
        {"server": {"MPTcpExtMPFailTx": 1}})
    assert outcome == "mp-fail"
    assert any(line.startswith("also reset") for line in evidence)
    assert evidence[-1] == "corrupted bytes were delivered to the application"


def test_more_bytes_than_sent_is_not_an_intact_prefix() -> None:
    record = merge_reports(report("client", subflows=ONE), report("server", received=SENT + 1))
    assert delivered_prefix_intact(record) is False
    assert classify(record, {}, 1)[0] == "mptcp"


def test_checksum_errors_are_reported_in_the_evidence() -> None:
    _, evidence = verdict(report("client", subflows=TWO), report("server"),
                          {"server": {"TcpInCsumErrors": 3}})
    assert any("server: TcpInCsumErrors +3" in line for line in evidence)


def test_unknown_seed_leaves_the_prefix_unchecked() -> None:
    client = dataclasses.replace(report("client", subflows=ONE, error_kind="reset"), seed=None)
    record = merge_reports(client, report("server", received=10, error_kind="reset"))
    assert delivered_prefix_intact(record) is None
    assert classify(record, {}, 1)[0] == "reset"


def test_outcome_names_match_the_spec_vocabulary() -> None:
    from testbed.spec import OUTCOMES as SPEC_OUTCOMES

    assert set(OUTCOMES) == set(SPEC_OUTCOMES)
