"""syn_firewall: SYNs with options outside the known set are dropped or answered with a RST."""

from __future__ import annotations

from testbed.wire.types import (
    ACK,
    RST,
    SYN,
    MaximumSegmentSize,
    MpCapable,
    MpJoinSyn,
    MpJoinSynAck,
    Packet,
    TcpSegment,
    UnknownOption,
)
from tests.unit.middleboxes.packets import DOWN, SYN_OPTIONS, UP, build, packet

JOIN = MpJoinSyn(False, 2, 0xAABBCCDD, 0x11223344)


def test_default_drops_mptcp_syn_and_passes_classic_one() -> None:
    box = build("syn_firewall")
    classic = packet(flags=SYN, options=list(SYN_OPTIONS))
    assert box.process(classic, UP, 0.0) == [classic]
    assert box.process(packet(flags=SYN, options=[*SYN_OPTIONS, MpCapable()]), UP, 0.0) == []
    assert box.process(packet(flags=SYN, options=[UnknownOption(34, b"")]), UP, 0.0) == []
    data = packet(seq=1, payload=b"x", options=[MpCapable(sender_key=1, receiver_key=2,
                                                          data_len=1)])
    assert box.process(data, UP, 0.0) == [data]  # only SYNs are checked
    synack = packet(DOWN, flags=SYN | ACK, options=[MpCapable(sender_key=1)])
    assert box.process(synack, DOWN, 0.0) == [synack]  # synack not checked by default
    assert box.counters.as_dict() == {"seen": 5, "changed": 0, "dropped": 2, "injected": 0}
    assert box.next_deadline() is None and box.release(1.0) == []


def test_known_set_admits_mp_capable_but_refuses_mp_join() -> None:
    box = build("syn_firewall", known_options=["mss", "sack_permitted", "timestamps", "nop",
                                                "window_scale", "mp_capable"],
                packets=["syn", "synack"])
    capable = packet(flags=SYN, options=[*SYN_OPTIONS, MpCapable()])
    assert box.process(capable, UP, 0.0) == [capable]
    assert box.process(packet(flags=SYN, options=[MaximumSegmentSize(1460), JOIN]), UP, 0.0) == []
    join_synack = packet(DOWN, flags=SYN | ACK,
                         options=[MpJoinSynAck(False, 0, 1, 2)])
    assert box.process(join_synack, DOWN, 0.0) == []


def test_mptcp_group_is_knowable() -> None:
    box = build("syn_firewall", known_options=["mss", "mptcp"])
    join = packet(flags=SYN, options=[MaximumSegmentSize(1460), JOIN])
    assert box.process(join, UP, 0.0) == [join]


def test_reset_action_answers_the_sender_through_release() -> None:
    box = build("syn_firewall", action="reset", log_changes=True)
    assert box.process(packet(flags=SYN, seq=0xFFFFFFFF, options=[MpCapable()]), UP, 3.0) == []
    assert box.next_deadline() == 3.0
    [(rst, direction)] = box.release(3.0)
    assert direction is DOWN
    assert rst == Packet(src="10.0.1.1", dst="10.0.0.1", ttl=64,
                         tcp=TcpSegment(src_port=5201, dst_port=40000, seq=0, ack=0,
                                        flags=RST | ACK, window=0))
    assert box.next_deadline() is None
    assert box.counters.as_dict() == {"seen": 1, "changed": 0, "dropped": 1, "injected": 1}
    assert box.change_log.entries[0]["change"] == "dropped SYN with unknown options mp_capable"


def test_reset_of_a_synack_uses_its_ack_as_seq() -> None:
    box = build("syn_firewall", action="reset", packets=["synack"], known_options=["mss"])
    box.process(packet(DOWN, flags=SYN | ACK, seq=9, ack=501, options=[MpCapable(sender_key=1)]),
                DOWN, 0.0)
    [(rst, direction)] = box.release(0.0)
    assert direction is UP
    assert (rst.src, rst.tcp.seq, rst.tcp.ack, rst.tcp.flags) == ("10.0.0.1", 501, 0, RST)


def test_direction_filter() -> None:
    box = build("syn_firewall", direction="upstream")
    syn = packet(DOWN, flags=SYN, options=[MpCapable()])
    assert box.process(syn, DOWN, 0.0) == [syn]
