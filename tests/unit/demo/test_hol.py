"""Head-of-line cause from a capture, ratio expectations, and the receiver-buffer spec knobs."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from testbed.demo.hol import cause_series, retransmission_events, rto_times, window_stats
from testbed.demo.phases import Phase, check_phase, format_summary, row_path, summarize
from testbed.demo.plot import CausePanel, write_phase_plot
from testbed.endpoint_commands import endpoint_command
from testbed.errors import SpecError
from testbed.spec import parse_spec
from testbed.wire import ACK, SYN, Dss, Packet, TcpSegment, encode_packet
from testbed.wire.types import WindowScale
from tests.unit.demo.samples import PATHS, rows_for

SERVER = ("10.0.100.2", 5201)
CLIENTS = (("10.0.1.1", 40001), ("10.0.2.1", 40002))
CLIENT_ISN, SERVER_ISN = (100, 200), (5000, 9000)
IDSN = 1 << 40  # a 64-bit data sequence number space


def _raw(src: tuple[str, int], dst: tuple[str, int], seq: int, ack: int, flags: int, window: int,
         options: list, payload: int = 0) -> bytes:
    return encode_packet(Packet(src[0], dst[0], TcpSegment(src[1], dst[1], seq, ack, flags, window, options,
                                                           bytes(payload))))


def _write_pcap(path: Path, packets: list[tuple[float, bytes]]) -> None:
    """A raw-IP (linktype 101) pcap of (time, packet)."""
    with path.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101))
        for ts, packet in packets:
            seconds = int(ts)
            out.write(struct.pack("<IIII", seconds, round((ts - seconds) * 1e6), len(packet), len(packet)))
            out.write(packet)


def _download_with_a_hole(path: Path) -> None:
    """A download on two subflows: b delivers DSN 2000..3000 while a's 1000..2000 is missing
    (backlog 2000 bytes, window 50 << 4), then a's segment arrives and the data ACK jumps."""
    t0 = 1_700_000_000.0
    packets = []
    for sub, client in enumerate(CLIENTS):
        packets.append((t0, _raw(client, SERVER, CLIENT_ISN[sub], 0, SYN, 64000, [WindowScale(4)])))
        packets.append((t0 + 0.001, _raw(SERVER, client, SERVER_ISN[sub], CLIENT_ISN[sub] + 1, SYN | ACK,
                                         64000, [WindowScale(7)])))

    def data(ts: float, sub: int, subflow_seq: int, dsn: int, length: int) -> None:
        mapping = Dss(dsn=IDSN + dsn, subflow_seq=subflow_seq, data_len=length)
        packets.append((ts, _raw(SERVER, CLIENTS[sub], SERVER_ISN[sub] + subflow_seq, CLIENT_ISN[sub] + 1,
                                 ACK, 500, [mapping], length)))

    def ack(ts: float, sub: int, data_ack: int, window: int) -> None:
        packets.append((ts, _raw(CLIENTS[sub], SERVER, CLIENT_ISN[sub] + 1, SERVER_ISN[sub] + 1, ACK, window,
                                 [Dss(data_ack=IDSN + data_ack)])))

    data(t0 + 0.05, 0, 1, 0, 1000)
    ack(t0 + 0.06, 0, 1000, 100)
    data(t0 + 0.15, 1, 1, 2000, 1000)  # a hole at 1000..2000
    ack(t0 + 0.16, 1, 1000, 50)
    data(t0 + 0.25, 0, 1001, 1000, 1000)  # a's segment fills it
    ack(t0 + 0.26, 0, 3000, 200)
    data(t0 + 0.35, 0, 1001, 1000, 1000)  # a duplicate soon after: not timer-driven
    data(t0 + 0.65, 0, 1001, 1000, 1000)  # again after 0.3 s of silence on a: RTO-like
    _write_pcap(path, packets)


