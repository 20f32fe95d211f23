"""`testbed satellite`: handshake and join timings from a written capture, and the expectations."""

from __future__ import annotations

from pathlib import Path

from testbed.satellite import BASELINE, Case, checks_of, format_table
from testbed.satellite_packets import subflow_times
from testbed.wire import (
    ACK,
    SYN,
    MpCapable,
    MpJoinAck,
    MpJoinSyn,
    MpJoinSynAck,
    Packet,
    TcpSegment,
    encode_packet,
)
from testbed.wire.pcap import write_pcap

CLIENT, JOIN, SERVER, PORT = "10.0.1.1", "10.0.2.1", "10.0.100.2", 5201
KEYS = (0x1122334455667788, 0x99AABBCCDDEEFF00)


def segment(src: str, sport: int, dst: str, dport: int, seq: int, ack: int, flags: int,
            options: list, payload: bytes = b"") -> bytes:
    return encode_packet(Packet(src, dst, TcpSegment(sport, dport, seq, ack, flags, 5000, options, payload)))


def satellite_handshake(path: Path, *, rtt: float, syn_every: float, mptcp_syns: int) -> None:
    """An initial subflow over a path of `rtt`: SYNs every `syn_every` s (the first `mptcp_syns`
    with MP_CAPABLE), the SYN/ACK to the first one, the third ACK with MP_CAPABLE only if the
    client still offered it, then 3000 bytes from the server and a join over a 40 ms path."""
    up, down = (CLIENT, 40000, SERVER, PORT), (SERVER, PORT, CLIENT, 40000)
    packets = []
    t = 0.0
    while t < rtt:
        offered = len(packets) < mptcp_syns
        packets.append((t, segment(*up, 1000, 0, SYN, [MpCapable()] if offered else [])))
        t += syn_every
    kept = mptcp_syns >= len(packets)
    packets.append((rtt, segment(*down, 7000, 1001, SYN | ACK, [MpCapable(sender_key=KEYS[1])])))
    packets.append((rtt + 1e-4, segment(*up, 1001, 7001, ACK, [MpCapable(sender_key=KEYS[0],
                                                                           receiver_key=KEYS[1])]
                                        if kept else [])))
    packets.append((rtt * 1.5, segment(*down, 7001, 1001, ACK, [], bytes(1000))))
    packets.append((rtt * 1.5 + 0.01, segment(*down, 7001, 1001, ACK, [], bytes(1000))))  # again
    packets.append((rtt * 1.5 + 0.02, segment(*down, 8001, 1001, ACK, [], bytes(2000))))
    join_up, join_down = (JOIN, 40001, SERVER, PORT), (SERVER, PORT, JOIN, 40001)
    start = rtt * 2
    packets += [(start, segment(*join_up, 5000, 0, SYN, [MpJoinSyn(False, 1, 0xABCD, 1)])),
                (start + 0.04, segment(*join_down, 9000, 5001, SYN | ACK, [MpJoinSynAck(False, 0, 2, 3)])),
                (start + 0.0401, segment(*join_up, 5001, 9001, ACK, [MpJoinAck(bytes(20))])),
                (start + 0.08, segment(*join_down, 9001, 5001, ACK, [])),
                (start + 0.1, segment(*join_down, 9001, 5001, ACK, [], bytes(1400)))]
    write_pcap(path, sorted(packets, key=lambda p: p[0]))


def test_a_handshake_slower_than_the_rto_shows_retransmitted_syns_and_a_join(tmp_path: Path) -> None:
    capture = tmp_path / "c.pcap"
    satellite_handshake(capture, rtt=1.2, syn_every=1.0, mptcp_syns=3)
    initial, join = subflow_times(capture, PORT, bin_s=0.5)
    assert (initial.kind, initial.syn_retransmissions, initial.syns_with_mptcp) == ("mp_capable", 1, 2)
    assert initial.handshake_s is not None and abs(initial.handshake_s - 1.2001) < 1e-3
    assert initial.third_ack_mptcp and not initial.fell_back
    assert initial.payload_bytes == 3000  # the resent 1000 bytes are not new
    assert initial.bins == {3: 3000}  # 1.8 s in 0.5 s bins
    assert join.kind == "join" and join.third_ack_mptcp
    assert abs(join.syn_times[0] - 2.4) < 1e-6 and abs(join.fourth_ack_s - 2.48) < 1e-6
    assert join.payload_bytes == 1400


