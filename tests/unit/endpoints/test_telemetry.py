"""Per-subflow telemetry: the sampler's CSV cells, the python stack's own values, binning."""

from __future__ import annotations

import csv
from pathlib import Path

from testbed.endpoints.kernel_info import TcpCounters
from testbed.endpoints.sampler import (
    TELEMETRY_COLUMNS,
    TIMESERIES_COLUMNS,
    Observation,
    SubflowSnapshot,
    SubflowTracker,
    telemetry_cells,
)
from testbed.endpoints.stack_observe import StackObserver
from testbed.results import TIMESERIES_COLUMNS as BINNED_COLUMNS
from testbed.results import bin_samples, timeseries_meta, write_timeseries
from tests.unit.mptcp.harness import Pair


def _counters(**overrides: object) -> TcpCounters:
    values: dict[str, object] = dict(state=1, bytes_sent=100, bytes_acked=90, bytes_received=0,
                                     bytes_retrans=0,
                                     total_retrans=2, rtt_us=20_500, snd_cwnd=10, cwnd_bytes=14_480,
                                     in_flight_bytes=2896, delivery_rate_bps=1_250_000)
    values.update(overrides)
    return TcpCounters(**values)  # type: ignore[arg-type]


def test_cells_are_in_common_units() -> None:
    assert telemetry_cells(_counters()) == (10, 14_480, "20.500", 2896, "10.000", 2)


def test_missing_fields_are_empty_not_zero() -> None:
    cells = telemetry_cells(_counters(delivery_rate_bps=None, rtt_us=0, in_flight_bytes=None))
    assert cells[2] == "" and cells[3] == "" and cells[4] == ""


def test_tracker_rows_carry_telemetry_after_the_counters() -> None:
    tracker = SubflowTracker()
    rows = tracker.observe(0.05, Observation(None, [SubflowSnapshot("a:1", "b:2", _counters())]))
    assert len(rows[0]) == len(TIMESERIES_COLUMNS)
    assert dict(zip(TIMESERIES_COLUMNS, rows[0], strict=True))["srtt_ms"] == "20.500"


def _write_samples(path: Path, rows: list[dict[str, object]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, list(TIMESERIES_COLUMNS))
        writer.writeheader()
        for row in rows:
            writer.writerow({"subflow": 0, "local": "a:1", "remote": "b:2", "bytes_sent": 0,
                             "bytes_received": 0, **row})


def test_binning_means_gauges_and_holds_cumulative_retransmissions(tmp_path: Path) -> None:
    samples = tmp_path / "client.samples.csv"
    _write_samples(samples, [
        {"t_s": 0.02, "bytes_acked": 1000, "cwnd_segments": 10, "srtt_ms": "10.000", "retrans_segments": 0},
        {"t_s": 0.07, "bytes_acked": 2000, "cwnd_segments": 20, "srtt_ms": "20.000", "retrans_segments": 3},
        # nothing sampled in (0.1, 0.2]
        {"t_s": 0.25, "bytes_acked": 4000, "cwnd_segments": 7, "srtt_ms": "", "retrans_segments": 4},
    ])
    rows = bin_samples(samples, bin_s=0.1)
    assert [r["bytes"] for r in rows] == [2000, 0, 2000]
    assert [r["cwnd_segments"] for r in rows] == [15, "", 7]
    assert [r["srtt_ms"] for r in rows] == [15.0, "", ""]
    assert [r["retrans_segments"] for r in rows] == [3, 3, 4]
    assert rows[0]["delivery_rate_mbps"] == ""  # never sampled: empty, not 0
    out = tmp_path / "timeseries.csv"
    write_timeseries(out, rows)
    header = out.read_text().splitlines()[0].split(",")
    assert header == list(BINNED_COLUMNS) == timeseries_meta()["columns"]


def test_binning_reads_samples_without_telemetry_columns(tmp_path: Path) -> None:
    samples = tmp_path / "old.samples.csv"
    samples.write_text("t_s,subflow,local,remote,bytes_sent,bytes_received,bytes_acked\n0.05,0,a,b,10,0,10\n")
    (row,) = bin_samples(samples, bin_s=0.1)
    assert row["bytes"] == 10 and all(row[c] == "" for c in ("cwnd_segments", "srtt_ms"))


def test_python_stack_observation_has_telemetry_in_kernel_units() -> None:
    """A 10 ms one-way path: the stack's smoothed RTT is about 20 ms, cwnd and delivery rate
    come from its own state, sampled only when the observer is asked."""
    pair = Pair(delay=0.010)
    client = pair.connect()
    pair.run_until(lambda: "ConnectionAccepted" in pair.event_types("server"), 2.0)
    server = pair.server_connection()
    observer = StackObserver(client)
    first = observer.observe(pair.now)
    assert first.subflows[0].counters.delivery_rate_bps is None  # nothing to compare with yet
    client.send(bytes(300_000))
    received = bytearray()

    def keep_reading() -> bool:  # the receiver drains its buffer; run for the whole 0.3 s
        received.extend(server.receive())
        return False

    pair.run(0.3, until=keep_reading)
    assert received
    (snapshot,) = observer.observe(pair.now).subflows
    counters = snapshot.counters
    assert 19_000 <= counters.rtt_us <= 40_000
    assert counters.cwnd_bytes is not None and counters.cwnd_bytes >= counters.snd_cwnd * 1000 > 0
    assert counters.delivery_rate_bps is not None and counters.delivery_rate_bps > 0
    assert counters.in_flight_bytes is not None and counters.in_flight_bytes >= 0
    assert len(telemetry_cells(counters)) == len(TELEMETRY_COLUMNS)
