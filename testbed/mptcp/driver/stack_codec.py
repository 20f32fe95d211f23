"""The stack's Packet to bytes and back, for either family.

The stack has one packet type for both families (testbed.wire.types.Packet; an IPv6
subflow's addresses are IPv6 strings), so the family of a Packet is the family of its
addresses; this picks the codec by it. The driver's send path builds the headers itself
(packet_io); this is for the receive path and for tests that run a pair of hosts through
the codec.
"""

from __future__ import annotations

from testbed.mptcp.addresses import is_ipv6
from testbed.wire import decode_packet, decode_packet_v6, encode_packet, encode_packet_v6
from testbed.wire.errors import WireError
from testbed.wire.ipv6 import Ipv6Packet
from testbed.wire.types import Packet


def decode_stack_packet_v6(raw: bytes | bytearray | memoryview) -> Packet:
    """An IPv6+TCP packet as the stack's Packet (extension headers are walked and dropped)."""
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