def test_a_syn_ack_after_the_last_mp_capable_syn_is_a_fallback(tmp_path: Path) -> None:
    capture = tmp_path / "c.pcap"
    satellite_handshake(capture, rtt=6.0, syn_every=1.0, mptcp_syns=3)
    initial = subflow_times(capture, PORT)[0]
    assert initial.syn_retransmissions == 5 and initial.syns_with_mptcp == 3
    assert not initial.third_ack_mptcp and initial.fell_back


def row(**values: object) -> dict:
    base = {"case": "c", "stack": "kernel", "delay": "600ms", "first": "satellite", "size_mb": 1,
            "outcome": "mptcp", "integrity": "ok", "bytes": 1_000_000, "complete": True, "mp_capable": True,
            "fell_back": False, "handshake_s": 1.2, "syn_retransmissions": 1, "synacks": 2,
            "join_start_s": 2.4, "join_syn_retransmissions": 0, "join_s": 0.04, "join_done_s": 0.08,
            "completion_s": 5.0, "goodput_mbps": 1.6, "satellite_share": 0.05, "subflows": []}
    return {**base, **values}


def test_expected_fallback_follows_each_stacks_syn_schedule() -> None:
    assert not Case("kernel", "600ms", "satellite", 1).expect_fallback  # 1.2 s < 3 s
    assert Case("kernel", "3s", "satellite", 1).expect_fallback  # 6 s > 3 s (SYNs every second)
    assert not Case("python", "3s", "satellite", 1).expect_fallback  # 6 s < 7 s (1 s, then 2 s, 4 s)
    assert Case("python", "5s", "satellite", 1).expect_fallback
    assert not Case("kernel", "5s", "terrestrial", 1).expect_fallback  # the handshake takes 40 ms
    assert not Case("kernel", "600ms", BASELINE, 1).expect_fallback


def test_checks_fail_on_what_went_wrong() -> None:
    case = Case("kernel", "600ms", "satellite", 1)
    assert all(ok for _what, _measured, ok in checks_of(case, row()))
    failed = {what for what, _m, ok in checks_of(case, row(join_done_s=None)) if not ok}
    assert failed == {"join completes"}
    failed = {what for what, _m, ok in checks_of(case, row(complete=False, integrity="corrupt")) if not ok}
    assert failed == {"no corruption", "transfer completes, integrity ok"}
    # a join started too late to finish before the end is not held against the case
    late = checks_of(case, row(join_start_s=4.5, join_done_s=None))
    assert "join completes" not in {what for what, _m, _ok in late}
    fallback = Case("kernel", "5s", "satellite", 1)
    assert all(ok for _w, _m, ok in checks_of(fallback, row(mp_capable=False, fell_back=True, complete=False,
                                                            integrity="truncated")))
    assert not all(ok for _w, _m, ok in checks_of(fallback, row()))  # MPTCP kept: not what Linux does


def test_table_has_one_line_per_case_and_per_check() -> None:
    case = Case("kernel", "600ms", "satellite", 1)
    rows = [row(case=case.name)]
    checks = {f"kernel/{case.name}": checks_of(case, rows[0])}
    table = format_table(rows, checks)
    assert ("| kernel | 600ms | satellite | 1 | yes | 1.20 s (1) | 2.40 s | 0.04 s (0) | 5.00 s | 1.6 | 5% |"
            in table)
    assert table.count("PASS") == len(checks[f"kernel/{case.name}"]) and "FAIL" not in table


def test_only_long_delay_links_get_pinned_neighbours() -> None:
    from testbed.net.build import pinned_neighbour_links
    from topologies.two_path import build

    topo = build(path_a={"delay_ms": 600}, path_b={"delay_ms": 20})
    topo.finalize()
    assert [link.name for link in pinned_neighbour_links(topo)] == ["a"]
    assert pinned_neighbour_links(build(delay_ms=249)) == []
