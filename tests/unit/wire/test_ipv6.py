"""The IPv6 walk on built packets: what Linux did not emit in the capture (ESP, AH, no next
header, a TCP first fragment, a routing header with segments left), malformed chains, and
structure-aware fuzzing of the Linux vectors: only WireError escapes."""

from __future__ import annotations

import contextlib
import json
import socket
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.wire import (
    ACK,
    SYN,
    AddAddr,
    NoOperation,
    Packet,
    TcpSegment,
    WireError,
    decode_packet,
    encode_packet,
    tcp_checksum,
)
from testbed.wire.ipv6 import (
    NEXT_HEADER_AH,
    NEXT_HEADER_ESP,
    NEXT_HEADER_FRAGMENT,
    NEXT_HEADER_HOP_BY_HOP,
    NEXT_HEADER_NONE,
    NEXT_HEADER_ROUTING,
    Ipv6Extension,
    Ipv6Packet,
    decode_ip_packet,
    decode_ipv6,
    decode_packet_v6,
    encode_ip_packet,
    encode_packet_v6,
    final_destination,
    verify_checksums_v6,
)

SRC, DST, FINAL = "2001:db8::1", "2001:db8::2", "2001:db8:ffff::9"
HOP_BY_HOP = Ipv6Extension(NEXT_HEADER_HOP_BY_HOP, bytes((0, 0, 1, 4, 0, 0, 0, 0)))
DESTINATION = Ipv6Extension(60, bytes((0, 0, 1, 4, 0, 0, 0, 0)))
VECTORS = [bytes.fromhex(vector["hex"]) for vector in json.loads(
    (Path(__file__).parent / "vectors" / "ipv6_linux.json").read_text())["vectors"]]


def _segment(payload: bytes = b"hello") -> TcpSegment:
    return TcpSegment(40000, 5201, 1000, 2000, ACK, 65535,
                      [AddAddr(7, "2001:db8::7", 8080, 0x1122334455667788), NoOperation(),
                       NoOperation()], payload)


def _fixed_header(payload_length: int, next_header: int) -> bytes:
    return (bytes((0x60, 0, 0, 0)) + payload_length.to_bytes(2, "big")
            + bytes((next_header, 64)) + socket.inet_pton(socket.AF_INET6, SRC)
            + socket.inet_pton(socket.AF_INET6, DST))


def _srh(segments_left: int, final: str = FINAL) -> Ipv6Extension:
    """A type-4 routing header whose segment list[0] is the final destination."""
    segments = socket.inet_pton(socket.AF_INET6, final) + socket.inet_pton(socket.AF_INET6, DST)
    return Ipv6Extension(NEXT_HEADER_ROUTING, bytes((0, 4, 4, segments_left, 1, 0, 0, 0)) + segments)


def test_round_trip_with_every_extension_kind() -> None:
    fragment = Ipv6Extension(NEXT_HEADER_FRAGMENT, bytes((0, 0, 0, 0, 0xDE, 0xAD, 0xBE, 0xEF)))
    packet = Ipv6Packet(SRC, DST, _segment(), 17, 0xB8, 0xABCDE,
                        (HOP_BY_HOP, DESTINATION, _srh(0), fragment))
    raw = encode_packet_v6(packet)
    assert raw[6] == NEXT_HEADER_HOP_BY_HOP and raw[7] == 17
    again = decode_packet_v6(raw)
    assert [extension.kind for extension in again.extensions] == [0, 60, 43, 44]
    assert again.traffic_class == 0xB8 and again.flow_label == 0xABCDE
    again.tcp.checksum = None
    assert again.tcp == packet.tcp
    # equal but for each header's own next-header byte, which the encoder chains
    assert [extension.data[1:] for extension in again.extensions] == [
        extension.data[1:] for extension in packet.extensions]
    assert [extension.data[0] for extension in again.extensions] == [60, 43, 44, 6]
    assert verify_checksums_v6(raw)
    assert encode_packet_v6(decode_packet_v6(raw)) == raw


def test_atomic_fragment_carries_a_whole_segment() -> None:
    """Offset 0 and M clear (RFC 6946): the segment is whole, so it decodes."""
    fragment = Ipv6Extension(NEXT_HEADER_FRAGMENT, bytes(8))
    raw = encode_packet_v6(Ipv6Packet(SRC, DST, _segment(), extensions=(fragment,)))
    assert decode_packet_v6(raw).tcp.payload == b"hello"