def test_cause_series_reads_backlog_and_scaled_window_from_the_receivers_packets(tmp_path: Path) -> None:
    capture = tmp_path / "capture.pcap"
    _download_with_a_hole(capture)
    rows = cause_series(capture, {"10.0.1.1", "10.0.2.1"}, 0.1, PATHS)
    assert [r["t_s"] for r in rows] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert rto_times(rows, "a") == [0.6] and rto_times(rows, "b") == []
    assert rows[0]["backlog_bytes"] == 0 and rows[0]["window_bytes"] == 100 << 4
    assert rows[1]["max_backlog_bytes"] == 2000 and rows[1]["min_window_bytes"] == 50 << 4
    assert rows[2]["max_backlog_bytes"] == 2000 and rows[2]["backlog_bytes"] == 0
    assert rows[2]["window_bytes"] == 200 << 4
    assert window_stats(rows, (0.1, 0.3)) == {
        "median_backlog_kib": round(2000 / 1024, 1), "max_backlog_kib": round(2000 / 1024, 1),
        "min_window_kib": round(800 / 1024, 1), "zero_window_s": 0.0}


def test_cause_series_from_the_senders_addresses_sees_no_receiver_window(tmp_path: Path) -> None:
    capture = tmp_path / "capture.pcap"
    _download_with_a_hole(capture)
    rows = cause_series(capture, {"10.0.100.2"}, 0.1)
    assert all(r["backlog_bytes"] == 0 for r in rows)  # no data ACK from "the receiver"


def test_retransmission_events_are_increments_of_the_cumulative_column() -> None:
    rows = rows_for(0.4, {"a": 10, "b": 10})
    counts = iter([0, 0, 3, 0, 3, 0, 7, 0])
    for row in rows:
        row["retrans_segments"] = next(counts)
    assert retransmission_events(rows, PATHS, "a") == [(0.1, 3), (0.3, 4)]
    assert retransmission_events(rows, PATHS, "b") == []


def test_download_rows_map_to_paths_by_their_remote_address() -> None:
    row = {"local": "10.0.100.2:5201", "remote": "10.0.2.1:40002"}
    assert row_path(row, PATHS) == "b"
    assert row_path({"local": "10.0.1.1:4000", "remote": "10.0.100.2:5201"}, PATHS) == "a"


def test_ratio_expectations_compare_with_the_first_phase() -> None:
    rows = rows_for(4, {"a": 45, "b": 45}) + rows_for(4, {"a": 3, "b": 15}, start=4.0)
    phases = [Phase("clean", "clean", 0, 4, 1),
              Phase("loss-a", "loss", 4, 4, 1, (), {"max_path_ratio": {"b": 0.6}}),
              Phase("again", "loss", 4, 4, 1, (), {"min_path_ratio": {"b": 0.8}})]
    clean, blocked, kept = summarize(phases, rows, PATHS, 0.1)
    assert clean.passed and blocked.passed
    assert blocked.ratios["b"] == pytest.approx(15 / 45, rel=1e-3)
    assert not kept.passed and "kept 0.33 of its first-phase rate < 0.8" in kept.failures[0]
    assert "PASS (b 0.33x)" in format_summary([clean, blocked, kept])
    assert check_phase(phases[1], {"b": 40.0}, reference={"b": 45.0}).failures


