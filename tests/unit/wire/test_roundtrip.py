"""Property tests: value -> bytes -> value is the identity for options, option lists, TCP
segments and IPv4 packets; bytes that decode re-encode to a fixpoint."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.wire import (
    EndOfOptions,
    Packet,
    TcpSegment,
    WireError,
    decode_mptcp,
    decode_options,
    decode_packet,
    decode_tcp,
    encode_mptcp,
    encode_options,
    encode_packet,
    encode_tcp,
    encoded_length,
    options_length,
    tcp_checksum,
    verify_checksums,
)
from testbed.wire.tcp import verify_tcp_checksum
from tests.unit.wire.strategies import (
    mptcp_options,
    option_lists,
    packets,
    segments,
    tcp_options,
)


@given(mptcp_options)
def test_mptcp_option_roundtrip(option: object) -> None:
    raw = encode_mptcp(option)
    assert raw[0] == 30
    assert raw[1] == len(raw) == encoded_length(option)
    assert decode_mptcp(raw) == option


@given(tcp_options)
def test_single_option_roundtrip_and_length(option: object) -> None:
    raw = encode_options([option])
    assert len(raw) % 4 == 0
    assert len(raw) - encoded_length(option) in range(4)
    decoded = decode_options(raw)
    assert decoded[0] == option
    assert all(type(extra) is EndOfOptions for extra in decoded[1:])


def _expected_after_roundtrip(options: list) -> list:
    """Padding zeros decode as one EOL when the list does not end on a 4-byte boundary."""
    unpadded = sum(encoded_length(option) for option in options)
    return [*options, EndOfOptions()] if unpadded % 4 else options


@given(option_lists())
def test_option_list_roundtrip(options: list) -> None:
    raw = encode_options(options)
    assert len(raw) == options_length(options) <= 40
    assert decode_options(raw) == _expected_after_roundtrip(options)


@given(option_lists())
def test_explicit_trailing_eol_roundtrips(options: list) -> None:
    if options_length([*options, EndOfOptions()]) > 40:
        return
    with_eol = [*options, EndOfOptions()]
    assert decode_options(encode_options(with_eol)) == with_eol


def _normalized(segment: TcpSegment) -> TcpSegment:
    return dataclasses.replace(segment, options=_expected_after_roundtrip(list(segment.options)))


@given(segments, st.sampled_from([("10.0.0.1", "10.0.0.2"), ("2001:db8::1", "2001:db8::2")]))
def test_tcp_segment_roundtrip(segment: TcpSegment, addresses: tuple[str, str]) -> None:
    src, dst = addresses
    raw = encode_tcp(segment, src, dst)
    assert verify_tcp_checksum(src, dst, raw)
    assert tcp_checksum(src, dst, raw) == 0
    decoded = decode_tcp(raw)
    assert decoded.checksum == int.from_bytes(raw[16:18], "big")
    decoded.checksum = None
    assert decoded == _normalized(segment)


@given(segments)
def test_forced_checksum_is_written_verbatim(segment: TcpSegment) -> None:
    good = encode_tcp(segment, "10.0.0.1", "10.0.0.2")
    bad_value = int.from_bytes(good[16:18], "big") ^ 0x0101
    bad = encode_tcp(segment, "10.0.0.1", "10.0.0.2", checksum=bad_value)
    assert bad[:16] == good[:16] and bad[18:] == good[18:]
    assert not verify_tcp_checksum("10.0.0.1", "10.0.0.2", bad)
    assert decode_tcp(bad).checksum == bad_value


@settings(max_examples=200)
@given(packets)
def test_packet_roundtrip(packet: Packet) -> None:
    raw = encode_packet(packet)
    assert verify_checksums(raw)
    assert int.from_bytes(raw[2:4], "big") == len(raw)
    decoded = decode_packet(raw)
    assert decoded.tcp.checksum is not None
    decoded.tcp.checksum = None
    expected = dataclasses.replace(packet, tcp=_normalized(packet.tcp))
    assert decoded == expected
    assert encode_packet(decoded) == raw


@given(packets, st.binary(min_size=1, max_size=30))
def test_trailing_link_padding_is_ignored(packet: Packet, trailer: bytes) -> None:
    raw = encode_packet(packet)
    assert decode_packet(raw + trailer) == decode_packet(raw)
    assert verify_checksums(raw + trailer)


@given(st.binary(max_size=40))
def test_decodable_option_bytes_reach_a_fixpoint(raw: bytes) -> None:
    """Whatever decodes re-encodes to bytes that decode to the same values (canonical form)."""
    try:
        options = decode_options(raw)
    except WireError:
        return
    try:
        canonical = encode_options(options)
    except WireError as error:
        # Only a list that decoded from exactly 40 bytes can need more after canonical
        # padding, never: canonical forms are never longer than what was received.
        raise AssertionError(f"decoded options failed to re-encode: {error}") from error
    assert decode_options(canonical) == _strip_to_eol(options, canonical)


def _strip_to_eol(options: list, canonical: bytes) -> list:
    """Re-decoding yields the same list, plus an EOL when canonical padding added one."""
    if options and type(options[-1]) is EndOfOptions:
        return options
    unpadded = sum(encoded_length(option) for option in options)
    return [*options, EndOfOptions()] if unpadded % 4 else options
