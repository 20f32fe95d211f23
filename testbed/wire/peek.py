"""Peeks into raw IPv4/TCP bytes, for the per-packet paths that cannot afford a decode.

The stack's receive filter and ACK coalescing (testbed.mptcp.driver) and the inline option
strip (testbed.inline.fastpath) look at every packet; decoding one into a Packet costs several
microseconds in CPython. These functions read the few bytes those paths need, with the offsets
written out here, next to the full decoder they must agree with (tests/unit/wire/test_peek.py
checks them against `decode_packet` on random packets from `encode_packet`).

None of them raises on short or malformed input: each documents the answer it gives instead
(None, False, or leaving the packet out), and that answer is always "not the simple case", so
the caller falls back to the full decoder, which raises WireError naming the field.
"""

from __future__ import annotations

import struct
from collections.abc import Collection, Container, Sequence

from testbed.wire.ethernet import ETHERNET_HEADER_LENGTH

_IPV4_NO_OPTIONS = 0x45  # version 4, header length 5 words
_IPPROTO_TCP = 6
_ACK_ONLY = 0x10
_NOP, _END, _TIMESTAMPS, _MPTCP = 1, 0, 8, 30
_DSS_SUBTYPE = 2
_DSS_MAPPING = 0x04
_DSS_DATA_FIN = 0x10
_NOP_NOP_TIMESTAMPS = b"\x01\x01\x08\x0a"
# (low four DSS flag bits, option length) of the DSS layouts without a mapping that the decoder
# accepts (testbed.wire.mptcp_options' layout table; tests/unit/fuzz checks the two agree)
DSS_ACK_ONLY_LAYOUTS = frozenset({(0, 4), (0, 6), (1, 8), (1, 10), (2, 4), (2, 6), (3, 12), (3, 14),
                                  (8, 4), (8, 6), (9, 8), (9, 10), (10, 4), (10, 6), (11, 12),
                                  (11, 14)})

# `packet[IPV4_TCP_FLOW_KEY]`: the addresses and ports of an IPv4 packet without options
# carrying TCP (what keep_ipv4_tcp_to keeps), as bytes -- equal for every packet of one
# direction of one connection. A slice, not a function: per-packet paths index with it at the
# cost of a slice, not of a call.
IPV4_TCP_FLOW_KEY = slice(12, 24)
# Where the TCP options start in an Ethernet frame whose IPv4 header has no options.
PLAIN_TCP_FRAME_OPTIONS_START = ETHERNET_HEADER_LENGTH + 20 + 20


def keep_ipv4_tcp_to(packets: Sequence[bytes], addresses: Collection[bytes],
                     ports: Container[int]) -> list[bytes]:
    """The packets that are IPv4 without options, carry TCP and are addressed to one of
    `addresses` (4-byte form) and a port in `ports`, in order. Anything shorter than the two
    minimal headers is left out."""
    return [packet for packet in packets
            if len(packet) >= 40 and packet[0] == _IPV4_NO_OPTIONS and packet[9] == _IPPROTO_TCP
            and packet[16:20] in addresses and ((packet[22] << 8) | packet[23]) in ports]


def _only_cumulative_options(packet: bytes, start: int, end: int) -> bool:
    """Whether the options in packet[start:end] are NOPs, timestamps and a DSS that carries a
    data ACK at most (no mapping, no DATA_FIN), up to an EOL; False when malformed."""
    index = start
    if end - start >= 12 and packet[start:start + 4] == _NOP_NOP_TIMESTAMPS:
        index += 12  # Linux's layout, as decode_options_at reads it
    while index < end:
        kind = packet[index]
        if kind == _NOP:
            index += 1
            continue
        if kind == _END:
            return True
        if index + 1 >= end:
            return False
        length = packet[index + 1]
        if length < 2 or index + length > end:
            return False
        if kind == _MPTCP:
            if length < 4 or packet[index + 2] >> 4 != _DSS_SUBTYPE:
                return False
            if packet[index + 3] & (_DSS_MAPPING | _DSS_DATA_FIN):
                return False
            if (packet[index + 3] & 0x0F, length) not in DSS_ACK_ONLY_LAYOUTS:
                return False
        elif kind != _TIMESTAMPS or length != 10:  # the decoder refuses other lengths
            return False
        index += length
    return True


