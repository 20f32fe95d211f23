"""testbed.wire.peek and the raw-socket header encoder: byte-exact vectors, and agreement with
the full decoder (and encoder) on random packets; malformed input never raises."""

from __future__ import annotations

import socket

from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.wire import (
    ACK,
    FIN,
    PSH,
    SYN,
    Dss,
    EndOfOptions,
    NoOperation,
    Packet,
    Sack,
    TcpSegment,
    Timestamps,
    WireError,
    decode_packet,
    encode_packet,
)
from testbed.wire.ethernet import ETHERTYPE_IPV4, PLACEHOLDER_IPV4_HEADER
from testbed.wire.ipv4 import encode_headers_for_raw_socket
from testbed.wire.peek import (
    IPV4_TCP_FLOW_KEY,
    PLAIN_TCP_FRAME_OPTIONS_START,
    keep_ipv4_tcp_to,
    plain_tcp_frame,
    pure_ack_number,
)

from .strategies import ipv4_addresses, option_lists, packets, u16, u32

NOP = NoOperation()
ETHERNET = bytes.fromhex("020000000002020000000001") + ETHERTYPE_IPV4

# A Linux pure ACK of an MPTCP subflow: NOP, NOP, timestamps, DSS with a 32-bit data ACK.
# 10.0.0.1:40000 -> 10.0.0.2:5201, seq 1, ack 0x01020304, window 500, DF, TTL 64.
PURE_ACK = bytes.fromhex(
    "4500003c" "00004000" "4006" "26ba" "0a000001" "0a000002"  # IPv4, checksum 0x26ba
    "9c401451" "00000001" "01020304" "a010" "01f4" "4de7" "0000"  # TCP, 40-byte header
    "0101080a" "00000005" "00000007"  # NOP, NOP, timestamps 5, 7
    "1e082001" "0000002a"  # DSS: A flag, data ACK 42
)


def _packet(flags: int = ACK, payload: bytes = b"", options: list | None = None,
            dont_fragment: bool = True) -> Packet:
    return Packet(src="10.0.0.1", dst="10.0.0.2", dont_fragment=dont_fragment, tcp=TcpSegment(
        src_port=40000, dst_port=5201, seq=1, ack=0x01020304, flags=flags, window=500,
        options=[NOP, NOP, Timestamps(5, 7), Dss(data_ack=42, data_ack_64=False)]
        if options is None else options, payload=payload))


def _with_ip_options(packet: bytes) -> bytes:
    """`packet` with 4 bytes of IPv4 options (NOP, NOP, NOP, EOL): IHL 6 (checksum not fixed)."""
    total = len(packet) + 4
    return (bytes((0x46, packet[1])) + total.to_bytes(2, "big") + packet[4:20] + b"\x01\x01\x01\x00"
            + packet[20:])


# --- byte-exact vectors ------------------------------------------------------------------------

def test_vector_the_encoder_builds_the_linux_pure_ack() -> None:
    assert encode_packet(_packet()) == PURE_ACK


def test_vector_pure_ack_number_and_flow_key() -> None:
    assert pure_ack_number(PURE_ACK) == 0x01020304
    assert PURE_ACK[IPV4_TCP_FLOW_KEY] == bytes.fromhex("0a0000010a0000029c401451")


def test_vector_pure_ack_behind_ipv4_options() -> None:
    assert pure_ack_number(_with_ip_options(PURE_ACK)) == 0x01020304


def test_vector_segments_that_are_not_pure_acks() -> None:
    not_pure = [
        _packet(payload=b"x"),
        _packet(flags=ACK | PSH),
        _packet(flags=ACK | FIN),
        _packet(flags=SYN | ACK),
        _packet(options=[NOP, NOP, Sack(((1, 2),))]),  # SACK blocks must arrive
        _packet(options=[Dss(data_ack=1, dsn=2, subflow_seq=1, data_len=5)]),  # a mapping
        _packet(options=[Dss(data_ack=1, data_fin=True, dsn=2, subflow_seq=0, data_len=1)]),
    ]
    for packet in not_pure:
        assert pure_ack_number(encode_packet(packet)) is None, packet.tcp


