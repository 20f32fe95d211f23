"""With the codec on, every hop encodes and decodes: packets arrive equal to what was sent
(checksum filled in), and a packet the codec refuses is dropped and counted, not passed on."""

from __future__ import annotations

from dataclasses import replace

from middleboxes.contract import Direction, MiddleboxCounters
from testbed.net.params import MAX_QUEUE_PKTS, LinkParams
from testbed.sim.network import SimNetwork
from testbed.sim.packets import packet_size
from testbed.wire import encode_packet
from testbed.wire.types import (
    ACK,
    SYN,
    Dss,
    EndOfOptions,
    MaximumSegmentSize,
    MpCapable,
    NoOperation,
    Packet,
    Sack,
    SackPermitted,
    TcpSegment,
    Timestamps,
    WindowScale,
)
from tests.unit.sim.toy_endpoints import Burst, Sink


def sample_packets() -> list[Packet]:
    def packet(flags: int, options: list, payload: bytes = b"") -> Packet:
        return Packet("10.0.0.1", "10.0.0.2", TcpSegment(
            src_port=40000, dst_port=80, seq=123456, ack=654321, flags=flags, window=5000,
            options=options, payload=payload), ident=7)

    return [
        packet(SYN, [MaximumSegmentSize(1460), SackPermitted(), Timestamps(1, 0),
                     WindowScale(7), MpCapable()]),
        packet(ACK, [Timestamps(5, 6), MpCapable(sender_key=1, receiver_key=2)]),
        packet(ACK, [MpCapable(sender_key=1, receiver_key=2, data_len=10, checksum=0xABCD)],
               b"0123456789"),
        packet(ACK, [Dss(data_ack=99, dsn=2**40, subflow_seq=1, data_len=3, checksum=0x1234)],
               b"abc"),
        packet(ACK, [Sack(((10, 20), (30, 40))), Dss(data_ack=5, data_ack_64=False)]),
    ]


def without_padding(packet: Packet) -> Packet:
    """The packet with the checksum cleared and the EOL/NOP padding the encoder added removed."""
    options = [option for option in packet.tcp.options
               if not isinstance(option, (EndOfOptions, NoOperation))]
    return replace(packet, tcp=replace(packet.tcp, checksum=None, options=options))


class OversizedMss:
    """Middlebox writing an MSS that does not fit 16 bits: the codec must refuse it."""

    name = "oversized-mss"

    def __init__(self) -> None:
        self.counters = MiddleboxCounters()

    def process(self, packet: Packet, direction: Direction, now: float) -> list[Packet]:
        packet.tcp.options.append(MaximumSegmentSize(70000))
        return [packet]

    def next_deadline(self) -> float | None:
        return None

    def release(self, now: float) -> list[tuple[Packet, Direction]]:
        return []


def run_burst(packets: list[Packet], middleboxes: list, rate: float | None = None
              ) -> tuple[SimNetwork, Sink]:
    network = SimNetwork(1, codec=True)
    sink = Sink()
    sender = network.add_endpoint("a", Burst(packets))
    network.add_link("ab", sender, network.add_endpoint("b", sink),
                     LinkParams(rate_mbit=rate, queue_pkts=MAX_QUEUE_PKTS),
                     a_address="10.0.0.1", b_address="10.0.0.2", middleboxes=middleboxes)
    network.run()
    return network, sink


def test_packets_survive_the_codec_round_trip_at_each_hop() -> None:
    expected = sample_packets()
    network, sink = run_burst(sample_packets(), [], rate=10)
    received = [packet for _, packet in sink.received]
    assert all(packet.tcp.checksum is not None for packet in received)
    assert [without_padding(packet) for packet in received] == expected
    assert network.link("ab").malformed == 0


def test_encoded_length_sets_serialization_and_matches_the_size_estimate() -> None:
    packets = sample_packets()
    sizes = [len(encode_packet(packet)) for packet in packets]
    assert sizes == [packet_size(packet) for packet in packets]
    network, _ = run_burst(sample_packets(), [], rate=10)
    assert network.link("ab").counters()["upstream"]["bytes_out"] == sum(sizes)


def test_a_packet_the_codec_refuses_is_dropped_and_named() -> None:
    network, sink = run_burst(sample_packets()[:1], [OversizedMss()])
    link = network.link("ab")
    assert sink.received == [] and link.malformed == 1
    assert "MaximumSegmentSize" in link.malformed_messages[0]
