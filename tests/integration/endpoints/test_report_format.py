"""The report format the runner depends on: round trip, validation messages, merging."""

from __future__ import annotations

import dataclasses
import json

import pytest

from testbed.endpoints.report import (
    EndpointReport,
    ListeningEvent,
    MptcpCounters,
    ReportError,
    SubflowReport,
    merge_reports,
    parse_listening,
    parse_output,
    parse_report,
)

SHA_A = "a" * 64
SHA_B = "b" * 64


def _subflow(index: int, acked: int) -> SubflowReport:
    return SubflowReport(
        index=index, local=f"10.98.{index + 1}.1:4000{index}", remote="10.98.1.2:5201",
        bytes_sent=acked, bytes_acked=acked, bytes_received=0, bytes_retrans=0,
        total_retrans=0, rtt_us=100, first_seen_s=0.0, last_seen_s=1.0, open_at_end=index == 0,
    )  # fmt: skip


def _report(role: str, **changes: object) -> EndpointReport:
    base = EndpointReport(
        role="client" if role == "client" else "server",
        connection=0,
        transport="mptcp",
        mptcp_requested=True,
        mptcp_used=True,
        direction="upload",
        sending=role == "client",
        mode="bytes",
        requested_bytes=1000,
        requested_seconds=None,
        seed=1 if role == "client" else None,
        bytes=1000,
        sha256=SHA_A,
        duration_s=0.5,
        goodput_mbps=0.016,
        local="10.98.1.1:40000",
        remote="10.98.1.2:5201",
        started_at_unix=1.0,
        subflows=(_subflow(0, 600), _subflow(1, 424)),
        mptcp_info=MptcpCounters(
            subflows=1,
            subflows_total=2,
            add_addr_signal=0,
            add_addr_accepted=0,
            flags=2,
            fallback=False,
            remote_key_received=True,
            csum_enabled=False,
            token=5,
            retransmits=0,
            bytes_retrans=0,
            bytes_sent=1024,
            bytes_received=0,
            bytes_acked=1024,
        ),
    )
    return dataclasses.replace(base, **changes)


def test_report_round_trip() -> None:
    report = _report("client")
    line = report.to_json()
    assert json.loads(line)["event"] == "report"
    assert parse_report(line) == report


def test_report_with_error_and_no_info_round_trips() -> None:
    report = _report("server", mptcp_info=None, subflows=(), error="x", error_kind="reset")
    assert parse_report(report.to_json()) == report


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("sha256"), "missing field 'sha256'"),
        (lambda d: d.update(bytes="12"), "field 'bytes' must be int"),
        (lambda d: d.update(bytes=True), "field 'bytes' must be int"),
        (lambda d: d.update(role="peer"), "field 'role' is 'peer'"),
        (lambda d: d.update(colour="red"), r"unknown field\(s\) \['colour'\]"),
        (lambda d: d.update(mptcp_used=None), "field 'mptcp_used' must not be null"),
        (lambda d: d["subflows"][1].pop("local"), r"subflows\[1\]: missing field 'local'"),
        (lambda d: d["mptcp_info"].update(subflows="2"), "mptcp_info: field 'subflows' must be int"),
        (lambda d: d.update(schema=2), "schema 2 is not supported"),
    ],
)
def test_report_validation_names_the_field(mutate, message: str) -> None:
    data = json.loads(_report("client").to_json())
    mutate(data)
    with pytest.raises(ReportError, match=message):
        parse_report(json.dumps(data))


def test_not_a_report() -> None:
    with pytest.raises(ReportError, match="not JSON"):
        parse_report("Traceback (most recent call last):")
    with pytest.raises(ReportError, match="not a report line"):
        parse_report('{"event": "listening"}')


def test_parse_output_splits_events() -> None:
    listening = ListeningEvent(address="0.0.0.0:5201", transport="mptcp", connections=2, pid=7)
    first, second = _report("server"), _report("server", connection=1)
    stdout = "\n".join([listening.to_json(), first.to_json(), "", second.to_json()]) + "\n"
    assert parse_output(stdout) == (listening, [first, second])
    assert parse_listening(listening.to_json()) == listening
    with pytest.raises(ReportError, match="line 2: unknown event 'progress'"):
        parse_output(listening.to_json() + '\n{"event": "progress"}\n')


def test_merge_ok_uses_receiver_bytes_and_sender_subflows() -> None:
    client = _report("client", goodput_mbps=10.0)
    server = _report("server", goodput_mbps=9.5, subflows=())
    record = merge_reports(client, server)
    assert record.integrity == "ok" and record.complete and record.problems == ()
    assert record.goodput_mbps == 9.5 and record.subflows == client.subflows
    assert record.mptcp_used


def test_merge_download_takes_the_server_as_sender() -> None:
    client = _report("client", direction="download", sending=False, subflows=())
    server = _report("server", direction="download", sending=True, goodput_mbps=3.0)
    record = merge_reports(client, server)
    assert record.subflows == server.subflows and record.goodput_mbps == client.goodput_mbps


def test_merge_detects_hash_and_count_mismatch() -> None:
    record = merge_reports(_report("client"), _report("server", sha256=SHA_B))
    assert record.integrity == "mismatch"
    assert any("sha256 differs" in problem for problem in record.problems)
    record = merge_reports(_report("client"), _report("server", bytes=999))
    assert record.integrity == "mismatch"
    assert any("byte count differs: client sent 1000, server received 999" in p for p in record.problems)


def test_merge_keeps_errors_apart_from_integrity() -> None:
    server = _report("server", error="connection reset by peer", error_kind="reset")
    record = merge_reports(_report("client"), server)
    assert record.integrity == "ok" and not record.complete
    assert record.errors == ("server error (reset): connection reset by peer",)


def test_merge_flags_disagreement_on_mptcp() -> None:
    record = merge_reports(_report("client"), _report("server", mptcp_used=False))
    assert not record.mptcp_used
    assert "ends disagree on MPTCP: client True, server False" in record.problems


def test_merge_checks_roles() -> None:
    with pytest.raises(ValueError, match="first report has role 'server'"):
        merge_reports(_report("server"), _report("server"))