def test_tcp_first_fragment_is_refused_with_the_reason() -> None:
    fragment = Ipv6Extension(NEXT_HEADER_FRAGMENT, bytes((0, 0, 0, 1, 0, 0, 0, 5)))
    raw = encode_packet_v6(Ipv6Packet(SRC, DST, _segment(), extensions=(fragment,)))
    header, _ = decode_ipv6(raw)
    assert header.stop_reason is None and header.upper_protocol == 6
    with pytest.raises(WireError, match="not whole") as error:
        decode_packet_v6(raw)
    assert error.value.field == "ip6.fragment"


def test_tcp_non_first_fragment_stops_the_walk() -> None:
    body = b"\x00" * 24
    fragment = bytes((6, 0, 0x05, 0xA8, 0, 0, 0, 5))  # offset 181 units = 1448 bytes
    raw = _fixed_header(len(fragment) + len(body), NEXT_HEADER_FRAGMENT) + fragment + body
    header, upper = decode_ipv6(raw)
    assert upper == b"" and header.upper_protocol == 6
    assert header.stop_reason is not None and "offset 1448" in header.stop_reason
    with pytest.raises(WireError, match="non-first fragment"):
        decode_packet_v6(raw)


@pytest.mark.parametrize(("next_header", "word"), [
    (NEXT_HEADER_ESP, "ESP"), (NEXT_HEADER_AH, "AH"), (NEXT_HEADER_NONE, "no next header"),
])
def test_walk_ends_at_esp_ah_and_no_next_header(next_header: int, word: str) -> None:
    after_options = bytes((next_header, 0, 1, 4, 0, 0, 0, 0))
    raw = _fixed_header(8 + 16, NEXT_HEADER_HOP_BY_HOP) + after_options + bytes(16)
    header, upper = decode_ipv6(raw)
    assert header.upper_protocol == next_header and upper == b""
    assert header.stop_reason is not None and word in header.stop_reason
    with pytest.raises(WireError, match=word):
        decode_packet_v6(raw)


def test_hop_by_hop_anywhere_but_first_is_malformed() -> None:
    destination = bytes((NEXT_HEADER_HOP_BY_HOP, 0, 1, 4, 0, 0, 0, 0))
    hop_by_hop = bytes((6, 0, 1, 4, 0, 0, 0, 0))
    raw = _fixed_header(16, 60) + destination + hop_by_hop
    with pytest.raises(WireError, match="right after the IPv6 header") as error:
        decode_ipv6(raw)
    assert error.value.field == "ip6.hop_by_hop"
    with pytest.raises(WireError, match="right after"):
        encode_packet_v6(Ipv6Packet(SRC, DST, _segment(), extensions=(DESTINATION, HOP_BY_HOP)))


@pytest.mark.parametrize(("raw", "field"), [
    (b"\x60" + bytes(30), "ip6.length"),
    (_fixed_header(0, 6)[:0] + bytes((0x40,)) + bytes(39), "ip6.version"),
    (_fixed_header(100, 6) + bytes(20), "ip6.payload_length"),
    (_fixed_header(0, NEXT_HEADER_HOP_BY_HOP), "ip6.payload_length"),  # jumbogram
    (_fixed_header(8, 60) + bytes((6, 1, 1, 4, 0, 0, 0, 0)), "ip6.destination_options.length"),
    (_fixed_header(1, NEXT_HEADER_ROUTING) + b"\x06", "ip6.routing.length"),
    (_fixed_header(4, NEXT_HEADER_FRAGMENT) + bytes(4), "ip6.fragment.length"),
])
def test_malformed_headers_name_the_field(raw: bytes, field: str) -> None:
    with pytest.raises(WireError) as error:
        decode_ipv6(raw)
    assert error.value.field == field


def test_trailing_link_padding_is_ignored() -> None:
    raw = encode_packet_v6(Ipv6Packet(SRC, DST, _segment()))
    assert decode_packet_v6(raw + bytes(6)) == decode_packet_v6(raw)
    assert verify_checksums_v6(raw + bytes(6))


