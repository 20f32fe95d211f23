"""strip_options: exactly the named options go, on exactly the named packets and directions."""

from __future__ import annotations

import copy

from testbed.wire import encode_packet
from testbed.wire.tcp_options import options_length
from testbed.wire.types import (
    ACK,
    PSH,
    SYN,
    AddAddr,
    Dss,
    MaximumSegmentSize,
    MpCapable,
    MpJoinAck,
    MpJoinSyn,
    NoOperation,
    SackPermitted,
    Timestamps,
    UnknownOption,
    WindowScale,
)
from tests.unit.middleboxes.packets import DOWN, SYN_OPTIONS, UP, build, packet

TS = Timestamps(5, 6)


def run(box, p, direction=UP):
    before = copy.deepcopy(p)
    out = box.process(p, direction, 0.0)
    assert len(out) == 1 and out[0] is p
    return before, out[0]


def test_default_strips_every_mptcp_option_by_removing_it() -> None:
    box = build("strip_options")
    _, out = run(box, packet(flags=SYN, options=[*SYN_OPTIONS, MpCapable()]))
    assert out.tcp.options == SYN_OPTIONS
    _, out = run(box, packet(options=[TS, Dss(data_ack=7), AddAddr(1, "10.0.2.1", hmac=5)]))
    assert out.tcp.options == [TS]
    assert box.counters.as_dict() == {"seen": 2, "changed": 2, "dropped": 0, "injected": 0}


def test_untouched_packets_are_returned_unchanged_and_not_counted() -> None:
    box = build("strip_options", what=["mp_join"])
    before, out = run(box, packet(options=[TS, Dss(data_ack=7)], payload=b"abc"))
    assert out == before
    assert box.counters.changed == 0 and box.counters.seen == 1


def test_mp_join_only_on_handshake_packets() -> None:
    box = build("strip_options", what=["mp_join"], packets=["syn", "synack"])
    join_syn = MpJoinSyn(False, 2, 0xAABBCCDD, 0x11223344)
    _, out = run(box, packet(flags=SYN, options=[MaximumSegmentSize(1460), join_syn]))
    assert out.tcp.options == [MaximumSegmentSize(1460)]
    third_ack = packet(options=[MpJoinAck(bytes(20))])
    before, out = run(box, third_ack)
    assert out == before  # the third ACK is a pure_ack, not selected


def test_first_data_only_includes_retransmission_of_first_segment() -> None:
    box = build("strip_options", what=["mp_capable", "dss"], packets=["first_data"])
    capable = MpCapable(sender_key=1, receiver_key=2, data_len=100)
    handshake_ack = packet(seq=101, options=[TS, MpCapable(sender_key=1, receiver_key=2)])
    before, out = run(box, handshake_ack)
    assert out == before
    _, out = run(box, packet(seq=101, payload=b"a" * 100, options=[TS, capable]))
    assert out.tcp.options == [TS]
    second = packet(seq=201, payload=b"b" * 100, options=[TS, Dss(dsn=5, subflow_seq=101,
                                                                  data_len=100)])
    before, out = run(box, second)
    assert out == before
    _, out = run(box, packet(seq=101, payload=b"a" * 100, options=[TS, capable]))
    assert out.tcp.options == [TS]


def test_nop_variant_keeps_header_length_byte_for_byte() -> None:
    box = build("strip_options", what=["mp_capable"], how="nop")
    synack = packet(DOWN, flags=SYN | ACK, options=[MaximumSegmentSize(1460), SackPermitted(),
                                                    TS, NoOperation(), WindowScale(7),
                                                    MpCapable(sender_key=0x42)])
    before, out = run(box, synack, DOWN)
    assert out.tcp.options == [MaximumSegmentSize(1460), SackPermitted(), TS, NoOperation(),
                               WindowScale(7), *[NoOperation()] * 12]
    assert options_length(out.tcp.options) == options_length(before.tcp.options) == 32
    assert len(encode_packet(out)) == len(encode_packet(before))
    data = packet(payload=b"x", options=[Dss(data_ack=1, dsn=2, subflow_seq=1, data_len=1)])
    before, out = run(box, data)
    assert out == before  # mp_capable only


def test_nop_variant_for_dss_uses_its_encoded_length() -> None:
    box = build("strip_options", what=["dss"], how="nop")
    dss = Dss(data_ack=1, dsn=2, subflow_seq=1, data_len=1, checksum=0xBEEF)  # 4+8+14+2 = 28
    _, out = run(box, packet(payload=b"x", options=[TS, dss]))
    assert out.tcp.options == [TS, *[NoOperation()] * 28]


def test_unknown_group_keeps_classic_options() -> None:
    box = build("strip_options", what=["unknown"])
    options = [MaximumSegmentSize(1460), SackPermitted(), TS, WindowScale(7),
               UnknownOption(kind=34, data=b""), MpCapable()]
    _, out = run(box, packet(flags=SYN, options=options))
    assert out.tcp.options == options[:4]


def test_direction_filter() -> None:
    box = build("strip_options", what=["dss"], direction="downstream")
    up = packet(UP, payload=b"u", flags=ACK | PSH, options=[Dss(data_ack=1)])
    before, out = run(box, up, UP)
    assert out == before
    _, out = run(box, packet(DOWN, payload=b"d", options=[Dss(data_ack=1)]), DOWN)
    assert out.tcp.options == []
    assert box.counters.seen == 2 and box.counters.changed == 1