def test_cause_panel_plot_is_a_png(tmp_path: Path) -> None:
    rows = rows_for(2, {"a": 45, "b": 45}) + rows_for(2, {"a": 3, "b": 15}, start=2.0)
    phases = [Phase("clean", "clean", 0, 2, 0.5), Phase("loss-a", "loss", 2, 2, 0.5)]
    summaries = summarize(phases, rows, PATHS, 0.1)
    cause = [{"t_s": i / 10, "backlog_bytes": 1000 * i, "max_backlog_bytes": 1000 * i,
              "window_bytes": 50000, "min_window_bytes": "" if i == 0 else 40000, "zero_windows": 0}
             for i in range(40)]
    png = tmp_path / "hol.png"
    write_phase_plot(png, rows, PATHS, 0.1, summaries, "hol", cause=CausePanel(cause, [(2.1, 4)], "a"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


KERNELS = [{"role": "server", "stack": "kernel"}, {"role": "client", "stack": "kernel"}]


def _spec(traffic: dict, endpoints: list | None = None, mptcp: dict | None = None) -> dict:
    return {"topology": {"name": "two_path"}, "endpoints": endpoints or KERNELS,
            "traffic": {"seconds": 5, **traffic}, "mptcp": mptcp or {}}


def test_receiver_buffer_knob_is_checked() -> None:
    spec = parse_spec(_spec({"receiver_buffer_max_bytes": 1 << 20, "direction": "download"},
                            mptcp={"stale_loss_cnt": 1}))
    assert spec.traffic.receiver_buffer_max_bytes == 1 << 20 and spec.mptcp.stale_loss_cnt == 1
    with pytest.raises(SpecError, match="receiver_buffer_max_bytes must be 16384"):
        parse_spec(_spec({"receiver_buffer_max_bytes": 1000}))
    with pytest.raises(SpecError, match=r"stale_loss_cnt must be 1\.\.1000"):
        parse_spec(_spec({}, mptcp={"stale_loss_cnt": 0}))
    python_server = [{"role": "server", "stack": "python", "stack_config": {"recv_buffer": 65536}},
                     {"role": "client", "stack": "kernel"}]
    with pytest.raises(SpecError, match="both set its buffer"):
        parse_spec(_spec({"receiver_buffer_max_bytes": 1 << 20}, python_server))
    command_server = [{"role": "server", "stack": "command", "command": "cat"}, KERNELS[1]]
    with pytest.raises(SpecError, match="sizes a kernel or python endpoint"):
        parse_spec(_spec({"receiver_buffer_max_bytes": 1 << 20}, command_server))


def test_a_python_receiver_gets_the_bound_as_its_receive_buffer(tmp_path: Path) -> None:
    endpoints = [{"role": "server", "stack": "python"}, {"role": "client", "stack": "python"}]
    spec = parse_spec(_spec({"receiver_buffer_max_bytes": 262144, "sender_buffer_bytes": 65536},
                            endpoints))  # upload: the server receives
    server = endpoint_command("server", "python", spec, "10.0.100.2:5201", None, tmp_path / "s.csv", [])
    client = endpoint_command("client", "python", spec, "10.0.100.2:5201", None, tmp_path / "c.csv", [])
    assert '{"recv_buffer": 262144}' in server
    assert '{"send_buffer": 65536}' in client
    with pytest.raises(SpecError, match=r"sender_buffer_bytes and the server's stack_config\.send_buffer"):
        parse_spec(_spec({"sender_buffer_bytes": 65536, "direction": "download"},
                         [{"role": "server", "stack": "python", "stack_config": {"send_buffer": 1 << 20}},
                          {"role": "client", "stack": "python"}]))


SCENARIOS = Path(__file__).resolve().parents[3] / "experiments" / "scenarios"


@pytest.mark.parametrize("name", ["hol_blocking", "hol_blocking_large_buffer", "hol_blocking_stale",
                                  "hol_blocking_python"])
def test_shipped_hol_scenarios_load_and_check_clean_path_b_against_its_clean_rate(name: str) -> None:
    from testbed.demo.phases import load_demo

    demo = load_demo(SCENARIOS / f"{name}.toml")
    assert demo.spec.capture and demo.spec.traffic.direction == "download"  # the receiver's view
    assert [p.name for p in demo.phases] == ["clean", "loss-a"]
    assert demo.phases[1].changes[0].link == "a" and demo.phases[1].changes[0].set["loss_pct"] > 0
    ratio = demo.phases[1].expect
    assert "max_path_ratio" in ratio or "min_path_ratio" in ratio
    assert demo.spec.description.count(". ") >= 1
