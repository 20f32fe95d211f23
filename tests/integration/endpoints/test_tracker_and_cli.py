"""Subflow bookkeeping across samples, and command-line validation. No root needed."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from testbed.endpoints.kernel import build_parser
from testbed.endpoints.kernel_info import MptcpInfo, SubflowSnapshot, TcpCounters
from testbed.endpoints.sampler import Observation, SubflowTracker, TimeseriesWriter


def _snap(local: str, acked: int, state: int = 1) -> SubflowSnapshot:
    counters = TcpCounters(
        state=state, bytes_sent=acked, bytes_acked=acked, bytes_received=0,
        bytes_retrans=0, total_retrans=0, rtt_us=50, snd_cwnd=10,
    )  # fmt: skip
    return SubflowSnapshot(local=local, remote="10.98.1.2:5201", counters=counters)


def _info(fallback: bool = False) -> MptcpInfo:
    return MptcpInfo(
        subflows=1, add_addr_signal=0, add_addr_accepted=0, subflows_max=2,
        flags=1 if fallback else 2, token=1, write_seq=0, snd_una=0, rcv_nxt=0,
        local_addr_used=1, local_addr_max=1, csum_enabled=False, retransmits=0,
        bytes_retrans=0, bytes_sent=0, bytes_received=0, bytes_acked=0, subflows_total=2,
    )  # fmt: skip


def test_subflow_that_closes_keeps_its_last_totals() -> None:
    tracker = SubflowTracker()
    tracker.observe(0.05, Observation(_info(), [_snap("10.98.1.1:1", 100), _snap("10.98.2.1:2", 50)]))
    rows = tracker.observe(0.10, Observation(_info(), [_snap("10.98.1.1:1", 300), _snap("10.98.2.1:2", 80)]))
    assert rows == [
        # then cwnd segments/bytes, srtt ms, in flight, delivery rate, retransmissions: what
        # the counters lack is empty
        ("0.1000", 0, "10.98.1.1:1", "10.98.1.2:5201", 300, 0, 300, 10, "", "0.050", "", "", 0),
        ("0.1000", 1, "10.98.2.1:2", "10.98.1.2:5201", 80, 0, 80, 10, "", "0.050", "", "", 0),
    ]
    tracker.observe(0.15, Observation(_info(), [_snap("10.98.1.1:1", 900)]))  # subflow 1 gone
    reports = tracker.subflow_reports()
    assert [(r.index, r.bytes_acked, r.open_at_end) for r in reports] == [(0, 900, True), (1, 80, False)]
    assert reports[1].first_seen_s == 0.05 and reports[1].last_seen_s == 0.1
    assert tracker.samples == 3 and tracker.mptcp_at_end


def test_counters_going_backwards_mean_a_new_subflow() -> None:
    tracker = SubflowTracker()
    tracker.observe(0.0, Observation(_info(), [_snap("10.98.2.1:2", 500)]))
    tracker.observe(0.1, Observation(_info(), [_snap("10.98.2.1:2", 10)]))
    assert [(r.index, r.bytes_acked) for r in tracker.subflow_reports()] == [(0, 500), (1, 10)]


def test_void_closed_snapshot_does_not_erase_totals() -> None:
    tracker = SubflowTracker()
    tracker.observe(0.0, Observation(None, [_snap("10.98.1.1:1", 4000)]))
    tracker.observe(0.1, Observation(None, [_snap("10.98.1.1:1", 0, state=7)]))
    [report] = tracker.subflow_reports()
    assert report.bytes_acked == 4000 and not report.open_at_end
    assert not tracker.mptcp_at_end and tracker.last_mptcp_info is None
    assert not tracker.mptcp_seen


def test_fallback_after_mptcp_is_visible() -> None:
    tracker = SubflowTracker()
    tracker.observe(0.0, Observation(_info(), [_snap("10.98.1.1:1", 1)]))
    tracker.observe(0.1, Observation(None, [_snap("10.98.1.1:1", 2)]))
    assert not tracker.mptcp_at_end and tracker.last_mptcp_info is not None
    assert tracker.mptcp_seen


def test_timeseries_writer_header_and_rows() -> None:
    stream = io.StringIO()
    writer = TimeseriesWriter(stream)
    writer.write([("0.0500", 0, "a:1", "b:2", 10, 0, 9, 10, 14480, "20.000", 2896, "1.000", 0)])
    assert stream.getvalue() == (
        "t_s,subflow,local,remote,bytes_sent,bytes_received,bytes_acked,cwnd_segments,cwnd_bytes,"
        "srtt_ms,in_flight_bytes,delivery_rate_mbps,retrans_segments\n"
        "0.0500,0,a:1,b:2,10,0,9,10,14480,20.000,2896,1.000,0\n"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["client", "--connect", "10.0.0.1", "--bytes", "1"], "--connect must be ADDR:PORT"),
        (["client", "--connect", "host:80", "--bytes", "1"], "'host' is not an IP address"),
        (["client", "--connect", "10.0.0.1:70000", "--bytes", "1"], "port '70000' is not in"),
        (["client", "--connect", "10.0.0.1:1", "--bytes", "1", "--seconds", "1"], "not allowed with"),
        (["client", "--connect", "10.0.0.1:1"],
         "one of the arguments --bytes --seconds --requests is required"),
        (["client", "--connect", "10.0.0.1:1", "--seconds", "0"], "must be > 0"),
        (["client", "--connect", "10.0.0.1:1", "--bytes", "1", "--mptcp", "--tcp"], "not allowed with"),
        (["server", "--listen", "0.0.0.0:1", "--connections", "0"], "must be >= 1"),
    ],
)
def test_bad_command_lines_are_named(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_defaults() -> None:
    args = build_parser().parse_args(["client", "--connect", "10.0.0.1:5201", "--bytes", "5"])
    assert (args.transport, args.direction, args.seed, args.sample_ms) == ("mptcp", "upload", 1, 50.0)
    assert args.connect == ("10.0.0.1", 5201) and args.bind is None
    args = build_parser().parse_args(
        ["client", "--connect", "10.0.0.1:1", "--bind", "10.0.0.2", "--bytes", "1"]
    )
    assert args.bind == ("10.0.0.2", 0)


def test_module_runs_as_a_program() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "testbed.endpoints.kernel", "--help"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0 and "server" in result.stdout and "client" in result.stdout
