"""coalesce: in-order data merged up to max_bytes, flushed on disorder, control packets, time."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.wire.tcp_options import options_length
from testbed.wire.types import ACK, FIN, PSH, RST, Dss, Timestamps
from tests.unit.middleboxes.packets import DOWN, UP, build, packet


def dss(seq: int, length: int) -> Dss:
    return Dss(data_ack=1, dsn=10_000 + seq, subflow_seq=seq, data_len=length)


def seg(seq: int, length: int, ack: int = 1, window: int = 100, flags: int = ACK):
    return packet(UP, seq=seq, ack=ack, window=window, flags=flags, payload=bytes([seq % 251]) * length,
                  options=[Timestamps(seq, 0), dss(seq, length)])


def test_merges_contiguous_segments_until_the_deadline_keeping_first_options() -> None:
    box = build("coalesce", max_bytes=2896, mtu_bytes=0, hold_ms=1.0)
    a, b, c = seg(1000, 500, ack=7), seg(1500, 500, ack=8), seg(2000, 500, ack=9, window=300,
                                                               flags=ACK | PSH)
    expected_payload = a.tcp.payload + b.tcp.payload + c.tcp.payload
    first_options = list(a.tcp.options)
    assert box.process(a, UP, 10.0) == []
    assert box.process(b, UP, 10.0002) == []
    assert box.process(c, UP, 10.0004) == []
    assert box.next_deadline() == 10.001
    assert box.release(10.0009) == []
    [(merged, direction)] = box.release(10.001)
    assert direction is UP
    tcp = merged.tcp
    assert (tcp.seq, tcp.ack, tcp.window, tcp.flags) == (1000, 9, 300, ACK | PSH)
    assert tcp.payload == expected_payload
    assert tcp.options == first_options
    assert box.next_deadline() is None
    assert box.counters.as_dict() == {"seen": 3, "changed": 3, "dropped": 0, "injected": 0}


def test_default_merges_up_to_a_1500_byte_ip_packet_with_the_kept_options() -> None:
    box = build("coalesce")
    # Timestamps (10) + this DSS (26) = 36 option bytes: 1500 - 40 - 36 = 1424 payload bytes.
    assert box.capacity(seg(1, 1).tcp.options) == 1424
    assert box.process(seg(1, 1000), UP, 0.0) == []
    [first] = box.process(seg(1001, 500), UP, 0.0)  # 1500 > 1424: flush, hold the new one
    assert len(first.tcp.payload) == 1000
    [merged] = box.process(seg(1501, 924), UP, 0.0)  # exactly full: leaves at once
    assert (merged.tcp.seq, len(merged.tcp.payload)) == (1001, 1424)
    assert 40 + options_length(merged.tcp.options) + len(merged.tcp.payload) == 1500
    assert box.next_deadline() is None


def test_keep_last_checks_the_mtu_with_the_last_segments_options() -> None:
    box = build("coalesce", keep_options="last")
    box.process(packet(UP, seq=1, payload=b"a" * 1000), UP, 0.0)  # no options: room 1460
    bigger = seg(1001, 440)  # its 36 option bytes would leave room for 1424 only
    assert len(box.process(bigger, UP, 0.0)) == 1
    assert box.release(1.0) == [(bigger, UP)]


def test_keep_last_options() -> None:
    box = build("coalesce", keep_options="last")
    box.process(seg(1, 100), UP, 0.0)
    last = seg(101, 100)
    box.process(last, UP, 0.0)
    [(merged, _)] = box.release(1.0)
    assert merged.tcp.options == [Timestamps(101, 0), dss(101, 100)]


def test_reaching_max_bytes_flushes_at_once_and_larger_segments_pass() -> None:
    box = build("coalesce", max_bytes=2896, mtu_bytes=0)
    assert box.process(seg(1, 1448), UP, 0.0) == []
    [merged] = box.process(seg(1449, 1448), UP, 0.0)
    assert (merged.tcp.seq, len(merged.tcp.payload)) == (1, 2896)
    big = seg(2897, 2896)
    assert box.process(big, UP, 0.0) == [big]
    assert box.next_deadline() is None


def test_overflowing_segment_flushes_the_run_and_starts_a_new_one() -> None:
    box = build("coalesce", max_bytes=2500, mtu_bytes=0)
    first = seg(1, 2000)
    box.process(first, UP, 0.0)
    second = seg(2001, 1000)
    assert box.process(second, UP, 0.0) == [first]
    assert box.release(1.0) == [(second, UP)]
    assert box.counters.changed == 0  # nothing was merged


def test_out_of_order_and_retransmission_flush() -> None:
    box = build("coalesce")
    first = seg(1000, 100)
    box.process(first, UP, 0.0)
    gap = seg(1300, 100)
    assert box.process(gap, UP, 0.0) == [first]
    retransmission = seg(1000, 100)
    assert box.process(retransmission, UP, 0.0) == [gap]
    assert box.release(5.0) == [(retransmission, UP)]


def test_control_packets_of_the_flow_flush_in_order_others_do_not() -> None:
    for flags in (ACK | FIN, RST, ACK):
        box = build("coalesce")
        held = seg(1, 100)
        box.process(held, UP, 0.0)
        reverse_ack = packet(DOWN, seq=5, ack=101)
        assert box.process(reverse_ack, DOWN, 0.0) == [reverse_ack]
        other_flow = seg(1, 100)
        other_flow.tcp.src_port = 40001
        assert box.process(other_flow, UP, 0.0) == []
        control = packet(UP, seq=101, ack=1, flags=flags)
        assert box.process(control, UP, 0.0) == [held, control]
        assert box.release(1.0) == [(other_flow, UP)]


def test_fin_with_data_is_not_merged() -> None:
    box = build("coalesce")
    held = seg(1, 100)
    box.process(held, UP, 0.0)
    fin = seg(101, 50, flags=ACK | FIN)
    assert box.process(fin, UP, 0.0) == [held, fin]
    assert len(held.tcp.payload) == 100


def test_contiguity_across_sequence_wrap() -> None:
    box = build("coalesce")
    box.process(seg(0xFFFFFF00, 0x100), UP, 0.0)
    box.process(seg(0, 0x80), UP, 0.0)
    [(merged, _)] = box.release(1.0)
    assert (merged.tcp.seq, len(merged.tcp.payload)) == (0xFFFFFF00, 0x180)


def test_release_orders_runs_by_deadline_then_arrival() -> None:
    box = build("coalesce", hold_ms=10, direction="both")
    up = seg(1, 10)
    down = packet(DOWN, seq=1, payload=b"d" * 10)
    later = seg(1, 10)
    later.tcp.src_port = 40001
    box.process(down, DOWN, 0.0)
    box.process(up, UP, 0.0)
    box.process(later, UP, 0.005)
    assert box.release(0.010) == [(down, DOWN), (up, UP)]
    assert box.next_deadline() == 0.015
    assert box.flush(0.011) == [(later, UP)]


def test_direction_filter_passes_other_direction_untouched() -> None:
    box = build("coalesce", direction="downstream")
    up = seg(1, 10)
    assert box.process(up, UP, 0.0) == [up]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=1500), min_size=1, max_size=30),
       st.integers(min_value=2, max_value=4000), st.integers(min_value=0, max_value=(1 << 32) - 1))
def test_bytes_and_sequence_numbers_are_conserved(sizes: list[int], max_bytes: int,
                                                  isn: int) -> None:
    box = build("coalesce", max_bytes=max_bytes, mtu_bytes=0, hold_ms=1000)
    sent = b""
    out = []
    seq = isn
    for index, size in enumerate(sizes):
        payload = bytes([index % 256]) * size
        sent += payload
        out += box.process(packet(UP, seq=seq, payload=payload), UP, 0.0)
        seq = (seq + size) % (1 << 32)
    out += [p for p, _ in box.release(1000.0)]
    assert b"".join(p.tcp.payload for p in out) == sent
    expected_seq = isn
    for p in out:
        assert p.tcp.seq == expected_seq
        assert len(p.tcp.payload) <= max(max_bytes, 1500)
        expected_seq = (expected_seq + len(p.tcp.payload)) % (1 << 32)
