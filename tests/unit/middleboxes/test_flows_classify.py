"""Sequence arithmetic across the 2**32 wrap, flow keys, and packet classes."""

from __future__ import annotations

from middleboxes.classify import PacketClassifier, option_types_named
from middleboxes.flows import FlowKey, SeqUnwrapper, flow_key, seq_add, seq_diff, seq_lt
from testbed.wire.types import (
    ACK,
    FIN,
    RST,
    SYN,
    Dss,
    MpCapable,
    MpJoinAck,
    Sack,
    Timestamps,
    UnknownMptcp,
    UnknownOption,
)
from tests.unit.middleboxes.packets import DOWN, UP, packet


def test_seq_add_and_diff_wrap() -> None:
    assert seq_add(0xFFFFFFF0, 0x20) == 0x10
    assert seq_add(0x10, -0x20) == 0xFFFFFFF0
    assert seq_diff(0x10, 0xFFFFFFF0) == 0x20
    assert seq_diff(0xFFFFFFF0, 0x10) == -0x20
    assert seq_lt(0xFFFFFFF0, 0x10) and not seq_lt(0x10, 0xFFFFFFF0)
    assert seq_diff(0x80000000, 0) == -(1 << 31)  # the ambiguous half-way point


def test_unwrapper_orders_positions_across_wrap_and_tolerates_old_values() -> None:
    unwrapper = SeqUnwrapper(0xFFFFFF00)
    assert unwrapper.unwrap(0xFFFFFF00) == 0xFFFFFF00
    assert unwrapper.unwrap(0x100) == (1 << 32) + 0x100
    assert unwrapper.unwrap(0xFFFFFFF0) == 0xFFFFFFF0  # a retransmission from before the wrap
    assert unwrapper.peek(0x200) == (1 << 32) + 0x200
    for lap in range(1, 4):  # streams longer than 4 GiB keep counting up
        unwrapper.unwrap(0x40000000)
        unwrapper.unwrap(0x80000000)
        unwrapper.unwrap(0xC0000000)
        assert unwrapper.unwrap(0x10) == ((lap + 1) << 32) + 0x10


def test_flow_key_is_the_same_for_both_directions() -> None:
    up = flow_key(packet(UP), UP)
    down = flow_key(packet(DOWN), DOWN)
    assert up == down == FlowKey("10.0.0.1", 40000, "10.0.1.1", 5201)
    assert str(up) == "10.0.0.1:40000>10.0.1.1:5201"
    assert up.has_port(5201) and up.has_port(40000) and not up.has_port(80)


def test_packet_classes() -> None:
    classifier = PacketClassifier()

    def classes(p, direction=UP):
        return set(classifier.classify(p, direction))

    assert classes(packet(flags=SYN)) == {"syn"}
    assert classes(packet(DOWN, flags=SYN | ACK), DOWN) == {"synack"}
    assert classes(packet(seq=1)) == {"pure_ack"}
    assert classes(packet(seq=1, payload=b"x")) == {"data", "first_data"}
    assert classes(packet(seq=2, payload=b"y")) == {"data"}
    assert classes(packet(seq=1, payload=b"x")) == {"data", "first_data"}  # retransmission
    assert classes(packet(DOWN, seq=50, payload=b"z"), DOWN) == {"data", "first_data"}
    assert classes(packet(seq=3, flags=ACK | FIN)) == {"fin"}
    assert classes(packet(seq=3, flags=ACK | FIN, payload=b"w")) == {"fin", "data"}
    assert classes(packet(seq=3, flags=RST)) == {"rst"}
    other_flow = packet(seq=9, payload=b"q", client_port=40001)
    assert classes(other_flow) == {"data", "first_data"}


def test_option_groups() -> None:
    mptcp = option_types_named(("mptcp",))
    assert {MpCapable, MpJoinAck, Dss, UnknownMptcp} <= mptcp
    assert Sack not in mptcp and UnknownOption not in mptcp
    unknown = option_types_named(("unknown",))
    assert {MpCapable, UnknownOption, UnknownMptcp} <= unknown
    assert Timestamps not in unknown and Sack not in unknown
    assert option_types_named(("mp_join",)) == {MpJoinAck, *(
        t for t in mptcp if t.__name__.startswith("MpJoin"))}