def test_vector_fragments_and_other_protocols_are_not_pure_acks() -> None:
    more_fragments = PURE_ACK[:6] + b"\x20" + PURE_ACK[7:]
    offset = PURE_ACK[:7] + b"\x01" + PURE_ACK[8:]
    udp = PURE_ACK[:9] + b"\x11" + PURE_ACK[10:]
    for data in (more_fragments, offset, udp):
        assert pure_ack_number(data) is None


def test_vector_plain_tcp_frame() -> None:
    frame = ETHERNET + encode_packet(_packet(flags=ACK | PSH, payload=b"abc",
                                             options=[NOP, NOP, Timestamps(1, 2)]))
    assert plain_tcp_frame(frame) == (PLAIN_TCP_FRAME_OPTIONS_START + 12, ACK | PSH, True, True)
    assert plain_tcp_frame(ETHERNET + PURE_ACK) == (
        PLAIN_TCP_FRAME_OPTIONS_START + 20, ACK, False, False)
    bare = ETHERNET + encode_packet(_packet(options=[]))
    assert plain_tcp_frame(bare) == (PLAIN_TCP_FRAME_OPTIONS_START, ACK, False, False)


def test_vector_frames_the_option_fast_path_must_leave_alone() -> None:
    frame = ETHERNET + PURE_ACK
    refused = {
        "not IPv4": frame[:12] + b"\x86\xdd" + frame[14:],
        "IPv4 options": ETHERNET + _with_ip_options(PURE_ACK),
        "more fragments": frame[:20] + b"\x20" + frame[21:],
        "fragment offset": frame[:21] + b"\x01" + frame[22:],
        "not TCP": frame[:23] + b"\x11" + frame[24:],
        "TCP reserved bit": frame[:46] + b"\xa1" + frame[47:],
        "TCP header past the total length": frame[:46] + b"\xf0" + frame[47:],
        "total length past the frame": frame[:-1],
        "short": frame[:53],
    }
    for why, data in refused.items():
        assert plain_tcp_frame(data) is None, why
    # the NFQUEUE consumer frames bare IP packets with the placeholder header
    assert plain_tcp_frame(PLACEHOLDER_IPV4_HEADER + PURE_ACK) is not None


def test_vector_keep_ipv4_tcp_to() -> None:
    mine = {socket.inet_aton("10.0.0.2")}
    other_port = encode_packet(Packet("10.0.0.1", "10.0.0.2", TcpSegment(1, 22, 0, 0, ACK, 0)))
    other_host = encode_packet(Packet("10.0.0.1", "10.0.0.3", TcpSegment(1, 5201, 0, 0, ACK, 0)))
    udp = PURE_ACK[:9] + b"\x11" + PURE_ACK[10:]
    batch = [PURE_ACK, other_port, b"", PURE_ACK[:39], other_host, udp,
             _with_ip_options(PURE_ACK), PURE_ACK]
    assert keep_ipv4_tcp_to(batch, mine, {5201}) == [PURE_ACK, PURE_ACK]


def test_vector_raw_socket_headers_leave_length_and_checksum_to_the_kernel() -> None:
    headers = encode_headers_for_raw_socket(_packet(), socket.inet_aton("10.0.0.1"),
                                            socket.inet_aton("10.0.0.2"))
    assert headers == PURE_ACK[:2] + b"\x00\x00" + PURE_ACK[4:10] + b"\x00\x00" + PURE_ACK[12:]


def test_raw_socket_headers_reject_out_of_range_fields() -> None:
    packet = _packet()
    packet.ttl = 256
    try:
        encode_headers_for_raw_socket(packet, bytes(4), bytes(4))
    except WireError as error:
        assert error.field == "ip"
    else:
        raise AssertionError("a TTL of 256 was encoded")


# --- agreement with the full codec on random packets -----------------------------------------

def _expected_pure_ack(packet: Packet) -> int | None:
    """What pure_ack_number must say, from the decoded packet."""
    tcp = packet.tcp
    if tcp.flags != ACK or tcp.payload:
        return None
    for option in tcp.options:
        if type(option) is EndOfOptions:
            break
        if type(option) in (NoOperation, Timestamps):
            continue
        if type(option) is Dss and option.dsn is None and not option.data_fin:
            continue
        return None
    return tcp.ack


