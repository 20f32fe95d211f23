"""The stack's Packet to bytes and back, for either family.

The stack has one packet type for both families (testbed.wire.types.Packet; an IPv6
subflow's addresses are IPv6 strings), so the family of a Packet is the family of its
addresses; this picks the codec by it. The driver's send path builds the headers itself
(packet_io); this is for the receive path and for tests that run a pair of hosts through
the codec.
"""

from __future__ import annotations

import socket

from testbed.mptcp.addresses import is_ipv6
from testbed.wire import decode_packet, decode_packet_v6, encode_packet, encode_packet_v6
from testbed.wire.errors import WireError
from testbed.wire.ipv6 import IPV6_HEADER_LENGTH, Ipv6Packet
from testbed.wire.tcp import decode_tcp_at
from testbed.wire.types import IPPROTO_TCP, Packet

# 16 address bytes -> the RFC 5952 text: a stack talks to a handful of addresses, and
# inet_ntop twice per packet is a measurable share of an ACK's decode (bounded all the same)
_ADDRESS_TEXT: dict[bytes, str] = {}
_ADDRESS_TEXT_LIMIT = 1024


def _address_text(raw: bytes) -> str:
    text = _ADDRESS_TEXT.get(raw)
    if text is None:
        if len(_ADDRESS_TEXT) >= _ADDRESS_TEXT_LIMIT:
            _ADDRESS_TEXT.clear()
        text = _ADDRESS_TEXT[raw] = socket.inet_ntop(socket.AF_INET6, raw)
    return text


def decode_stack_packet_v6(raw: bytes) -> Packet:
    """An IPv6+TCP packet as the stack's Packet. TCP right after the fixed header (what
    PacketIO keeps) is read here directly; anything else goes through the full decoder
    (extension headers walked and dropped, or the WireError naming the field)."""
    if len(raw) >= IPV6_HEADER_LENGTH and raw[0] >> 4 == 6 and raw[6] == IPPROTO_TCP:
        end = IPV6_HEADER_LENGTH + ((raw[4] << 8) | raw[5])
        if end <= len(raw):
            segment = decode_tcp_at(raw, IPV6_HEADER_LENGTH, end)
            return Packet(_address_text(raw[8:24]), _address_text(raw[24:40]), segment,
                          ttl=raw[7], tos=((raw[0] & 0x0F) << 4) | (raw[1] >> 4))
    decoded = decode_packet_v6(raw)
    return Packet(decoded.src, decoded.dst, decoded.tcp, ttl=decoded.hop_limit,
                  tos=decoded.traffic_class)


def decode_stack_packet(raw: bytes) -> Packet:
    """An IPv4 or IPv6 packet carrying TCP as the stack's Packet; WireError when it is none."""
    if not raw:
        raise WireError("ip.version", "empty packet")
    version = raw[0] >> 4
    if version == 4:
        return decode_packet(raw)
    if version == 6:
        return decode_stack_packet_v6(raw)
    raise WireError("ip.version", f"expected 4 or 6, got {version}")


def encode_stack_packet(packet: Packet) -> bytes:
    """The IPv4 or IPv6 bytes of one of the stack's packets, by its addresses' family."""
    if is_ipv6(packet.src) or is_ipv6(packet.dst):
        return encode_packet_v6(Ipv6Packet(packet.src, packet.dst, packet.tcp,
                                           hop_limit=packet.ttl, traffic_class=packet.tos))
    return encode_packet(packet)
