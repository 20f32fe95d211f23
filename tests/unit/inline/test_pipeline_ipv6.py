"""The middlebox stage on IPv6: decoded through extension headers, re-encoded in the packet's own
family with that family's EtherType, undecodable frames counted, neighbour solicitations for
owned addresses answered."""

from __future__ import annotations

import dataclasses

import pytest

from middleboxes.contract import Direction, MiddleboxCounters
from testbed.inline.pipeline import FunctionCodec, MiddleboxPipeline, wire_codec
from testbed.wire import (
    Ipv6Extension,
    Ipv6Packet,
    Packet,
    decode_packet,
    decode_packet_v6,
    encode_packet,
    ones_complement_sum,
    verify_checksums,
    verify_checksums_v6,
)

from .frames import (
    CLIENT_MAC,
    SERVER_MAC,
    neighbour_solicitation_frame,
    tcp_frame,
    tcp_frame_v6,
    tcp_packet,
    tcp_packet_v6,
)

UP, DOWN = Direction.UPSTREAM, Direction.DOWNSTREAM
DESTINATION_OPTIONS = Ipv6Extension(60, bytes((6, 0, 1, 4, 0, 0, 0, 0)))  # PadN, then TCP


class Recorder:
    """Records the packets it sees; optionally edits or translates them."""

    name = "recorder"

    def __init__(self, action: str = "pass", owned: tuple[str, ...] = ()) -> None:
        self.action = action
        self.seen: list[object] = []
        self.counters = MiddleboxCounters()
        self._owned = owned

    def owned_addresses(self) -> list[str]:
        return list(self._owned)

    def process(self, packet, direction, now):  # type: ignore[no-untyped-def]
        self.seen.append(packet)
        if self.action == "seq":
            packet.tcp.seq += 1000
        elif self.action == "to_v4":  # a NAT64's direction: IPv6 in, IPv4 out
            return [Packet(src="192.0.2.1", dst="198.51.100.2", tcp=packet.tcp)]
        elif self.action == "to_v6":
            return [Ipv6Packet(src="64:ff9b::c633:6402", dst="fd00:99::1", tcp=packet.tcp)]
        return [packet]

    def next_deadline(self) -> None:
        return None

    def release(self, now: float) -> list:  # type: ignore[type-arg]
        return []


def test_ipv6_tcp_is_decoded_and_an_unchanged_packet_leaves_as_its_original_bytes() -> None:
    box = Recorder()
    frame = tcp_frame_v6()
    stage = MiddleboxPipeline([box], wire_codec())
    assert stage.process(frame, UP, 0.0) == [(frame, UP)]
    assert isinstance(box.seen[0], Ipv6Packet) and box.seen[0].tcp.payload == b"hello"
    assert (stage.stats.decoded, stage.stats.kept_original) == (1, 1)


def test_extension_headers_are_walked_and_kept_on_a_changed_packet() -> None:
    box = Recorder("seq")
    frame = tcp_frame_v6(tcp_packet_v6(extensions=(DESTINATION_OPTIONS,)))
    [(out, direction)] = MiddleboxPipeline([box], wire_codec()).process(frame, DOWN, 0.0)
    assert direction is DOWN and out[:14] == frame[:14]
    packet = decode_packet_v6(out[14:])
    assert packet.extensions == (DESTINATION_OPTIONS,) and packet.tcp.seq == 2000
    assert verify_checksums_v6(out[14:])


def test_a_box_that_changes_the_family_changes_the_ethertype() -> None:
    to_v4 = MiddleboxPipeline([Recorder("to_v4")], wire_codec())
    [(out, _)] = to_v4.process(tcp_frame_v6(), UP, 0.0)
    assert out[12:14] == b"\x08\x00" and out[:12] == tcp_frame_v6()[:12]
    assert verify_checksums(out[14:]) and decode_packet(out[14:]).dst == "198.51.100.2"
    to_v6 = MiddleboxPipeline([Recorder("to_v6")], wire_codec())
    [(out, _)] = to_v6.process(tcp_frame(tcp_packet()), DOWN, 0.0)
    assert out[12:14] == b"\x86\xdd" and verify_checksums_v6(out[14:])
    assert decode_packet_v6(out[14:]).src == "64:ff9b::c633:6402"


def test_undecodable_ipv6_tcp_is_forwarded_and_counted() -> None:
    frame = tcp_frame_v6()[:14 + 40 + 10]  # TCP header cut short
    frame = frame[:18] + (10).to_bytes(2, "big") + frame[20:]  # payload length that fits
    box = Recorder()
    stage = MiddleboxPipeline([box], wire_codec())
    assert stage.process(frame, UP, 0.0) == [(frame, UP)]
    assert stage.stats.undecodable == 1 and box.seen == []
    assert any(key.startswith("undecodable:tcp") for key in stage.stats.reasons)


def test_icmpv6_passes_undecoded_and_uncounted() -> None:
    frame = neighbour_solicitation_frame("fd00:99::2")
    box = Recorder()
    stage = MiddleboxPipeline([box], wire_codec())
    assert stage.process(frame, UP, 0.0) == [(frame, UP)]
    assert (stage.stats.decoded, stage.stats.undecodable, box.seen) == (0, 0, [])