ack_biased_segments = st.builds(
    TcpSegment, src_port=u16, dst_port=u16, seq=u32, ack=u32,
    flags=st.sampled_from([ACK, ACK, ACK | PSH, ACK | FIN, SYN]) | st.integers(0, 255),
    window=u16, options=option_lists() | st.builds(
        lambda ts, dss: [NOP, NOP, ts, dss],
        st.builds(Timestamps, u32, u32), st.builds(Dss, data_ack=u32, data_ack_64=st.just(False))),
    payload=st.just(b"") | st.binary(max_size=40))
ack_biased_packets = st.builds(Packet, src=ipv4_addresses, dst=ipv4_addresses,
                               tcp=ack_biased_segments, dont_fragment=st.booleans())


@settings(max_examples=300)
@given(ack_biased_packets)
def test_pure_ack_number_agrees_with_the_decoder(packet: Packet) -> None:
    data = encode_packet(packet)
    decoded = decode_packet(data)
    assert pure_ack_number(data) == _expected_pure_ack(decoded)
    assert pure_ack_number(_with_ip_options(data)) == _expected_pure_ack(decoded)
    assert data[IPV4_TCP_FLOW_KEY] == (socket.inet_aton(decoded.src) + socket.inet_aton(decoded.dst)
                                       + decoded.tcp.src_port.to_bytes(2, "big")
                                       + decoded.tcp.dst_port.to_bytes(2, "big"))


@settings(max_examples=200)
@given(packets)
def test_plain_tcp_frame_agrees_with_the_decoder(packet: Packet) -> None:
    data = encode_packet(packet)
    decoded = decode_packet(data)
    options_length = len(data) - 40 - len(decoded.tcp.payload)
    expected_linux = options_length == 12 and [type(option) for option in decoded.tcp.options] == [
        NoOperation, NoOperation, Timestamps]
    assert plain_tcp_frame(ETHERNET + data) == (
        PLAIN_TCP_FRAME_OPTIONS_START + options_length, decoded.tcp.flags,
        bool(decoded.tcp.payload), expected_linux)


@settings(max_examples=200)
@given(st.lists(packets, max_size=6), st.sets(ipv4_addresses, max_size=3),
       st.sets(u16, max_size=3))
def test_keep_ipv4_tcp_to_agrees_with_the_decoder(batch: list[Packet], addresses: set[str],
                                                  ports: set[int]) -> None:
    encoded = [encode_packet(packet) for packet in batch]
    kept = keep_ipv4_tcp_to(encoded, {socket.inet_aton(a) for a in addresses}, ports)
    assert kept == [data for data in encoded
                    if decode_packet(data).dst in addresses and decode_packet(data).tcp.dst_port in ports]


@settings(max_examples=200)
@given(packets)
def test_raw_socket_headers_completed_by_the_kernel_are_the_encoded_packet(packet: Packet) -> None:
    """What the kernel fills in (total length, IPv4 checksum) is all that differs."""
    data = encode_packet(packet)
    headers = encode_headers_for_raw_socket(packet, socket.inet_aton(packet.src),
                                            socket.inet_aton(packet.dst))
    completed = headers[:2] + data[2:4] + headers[4:10] + data[10:12] + headers[12:]
    assert completed + packet.tcp.payload == data


# --- malformed and short input never raises ----------------------------------------------------

@settings(max_examples=300)
@given(st.binary(max_size=100))
def test_peeks_never_raise_on_arbitrary_bytes(data: bytes) -> None:
    pure_ack_number(data)
    plain_tcp_frame(data)
    plain_tcp_frame(ETHERNET + data)
    keep_ipv4_tcp_to([data], {bytes(4)}, {0})
    patched = b"\x45" + data[1:]  # past the first check: the rest is random
    pure_ack_number(patched)
    plain_tcp_frame(ETHERNET + patched)


@settings(max_examples=100)
@given(ack_biased_packets)
def test_a_truncated_packet_is_never_a_pure_ack(packet: Packet) -> None:
    data = encode_packet(packet)
    for end in range(len(data)):
        truncated = data[:end]
        assert pure_ack_number(truncated) is None
        assert plain_tcp_frame(ETHERNET + truncated) is None
