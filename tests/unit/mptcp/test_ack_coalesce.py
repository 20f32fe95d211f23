"""Which ACKs the driver folds within one receive batch, and which it must keep."""

from __future__ import annotations

from testbed.mptcp.driver.ack_coalesce import coalesce_pure_acks
from testbed.wire import (
    ACK,
    FIN,
    PSH,
    SYN,
    AddAddr,
    Dss,
    MpPrio,
    Packet,
    Sack,
    TcpSegment,
    Timestamps,
    decode_packet,
    encode_packet,
)


def ack(number: int, *, port: int = 61000, options: list | None = None, flags: int = ACK,
        payload: bytes = b"", window: int = 500) -> bytes:
    if options is None:
        options = [Timestamps(number, 7), Dss(data_ack=10_000 + number)]
    segment = TcpSegment(5201, port, 1, number, flags, window, options, payload)
    return encode_packet(Packet("10.0.100.2", "10.0.1.1", segment))


def acks_of(packets: list[bytes]) -> list[int]:
    return [decode_packet(raw).tcp.ack for raw in packets]


def test_a_run_of_cumulative_acks_keeps_only_the_newest() -> None:
    kept, skipped = coalesce_pure_acks([ack(100), ack(200), ack(300)])
    assert acks_of(kept) == [300] and skipped == 2
    assert decode_packet(kept[0]).tcp.options[1] == Dss(data_ack=10_300)


def test_flows_are_folded_separately_and_order_is_kept() -> None:
    batch = [ack(100, port=1), ack(100, port=2), ack(200, port=1), ack(150, port=2), ack(300, port=1)]
    kept, skipped = coalesce_pure_acks(batch)
    assert [(decode_packet(r).tcp.dst_port, decode_packet(r).tcp.ack) for r in kept] == [
        (2, 150), (1, 300)]
    assert skipped == 3


def test_duplicate_acks_and_window_updates_are_all_kept() -> None:
    batch = [ack(100), ack(100), ack(100, window=900)]
    assert coalesce_pure_acks(batch) == (batch, 0)


def test_an_older_ack_after_a_newer_one_is_kept() -> None:
    batch = [ack(300), ack(200)]
    assert coalesce_pure_acks(batch) == (batch, 0)


def test_sequence_wraparound_counts_as_newer() -> None:
    kept, skipped = coalesce_pure_acks([ack(2**32 - 10), ack(5)])
    assert acks_of(kept) == [5] and skipped == 1


def test_acks_carrying_more_than_cumulative_information_are_kept() -> None:
    informative = [
        ack(200, options=[Timestamps(1, 2), Sack(((300, 400),))]),
        ack(200, options=[Timestamps(1, 2),
                          Dss(data_ack=5, dsn=1, subflow_seq=1, data_len=1, data_fin=True)]),
        ack(200, options=[Dss(data_ack=5, dsn=1, subflow_seq=1, data_len=10)]),
        ack(200, options=[AddAddr(address_id=2, address="10.0.2.2", hmac=7)]),
        ack(200, options=[MpPrio(backup=True)]),
        ack(200, flags=ACK | FIN),
        ack(200, flags=ACK | PSH),
        ack(200, flags=SYN | ACK),
        ack(200, payload=b"data"),
    ]
    for packet in informative:
        batch = [packet, ack(900)]
        assert coalesce_pure_acks(batch) == (batch, 0), decode_packet(packet).tcp
        # and it is never the one that supersedes an earlier ACK
        earlier = [ack(100), packet]
        assert coalesce_pure_acks(earlier) == (earlier, 0)


def test_another_packet_of_the_flow_between_two_acks_stops_the_fold() -> None:
    batch = [ack(100), ack(150, payload=b"x"), ack(200)]
    assert coalesce_pure_acks(batch) == (batch, 0)


def test_acks_without_options_fold_too() -> None:
    kept, skipped = coalesce_pure_acks([ack(100, options=[]), ack(200, options=[])])
    assert acks_of(kept) == [200] and skipped == 1


def ack6(number: int, *, options: list | None = None, payload: bytes = b"") -> bytes:
    from testbed.mptcp.driver.stack_codec import encode_stack_packet

    if options is None:
        options = [Timestamps(number, 7), Dss(data_ack=10_000 + number)]
    segment = TcpSegment(5201, 61000, 1, number, ACK, 500, options, payload)
    return encode_stack_packet(Packet("fd00:10:0:100::2", "fd00:10:0:1::1", segment))


def test_ipv6_pure_acks_are_folded_per_flow_and_data_is_kept() -> None:
    from testbed.mptcp.driver.ack_coalesce import pure_ack_number_v6
    from testbed.mptcp.driver.stack_codec import decode_stack_packet

    batch = [ack6(100), ack(150), ack6(200), ack6(250, payload=b"x"), ack6(300), ack6(400),
             ack(160)]
    kept, skipped = coalesce_pure_acks(batch)
    # 100 gives way to 200 and 300 to 400 on the IPv6 flow, 150 to 160 on the IPv4 one;
    # 200 stays: the flow's next packet carries data
    assert [(decode_stack_packet(raw).src, decode_stack_packet(raw).tcp.ack) for raw in kept] == [
        ("fd00:10:0:100::2", 200), ("fd00:10:0:100::2", 250), ("fd00:10:0:100::2", 400),
        ("10.0.100.2", 160)]
    assert skipped == 3
    assert pure_ack_number_v6(ack6(7)) == 7
    assert pure_ack_number_v6(ack6(7, options=[Timestamps(1, 2), Sack(((5, 9),))])) is None
    assert pure_ack_number_v6(ack6(7)[:59]) is None
    assert pure_ack_number_v6(ack(7)) is None