def test_neighbour_solicitation_for_an_owned_ipv6_address_is_answered() -> None:
    stage = MiddleboxPipeline([Recorder(owned=("fd00:99::99",))], wire_codec())
    stage.process(tcp_frame_v6(upstream=False), DOWN, 0.0)  # learn the server-side host's MAC
    solicitation = neighbour_solicitation_frame("fd00:99::99")
    [(reply, direction)] = stage.process(solicitation, UP, 1.0)
    assert direction is DOWN and stage.stats.arp_answered == 1
    assert reply[:6] == CLIENT_MAC and reply[6:12] == SERVER_MAC and reply[12:14] == b"\x86\xdd"
    ip, icmp = reply[14:54], reply[54:]
    assert ip[6:8] == bytes((58, 255)) and ip[24:40] == solicitation[22:38]  # back to the asker
    assert icmp[0] == 136 and icmp[4] == 0x60  # advertisement, solicited + override
    assert icmp[8:24] == ip[8:24] == bytes.fromhex("fd000099000000000000000000000099")
    assert icmp[24:32] == bytes((2, 1)) + SERVER_MAC  # target link-layer address
    pseudo = ip[8:40] + len(icmp).to_bytes(4, "big") + bytes((0, 0, 0, 58))
    assert ones_complement_sum(icmp, ones_complement_sum(pseudo)) == 0xFFFF
    other = neighbour_solicitation_frame("fd00:99::2")
    assert stage.process(other, UP, 2.0) == [(other, UP)]


def test_ipv4_and_ipv6_packets_share_one_chain() -> None:
    box = Recorder("seq")
    stage = MiddleboxPipeline([box], wire_codec())
    [(v4, _)] = stage.process(tcp_frame(), UP, 0.0)
    [(v6, _)] = stage.process(tcp_frame_v6(), UP, 0.0)
    assert decode_packet(v4[14:]).tcp.seq == decode_packet_v6(v6[14:]).tcp.seq == 2000
    assert [type(p) for p in box.seen] == [Packet, Ipv6Packet]
    assert dataclasses.is_dataclass(box.seen[1])


class Editor(Recorder):
    """Edits headers only (the payload object stays), one way per `action`."""

    def process(self, packet, direction, now):  # type: ignore[no-untyped-def]
        tcp = packet.tcp
        if self.action == "seq":
            tcp.seq = (tcp.seq + 12345) & 0xFFFFFFFF
        elif self.action == "drop_option":
            tcp.options = []
        elif self.action == "address":
            packet.dst = "fd00:99::99"
        elif self.action == "hop_limit":
            packet.hop_limit -= 1
        return [packet]


@pytest.mark.parametrize("action", ["seq", "drop_option", "address", "hop_limit"])
def test_ipv6_header_edits_reuse_the_payload_and_match_a_full_encode(action: str) -> None:
    frame = tcp_frame_v6(tcp_packet_v6(payload=bytes(range(256)) * 5))
    fast = MiddleboxPipeline([Editor(action)], wire_codec())
    full = MiddleboxPipeline([Editor(action)], FunctionCodec(decode_packet, encode_packet))
    [(out, _)] = fast.process(frame, UP, 0.0)
    assert fast.process(frame, UP, 0.0) and fast.stats.headers_only == 2
    assert full.process(frame, UP, 0.0) == [(out, UP)] and full.stats.headers_only == 0
    assert verify_checksums_v6(out[14:])


def test_ipv6_header_edit_keeps_a_wrong_checksum_wrong() -> None:
    frame = bytearray(tcp_frame_v6(tcp_packet_v6(payload=b"q" * 100)))
    frame[-1] ^= 0x01  # the payload no longer matches the TCP checksum
    [(out, _)] = MiddleboxPipeline([Editor("seq")], wire_codec()).process(bytes(frame), UP, 0.0)
    assert not verify_checksums_v6(out[14:])


def test_mutated_ipv6_frames_never_end_the_pipeline_of_any_box() -> None:
    """Seeded byte flips and truncations through every catalogue box: each frame is forwarded,
    dropped or re-encoded, never raised; every output is a forwarded input or an IPv6 frame
    the codec reads."""
    import random

    from middleboxes.registry import build_middlebox
    from tests.unit.middleboxes.test_wire_roundtrip import CONFIGS

    rng = random.Random(17)
    seeds = [tcp_frame_v6(tcp_packet_v6(payload=b"A" * n, extensions=ext))
             for n in (0, 1, 700) for ext in ((), (DESTINATION_OPTIONS,))]
    for name, params in CONFIGS:
        box_params = dict(params)
        stage = MiddleboxPipeline([build_middlebox(name, box_params, random.Random(1))], wire_codec())
        for index in range(300):
            frame = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 4)):
                position = rng.randrange(14, len(frame))
                frame[position] = rng.randrange(256)
            if rng.random() < 0.2:
                frame = frame[:rng.randrange(14, len(frame))]
            data = bytes(frame)
            outputs = stage.process(data, UP if index % 2 else DOWN, index * 0.001)
            outputs += stage.release(index * 0.001 + 1.0)
            for out, _ in outputs:  # a damaged payload's checksum stays wrong (header edits)
                assert out == data or (out[12:14] == b"\x86\xdd" and decode_packet_v6(out[14:]))
        assert stage.stats.handler_errors == 0, (name, stage.stats.reasons)  # no box bug on IPv6
        assert stage.stats.decoded > 100, (name, stage.stats)
