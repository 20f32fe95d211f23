"""The analysis of hand-made captures: every number is known from how the capture was built."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.analyze.capture import CaptureError
from testbed.analyze.command import analyse_capture
from testbed.analyze.output import write_outputs
from testbed.wire import MpFail, MpFastclose, MpPrio, MpTcpRst, key_to_token
from tests.unit.analyze.builder import CLIENT_KEY, SERVER_KEY, Conversation, two_path_transfer


def analyse(conversation: Conversation, tmp_path: Path):
    analysis, _reader, notes = analyse_capture(conversation.write(tmp_path / "c.pcap"), progress=False)
    return analysis, notes


def test_clean_two_path_transfer_is_reconstructed(tmp_path: Path) -> None:
    analysis, notes = analyse(two_path_transfer(segments=20, size=1000), tmp_path)
    assert notes == []
    [connection] = analysis.connections
    assert connection.keys == [CLIENT_KEY, SERVER_KEY]
    assert connection.tokens == [key_to_token(CLIENT_KEY), key_to_token(SERVER_KEY)]
    assert [s.role for s in connection.subflows] == ["initial", "join"]
    assert [s.dirs[0].bytes_acked for s in connection.subflows] == [10_000, 10_000]
    assert [s.dirs[0].bytes_retrans for s in connection.subflows] == [0, 0]
    assert connection.subflows[1].address_ids == [2, 0]
    assert connection.subflows[1].join["synack_hmac_ok"] and connection.subflows[1].join["ack_hmac_ok"]
    data = connection.data[0].summary()
    assert data["bytes"] == 20_000 and data["data_acked"] == 20_000
    assert data["reinjected_bytes"] == 0 and data["data_fin_dsn"] == 20_001
    assert [s.end_reason(analysis.last_ts, 60) for s in connection.subflows] == ["FIN", "FIN"]
    assert connection.violations == {}
    signals = [e["signal"] for e in analysis.timeline]
    assert signals[:6] == ["MP_CAPABLE"] * 3 + ["MP_JOIN"] * 3 and "DATA_FIN" in signals


def test_outputs_are_versioned_and_plots_render(tmp_path: Path) -> None:
    from testbed.analyze.plots import render_all

    path = two_path_transfer().write(tmp_path / "c.pcap")
    analysis, reader, notes = analyse_capture(path, progress=False)
    doc = write_outputs(analysis, reader, tmp_path / "out", notes)
    assert doc["schema"] == 1 and doc["kind"] == "capture-analysis"
    written = render_all(tmp_path / "out")
    assert all(p.stat().st_size > 1000 for p in written)
    assert "data_sequence.png" in (tmp_path / "out" / "analysis.html").read_text()


def test_reinjection_on_another_subflow_is_counted_once(tmp_path: Path) -> None:
    conversation = Conversation()
    first = conversation.handshake()
    second = conversation.join(("10.0.2.1", 40002))
    conversation.data(first, 1000)  # DSN 1..1000
    conversation.data(first, 1000)  # DSN 1001..2000, then reinjected on the second subflow
    conversation.data(second, 1000, dsn=1001)
    conversation.ack(second)
    conversation.ack(first)
    analysis, _ = analyse(conversation, tmp_path)
    data = analysis.connections[0].data[0]
    assert data.reinjected_bytes == 1000 and data.bytes_mapped == 2000
    assert data.reinjections[0]["subflow"] == 1


def test_tcp_retransmission_is_not_a_reinjection(tmp_path: Path) -> None:
    conversation = Conversation()
    first = conversation.handshake()
    conversation.data(first, 500)
    first.sent -= 500  # the same segment again
    conversation.data(first, 500, dsn=1)
    conversation.ack(first)
    analysis, _ = analyse(conversation, tmp_path)
    subflow = analysis.subflows[0]
    assert subflow.dirs[0].bytes_retrans == 500 and subflow.dirs[0].bytes_sent == 1000
    assert analysis.connections[0].data[0].reinjected_bytes == 0


def test_out_of_order_delay_is_measured_per_byte(tmp_path: Path) -> None:
    conversation = Conversation()
    first = conversation.handshake()
    second = conversation.join(("10.0.2.1", 40002))
    conversation.data(second, 1000, dsn=1001, step=0.010)  # arrives first, waits 20 ms
    conversation.data(first, 1000, dsn=1, step=0.020)
    analysis, _ = analyse(conversation, tmp_path)
    data = analysis.connections[0].data[0]
    summary = data.summary()
    assert summary["ofo_bytes_delayed"] == 1000
    assert summary["ofo_max_delay_ms"] == pytest.approx(20.0, abs=0.01)
    cdf = data.ofo_cdf()
    assert cdf[0][1] == pytest.approx(0.5) and cdf[-1][1] == 1.0


def test_join_with_a_wrong_hmac_is_a_violation(tmp_path: Path) -> None:
    conversation = Conversation()
    conversation.handshake()
    conversation.join(("10.0.2.1", 40002), wrong_hmac=True)
    analysis, _ = analyse(conversation, tmp_path)
    assert analysis.connections[0].violations == {"join HMAC wrong": 1}


def test_mapping_that_does_not_cover_its_segment(tmp_path: Path) -> None:
    conversation = Conversation()
    first = conversation.handshake()
    conversation.data(first, 1000, data_len=500)
    analysis, _ = analyse(conversation, tmp_path)
    violations = analysis.connections[0].violations
    assert violations["mapping does not cover its segment"] == 1
    assert analysis.subflows[0].unmapped_bytes == 500  # the bytes past the mapping


def test_dss_checksum_verified_and_wrong_one_flagged(tmp_path: Path) -> None:
    conversation = Conversation(checksum=True)
    first = conversation.handshake()
    conversation.data(first, 800)
    conversation.data(first, 800, checksum=0x1234)
    analysis, _ = analyse(conversation, tmp_path)
    connection = analysis.connections[0]
    assert connection.checksums and connection.checksum_checked == 2
    assert connection.violations == {"DSS checksum wrong": 1}


def test_snap_length_makes_checksums_not_verifiable(tmp_path: Path) -> None:
    conversation = Conversation(checksum=True)
    first = conversation.handshake()
    conversation.data(first, 800)
    conversation.packets = [(t, raw[:120]) if len(raw) > 120 else (t, raw)
                            for t, raw in conversation.packets]
    analysis, notes = analyse(conversation, tmp_path)
    assert analysis.connections[0].checksum_not_verifiable == 1
    assert any("not verifiable" in note for note in notes)
    assert analysis.subflows[0].dirs[0].bytes_sent == 800  # lengths come from the IP header


def test_signals_fallback_and_endings(tmp_path: Path) -> None:
    conversation = Conversation()
    first = conversation.handshake()
    second = conversation.join(("10.0.2.1", 40002))
    conversation.data(first, 100)
    conversation.ack(first, extra=[MpPrio(True)])
    conversation.data(first, 100, data_len=0)  # infinite mapping
    conversation.ack(first, extra=[MpFail(conversation.client_idsn + 101)])
    conversation.reset(second, [MpTcpRst(6)])
    conversation.reset(first, [MpFastclose(CLIENT_KEY)])
    analysis, _ = analyse(conversation, tmp_path)
    connection = analysis.connections[0]
    assert connection.fallback == "infinite mapping"
    assert connection.mp_fail[0]["relative_dsn"] == 101
    assert connection.subflows[0].backup == [False, True]
    ended = [s.end_reason(analysis.last_ts, 60) for s in connection.subflows]
    assert ended == ["MP_FASTCLOSE", "RST (middlebox interference)"]
    signals = {e["signal"] for e in analysis.timeline}
    assert {"MP_PRIO", "MP_FAIL", "MP_TCPRST", "MP_FASTCLOSE", "fallback"} <= signals


def test_fallback_when_the_server_ignores_mptcp(tmp_path: Path) -> None:
    conversation = Conversation()
    first = conversation.handshake(server_mptcp=False)
    conversation.data(first, 300, mapping=False)
    conversation.ack(first)
    analysis, _ = analyse(conversation, tmp_path)
    assert analysis.connections[0].fallback == "no MP_CAPABLE on the SYN/ACK"
    assert analysis.connections[0].violations == {}


def test_mptcp_v0_is_said_and_analysed_at_the_tcp_level(tmp_path: Path) -> None:
    conversation = Conversation()
    first = conversation.handshake(version=0)
    conversation.data(first, 300, mapping=False)
    conversation.ack(first)
    analysis, notes = analyse(conversation, tmp_path)
    assert analysis.connections[0].version == 0
    assert any("MPTCP v0" in note for note in notes)
    assert analysis.subflows[0].dirs[0].bytes_acked == 300


def test_capture_started_mid_connection(tmp_path: Path) -> None:
    conversation = two_path_transfer(segments=10, size=100)
    conversation.packets = conversation.packets[6:]  # both handshakes missed
    analysis, notes = analyse(conversation, tmp_path)
    assert analysis.subflows[0].handshake is False
    assert any("handshake missed" in note for note in notes)
    assert analysis.subflows[0].dirs[0].bytes_acked == 500


def test_plain_tcp_is_nothing_to_analyse(tmp_path: Path) -> None:
    conversation = Conversation()
    first = conversation.handshake(server_mptcp=False)
    conversation.packets[0] = conversation.packets[1]  # no MP_CAPABLE anywhere
    conversation.data(first, 10, mapping=False)
    with pytest.raises(CaptureError, match="no MPTCP option"):
        analyse(conversation, tmp_path)


def test_data_missing_from_the_capture_is_counted_from_the_acks(tmp_path: Path) -> None:
    conversation = two_path_transfer(segments=10, size=100)
    # drop the client's third data segment on the first subflow: its ACK still covers it
    data_packets = [i for i, (_, raw) in enumerate(conversation.packets)
                    if raw[12:16] == bytes([10, 0, 1, 1]) and len(raw) > 100]
    del conversation.packets[data_packets[2]]
    analysis, notes = analyse(conversation, tmp_path)
    first = analysis.subflows[0].dirs[0]
    assert first.bytes_acked == 500 and first.bytes_not_captured == 100
    assert any("misses 100 bytes" in note for note in notes)


def test_real_kernel_capture_with_a_rejected_join() -> None:
    """A pcapng (Linux cooked v2) from a kernel run whose join a middlebox made fail."""
    capture = Path(__file__).resolve().parents[1] / "report" / "fixtures" / "run_rejected" / "capture.pcap"
    analysis, reader, _notes = analyse_capture(capture, progress=False)
    assert reader.form == "pcapng" and reader.linktypes == {"Linux cooked v2"}
    [connection] = analysis.connections
    initial, join = connection.subflows
    assert (initial.role, join.role) == ("initial", "join")
    assert join.end_reason(analysis.last_ts, 60) == "RST (MPTCP error)"
    assert initial.dirs[0].bytes_acked == 7144 == connection.data[0].summary()["data_acked"]
    assert any(e["signal"] == "MP_TCPRST" for e in analysis.timeline)


def test_sender_that_stops_mapping_has_fallen_back(tmp_path: Path) -> None:
    """RFC 8684 3.7: data without DSS on the only subflow is a fallback, not a violation; the
    data level then follows the subflow, so the total still counts every byte."""
    conversation = Conversation()
    first = conversation.handshake()
    conversation.data(first, 100)
    conversation.data(first, 200, mapping=False)
    conversation.emit(("10.0.100.2", 5201), first.client, first.server_isn + 1,
                      first.isn + 1 + first.sent, 0x10, [])  # a plain TCP ACK
    analysis, _ = analyse(conversation, tmp_path)
    connection = analysis.connections[0]
    assert connection.fallback == "data without a mapping" and connection.violations == {}
    assert connection.data[0].summary()["data_acked"] == 300


def test_an_rst_acknowledges_nothing(tmp_path: Path) -> None:
    """The ACK field of an RST is never processed (the reset comes first), so the bytes it
    covers are not acknowledged to the sender: tcpi_bytes_acked stays where the last ACK left
    it (a kernel server resetting a join sends RST|ACK covering data it never ACKed before)."""
    conversation = Conversation()
    first = conversation.handshake()
    conversation.data(first, 100)
    conversation.ack(first)
    conversation.data(first, 200)
    conversation.reset(first, [MpTcpRst(6)])  # RST|ACK whose ACK covers the 200 bytes
    analysis, _ = analyse(conversation, tmp_path)
    direction = analysis.subflows[0].dirs[0]
    assert direction.bytes_acked == 100 and direction.bytes_sent == 300


def test_acks_after_the_sender_reset_are_not_taken(tmp_path: Path) -> None:
    """ACKs already on their way when the data sender reset the subflow find it closed: the
    sender never counts them."""
    conversation = Conversation()
    first = conversation.handshake()
    conversation.data(first, 100)
    conversation.ack(first)
    conversation.data(first, 200)
    conversation.emit(first.client, ("10.0.100.2", 5201), first.isn + 1 + first.sent,
                      first.server_isn + 1, 0x14, [MpTcpRst(6)])  # the client's RST|ACK
    conversation.ack(first)  # acknowledges the 200 bytes, after the client's reset
    analysis, _ = analyse(conversation, tmp_path)
    assert analysis.subflows[0].dirs[0].bytes_acked == 100


def test_until_s_analyses_the_first_seconds_only(tmp_path: Path) -> None:
    conversation = two_path_transfer(segments=20, size=1000)  # 1 ms between packets
    path = conversation.write(tmp_path / "c.pcap")
    whole, _reader, _notes = analyse_capture(path, progress=False)
    start = conversation.packets[0][0]
    cut_at = conversation.packets[25][0] - start  # the 26th packet is the last one kept
    cut, reader, notes = analyse_capture(path, progress=False, until_s=cut_at + 0.0001)
    assert reader.packets == 26 and any("--until-s" in note for note in notes)
    assert cut.last_ts == pytest.approx(conversation.packets[25][0], abs=1e-6)
    acked = [s.dirs[0].bytes_acked for s in cut.subflows]
    assert sum(acked) < sum(s.dirs[0].bytes_acked for s in whole.subflows) == 20_000
    assert sum(acked) > 0