def pure_ack_number(packet: bytes) -> int | None:
    """The acknowledgment number of an IPv4 packet that is a *pure cumulative ACK*: TCP flags
    exactly ACK, no payload, no options but NOP, EOL, timestamps and a DSS without mapping or
    DATA_FIN -- a packet that says nothing a later ACK of its flow would not say again. None
    for every other packet, including anything malformed or not a whole IPv4/TCP header.
    """
    try:  # the common case first, it is hot: IPv4 without options, a segment that is no ACK
        if packet[0] == _IPV4_NO_OPTIONS and packet[33] != _ACK_ONLY:
            return None
    except IndexError:  # shorter than that: no TCP header
        return None
    length = len(packet)
    if length < 40:
        return None
    if packet[0] == _IPV4_NO_OPTIONS:
        tcp = 20
    else:
        tcp = (packet[0] & 0x0F) * 4
        if packet[0] >> 4 != 4 or tcp < 20 or tcp + 20 > length or packet[tcp + 13] != _ACK_ONLY:
            return None
    if packet[9] != _IPPROTO_TCP or packet[6] & 0x3F or packet[7]:  # not TCP, or a fragment
        return None
    header_end = tcp + (packet[tcp + 12] >> 4) * 4
    if (((packet[2] << 8) | packet[3]) != header_end  # carries data, or is malformed
            or header_end > length or header_end < tcp + 20):
        return None
    if header_end > tcp + 20 and not _only_cumulative_options(packet, tcp + 20, header_end):
        return None
    return int.from_bytes(packet[tcp + 8:tcp + 12], "big")


# The fields plain_tcp_frame looks at, in one unpack: EtherType, IPv4 version/IHL, total
# length, flags/fragment offset (two bytes), protocol, TCP data offset byte, TCP flags, and the
# first four option bytes (Linux's NOP, NOP, timestamps starts so).
_unpack_plain_frame = struct.Struct("!12xHBxH2xBBxB22xBB6x4s").unpack_from
_unpack_plain_frame_no_options = struct.Struct("!12xHBxH2xBBxB22xBB").unpack_from


def plain_tcp_frame(frame: bytes) -> tuple[int, int, bool, bool] | None:
    """What an option-editing fast path needs of an Ethernet frame it may edit in place.

    For an Ethernet II frame carrying IPv4 without options, not a fragment, with flags DF or
    none, carrying TCP with reserved bits zero and lengths that agree (the headers re-encoding
    reproduces byte for byte): (end of the TCP options in the frame, TCP flags byte, whether
    the segment carries payload, whether the options are exactly Linux's NOP, NOP, timestamps).
    The options start at PLAIN_TCP_FRAME_OPTIONS_START. None for any other frame.
    """
    size = len(frame)
    if size >= 58:
        (ethertype, version_ihl, total, fragment_high, fragment_low, protocol, offset_byte, flags,
         first_options) = _unpack_plain_frame(frame)
    elif size >= 54:
        (ethertype, version_ihl, total, fragment_high, fragment_low, protocol, offset_byte,
         flags) = _unpack_plain_frame_no_options(frame)
        first_options = b""
    else:
        return None
    # literals, not the named constants above: this runs for every frame (IPv4 0x0800, version
    # 4 with 5 words 0x45, TCP 6, DF alone 0x40)
    if (ethertype != 0x0800 or version_ihl != 0x45 or protocol != 6 or fragment_low
            or (fragment_high != 0x40 and fragment_high) or total < 40 or 14 + total > size):
        return None
    header_length = (offset_byte >> 4) * 4
    if offset_byte & 0x0F or header_length < 20 or header_length > total - 20:
        return None
    return (34 + header_length, flags, total > 20 + header_length,
            header_length == 32 and first_options == b"\x01\x01\x08\x0a")