def test_routing_header_with_segments_left_checksums_to_the_final_destination() -> None:
    """RFC 8200 8.1: in transit the pseudo-header holds the final destination (segment list[0]
    of an SRH), not the next hop in the destination field."""
    packet = Ipv6Packet(SRC, DST, _segment(), extensions=(_srh(1),))
    raw = encode_packet_v6(packet)
    assert final_destination(DST, packet.extensions) == FINAL
    _, tcp_bytes = decode_ipv6(raw)
    assert tcp_checksum(SRC, FINAL, tcp_bytes) == 0
    assert tcp_checksum(SRC, DST, tcp_bytes) != 0
    assert verify_checksums_v6(raw)
    # the same header at its last hop (segments left 0, destination = final) verifies too
    assert final_destination(DST, (_srh(0),)) == DST


def test_type_0_routing_header_final_destination_is_the_last_address() -> None:
    addresses = socket.inet_pton(socket.AF_INET6, "2001:db8::5") + socket.inet_pton(
        socket.AF_INET6, FINAL)
    routing = Ipv6Extension(NEXT_HEADER_ROUTING, bytes((6, 4, 0, 2, 0, 0, 0, 0)) + addresses)
    assert final_destination(DST, (routing,)) == FINAL


def test_encode_refuses_bad_values() -> None:
    with pytest.raises(WireError, match="flow_label"):
        encode_packet_v6(Ipv6Packet(SRC, DST, _segment(), flow_label=1 << 20))
    with pytest.raises(WireError, match="not IPv6"):
        encode_packet_v6(Ipv6Packet("10.0.0.1", DST, _segment()))
    with pytest.raises(WireError, match="length"):
        encode_packet_v6(Ipv6Packet(SRC, DST, _segment(),
                                    extensions=(Ipv6Extension(60, bytes(12)),)))
    with pytest.raises(WireError, match="not an extension"):
        encode_packet_v6(Ipv6Packet(SRC, DST, _segment(), extensions=(Ipv6Extension(6, bytes(8)),)))


def test_decode_ip_packet_dispatches_on_the_version() -> None:
    v4 = Packet("10.0.0.1", "10.0.0.2", TcpSegment(1, 2, 3, 4, SYN, 100))
    raw4 = encode_packet(v4)
    assert decode_ip_packet(raw4) == decode_packet(raw4)
    assert encode_ip_packet(decode_ip_packet(raw4)) == raw4
    raw6 = encode_packet_v6(Ipv6Packet(SRC, DST, _segment()))
    assert type(decode_ip_packet(raw6)) is Ipv6Packet
    assert encode_ip_packet(decode_ip_packet(raw6)) == raw6
    with pytest.raises(WireError, match="expected 4 or 6"):
        decode_ip_packet(b"\x50" + raw6[1:])
    with pytest.raises(WireError, match="empty"):
        decode_ip_packet(b"")


def test_ipv4_decoder_still_refuses_ipv6() -> None:
    raw6 = encode_packet_v6(Ipv6Packet(SRC, DST, _segment()))
    with pytest.raises(WireError, match="expected 4"):
        decode_packet(raw6)


def _mutations() -> st.SearchStrategy[bytes]:
    """A Linux vector with a few bytes overwritten (biased to the headers) or cut short."""
    def mutate(draw_index: int, edits: list[tuple[int, int]], cut: int | None) -> bytes:
        raw = bytearray(VECTORS[draw_index % len(VECTORS)])
        for position, value in edits:
            raw[position % min(len(raw), 120)] = value
        return bytes(raw[:cut] if cut is not None else raw)
    return st.builds(mutate, st.integers(0, 1000),
                     st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 255)), max_size=4),
                     st.none() | st.integers(0, 200))


@settings(max_examples=400, deadline=None)
@given(_mutations())
def test_mutated_linux_vectors_raise_only_wire_error(raw: bytes) -> None:
    with contextlib.suppress(WireError):
        header, upper = decode_ipv6(raw)
        assert len(upper) <= header.end - header.upper_offset
        assert header.upper_offset <= header.end <= len(raw)
    with contextlib.suppress(WireError):
        packet = decode_packet_v6(raw)
        encode_packet_v6(packet)
        verify_checksums_v6(raw)
