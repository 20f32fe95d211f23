"""The middlebox stage: decode only when needed, original bytes unless changed, order, holds."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from middleboxes.contract import Direction, MiddleboxCounters
from testbed.inline.pipeline import FunctionCodec, MiddleboxPipeline
from testbed.wire import Packet, decode_packet, encode_packet, verify_checksums
from testbed.wire.ethernet import is_ipv4_tcp_frame

from .frames import arp_frame, tcp_frame, tcp_packet

UP, DOWN = Direction.UPSTREAM, Direction.DOWNSTREAM


class CountingCodec:
    def __init__(self) -> None:
        self.decoded = 0
        self.encoded = 0

    def decode(self, data: bytes) -> Packet:
        self.decoded += 1
        return decode_packet(data)

    def encode(self, packet: Packet) -> bytes:
        self.encoded += 1
        return encode_packet(packet)


@dataclass
class Box:
    """A configurable test middlebox: records what it saw, then edits/drops/splits/holds."""

    name: str
    log: list[tuple[str, Direction]] = field(default_factory=list)
    action: str = "pass"
    hold_s: float = 0.0
    counters: MiddleboxCounters = field(default_factory=MiddleboxCounters)
    held: list[tuple[float, Packet, Direction]] = field(default_factory=list)

    def process(self, packet: Packet, direction: Direction, now: float) -> list[Packet]:
        self.log.append((self.name, direction))
        self.counters.seen += 1
        if self.action == "ttl":
            packet.ttl -= 1
        elif self.action == "drop":
            return []
        elif self.action == "split":
            half = len(packet.tcp.payload) // 2
            first = dataclasses.replace(packet, tcp=dataclasses.replace(
                packet.tcp, payload=packet.tcp.payload[:half]))
            second = dataclasses.replace(packet, tcp=dataclasses.replace(
                packet.tcp, seq=packet.tcp.seq + half, payload=packet.tcp.payload[half:]))
            return [first, second]
        elif self.action == "bad_address":
            return [dataclasses.replace(packet, src="not-an-address")]
        elif self.action == "hold":
            self.held.append((now + self.hold_s, packet, direction))
            return []
        return [packet]

    def next_deadline(self) -> float | None:
        return min((due for due, _, _ in self.held), default=None)

    def release(self, now: float) -> list[tuple[Packet, Direction]]:
        due = [(p, d) for t, p, d in self.held if t <= now]
        self.held = [entry for entry in self.held if entry[0] > now]
        return due


def pipeline(*boxes: Box, codec: CountingCodec | None = None) -> MiddleboxPipeline:
    return MiddleboxPipeline(list(boxes), codec or CountingCodec())


def test_without_middleboxes_nothing_is_decoded() -> None:
    codec = CountingCodec()
    frame = tcp_frame()
    assert MiddleboxPipeline([], codec).process(frame, UP, 0.0) == [(frame, UP)]
    assert codec.decoded == 0


def test_non_tcp_frames_pass_untouched_and_undecoded() -> None:
    codec = CountingCodec()
    box = Box("a")
    frame = arp_frame()
    assert not is_ipv4_tcp_frame(frame)
    assert pipeline(box, codec=codec).process(frame, UP, 0.0) == [(frame, UP)]
    assert codec.decoded == 0 and box.log == []


def test_unchanged_packet_leaves_as_the_original_bytes() -> None:
    # A wrong TCP checksum proves the bytes were not re-encoded (encoding would fix it).
    frame = bytearray(tcp_frame())
    frame[14 + 20 + 16] ^= 0xFF
    frame = bytes(frame)
    assert not verify_checksums(frame[14:])
    codec = CountingCodec()
    stage = pipeline(Box("a"), Box("b"), codec=codec)
    assert stage.process(frame, UP, 0.0) == [(frame, UP)]
    assert (codec.decoded, codec.encoded) == (1, 0)
    assert stage.stats.kept_original == 1


def test_changed_packet_is_reencoded_with_valid_checksums_and_same_ethernet_header() -> None:
    frame = tcp_frame()
    [(out, direction)] = pipeline(Box("a", action="ttl")).process(frame, UP, 0.0)
    assert direction is UP
    assert out[:14] == frame[:14]
    assert decode_packet(out[14:]).ttl == decode_packet(frame[14:]).ttl - 1
    assert verify_checksums(out[14:])


def test_drop_and_split() -> None:
    frame = tcp_frame(tcp_packet(payload=b"abcdefgh"))
    assert pipeline(Box("a", action="drop")).process(frame, UP, 0.0) == []
    outputs = pipeline(Box("a", action="split")).process(frame, DOWN, 0.0)
    assert [decode_packet(f[14:]).tcp.payload for f, _ in outputs] == [b"abcd", b"efgh"]
    assert all(f[:14] == frame[:14] and d is DOWN for f, d in outputs)


def test_upstream_meets_boxes_in_list_order_downstream_in_reverse() -> None:
    log: list[tuple[str, Direction]] = []
    stage = pipeline(Box("client-side", log), Box("server-side", log))
    stage.process(tcp_frame(), UP, 0.0)
    stage.process(tcp_frame(upstream=False), DOWN, 0.0)
    assert log == [("client-side", UP), ("server-side", UP),
                   ("server-side", DOWN), ("client-side", DOWN)]


def test_a_dropped_packet_reaches_no_later_box() -> None:
    log: list[tuple[str, Direction]] = []
    pipeline(Box("first", log, action="drop"), Box("second", log)).process(tcp_frame(), UP, 0.0)
    assert log == [("first", UP)]


def test_undecodable_tcp_frame_is_forwarded_unchanged_and_counted() -> None:
    frame = tcp_frame()[:14 + 20 + 10]  # TCP header cut short
    stage = pipeline(Box("a"))
    assert is_ipv4_tcp_frame(frame)
    assert stage.process(frame, UP, 0.0) == [(frame, UP)]
    assert stage.stats.undecodable == 1
    assert stage.stats.last_wire_error


def test_unencodable_output_is_dropped_and_counted() -> None:
    stage = pipeline(Box("a", action="bad_address"))
    assert stage.process(tcp_frame(), UP, 0.0) == []
    assert stage.stats.unencodable == 1
    assert "ip.src" in (stage.stats.last_wire_error or "")


def test_held_packets_are_released_at_their_deadline_through_the_rest_of_the_chain() -> None:
    log: list[tuple[str, Direction]] = []
    holder = Box("holder", log, action="hold", hold_s=0.030)
    stage = pipeline(holder, Box("after", log))
    frame = tcp_frame()
    assert stage.process(frame, UP, 1.0) == []
    assert stage.next_deadline() == 1.030
    assert stage.release(1.029) == []
    released = stage.release(1.030)
    assert [(f[14:], d) for f, d in released] == [(frame[14:], UP)]
    assert released[0][0][:14] == frame[:14]  # the last header seen upstream
    assert log == [("holder", UP), ("after", UP)]
    assert stage.next_deadline() is None


def test_downstream_release_from_the_client_side_box_is_last_in_chain() -> None:
    log: list[tuple[str, Direction]] = []
    holder = Box("holder", log, action="hold", hold_s=0.010)
    stage = pipeline(holder, Box("server-side", log))
    stage.process(tcp_frame(upstream=True), UP, 0.0)  # teaches the upstream header only
    assert len(stage.release(0.010)) == 1
    log.clear()
    holder.held.append((0.5, tcp_packet(), DOWN))  # e.g. a reply the box decided to inject
    [(frame, direction)] = stage.release(0.5)
    assert direction is DOWN and log == []
    up_header = tcp_frame(upstream=True)[:14]
    assert frame[:14] == up_header[6:12] + up_header[0:6] + up_header[12:14]


def test_counters_per_middlebox() -> None:
    stage = pipeline(Box("a"), Box("b", action="drop"))
    stage.process(tcp_frame(), UP, 0.0)
    assert stage.counters() == [
        {"name": "a", "counters": {"seen": 1, "changed": 0, "dropped": 0, "injected": 0}},
        {"name": "b", "counters": {"seen": 1, "changed": 0, "dropped": 0, "injected": 0}},
    ]


def test_function_codec_wraps_the_wire_functions() -> None:
    codec = FunctionCodec(decode_packet, encode_packet)
    packet = tcp_packet()
    assert codec.decode(codec.encode(packet)).tcp.payload == packet.tcp.payload


class OwningBox(Box):
    def owned_addresses(self) -> list[str]:
        return ["10.99.0.9"]


def arp_request_for(target: str, sender_mac: bytes) -> bytes:
    body = (bytes.fromhex("0001080006040001") + sender_mac + bytes([10, 99, 0, 2])
            + bytes(6) + bytes(int(x) for x in target.split(".")))
    return b"\xff" * 6 + sender_mac + b"\x08\x06" + body


def test_arp_for_an_owned_address_is_answered_with_the_far_side_host_mac() -> None:
    stage = pipeline(OwningBox("nat"))
    server_mac = bytes.fromhex("020000000002")
    request = arp_request_for("10.99.0.9", server_mac)
    # Nothing seen from the client side yet: no MAC to answer with, the request passes.
    assert stage.process(request, DOWN, 0.0) == [(request, DOWN)]
    client_frame = tcp_frame(upstream=True)
    stage.process(client_frame, UP, 0.0)
    [(reply, direction)] = stage.process(request, DOWN, 0.1)
    client_mac = client_frame[6:12]
    assert direction is UP  # back out of the leg the request came in on
    assert reply[:12] == server_mac + client_mac and reply[12:14] == b"\x08\x06"
    assert reply[14 + 6:14 + 8] == b"\x00\x02"  # op = reply
    assert reply[14 + 8:14 + 18] == client_mac + bytes([10, 99, 0, 9])
    assert reply[14 + 18:14 + 28] == server_mac + bytes([10, 99, 0, 2])
    assert stage.stats.arp_answered == 1


def test_arp_for_other_addresses_passes_through() -> None:
    stage = pipeline(OwningBox("nat"))
    stage.process(tcp_frame(upstream=True), UP, 0.0)
    other = arp_request_for("10.99.0.1", bytes.fromhex("020000000002"))
    assert stage.process(other, DOWN, 0.0) == [(other, DOWN)]
    assert pipeline(Box("plain")).process(other, DOWN, 0.0) == [(other, DOWN)]
