"""Flow identity and 32-bit sequence arithmetic shared by every stateful middlebox.

Packets are of either family (testbed.wire's Packet for IPv4, Ipv6Packet for IPv6): both have
`src`, `dst` and `tcp`, which is all the flow identity needs; addresses are the codec's text
(compressed IPv6). A middlebox keys its per-flow state by the 4-tuple normalized by direction, so that both
directions of one TCP connection (one MPTCP subflow) land on the same entry without the
middlebox having to guess which end is which from addresses: `Direction` already says who
initiated. Sequence numbers wrap at 2**32; every comparison and offset here is modular, and
`SeqUnwrapper` turns a wrapping stream position into a plain integer when state must be sorted.
"""

from __future__ import annotations

from typing import NamedTuple

from middleboxes.contract import Direction
from testbed.wire.ipv6 import IPV6_HEADER_LENGTH, Ipv6Packet
from testbed.wire.types import Packet

SEQ_MODULUS = 1 << 32
SEQ_MASK = SEQ_MODULUS - 1
_HALF = 1 << 31


def seq_add(seq: int, delta: int) -> int:
    """seq + delta modulo 2**32 (delta may be negative)."""
    return (seq + delta) & SEQ_MASK


def seq_diff(a: int, b: int) -> int:
    """The signed distance a - b in sequence space, in [-2**31, 2**31)."""
    return ((a - b + _HALF) & SEQ_MASK) - _HALF


def seq_lt(a: int, b: int) -> bool:
    """a comes before b in sequence space (RFC 793 modular comparison)."""
    return seq_diff(a, b) < 0


class FlowKey(NamedTuple):
    """A TCP connection seen from its initiator: (client address, port, server address, port)."""

    client_addr: str
    client_port: int
    server_addr: str
    server_port: int

    def __str__(self) -> str:
        return (f"{host_port(self.client_addr, self.client_port)}>"
                f"{host_port(self.server_addr, self.server_port)}")

    def has_port(self, port: int) -> bool:
        return port in (self.client_port, self.server_port)


def host_port(address: str, port: int) -> str:
    """'10.0.0.1:80' or '[fd00::1]:80'."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def ip_and_tcp_header_bytes(packet: Packet | Ipv6Packet) -> int:
    """Bytes in front of the TCP options: the IP header (IPv6 with its extension headers) and
    the TCP header's fixed 20 bytes. For boxes that size segments to an MTU."""
    if type(packet) is Ipv6Packet:
        return IPV6_HEADER_LENGTH + sum(len(e.data) for e in packet.extensions) + 20
    return 40


def flow_key(packet: Packet, direction: Direction) -> FlowKey:
    """The normalized key: the same for both directions of one connection."""
    tcp = packet.tcp
    if direction is Direction.UPSTREAM:
        return FlowKey(packet.src, tcp.src_port, packet.dst, tcp.dst_port)
    return FlowKey(packet.dst, tcp.dst_port, packet.src, tcp.src_port)


def packet_flow_label(packet: Packet) -> str:
    """How a packet's own 4-tuple is written in change logs (as it arrived: src>dst)."""
    return f"{host_port(packet.src, packet.tcp.src_port)}>{host_port(packet.dst, packet.tcp.dst_port)}"


class SeqUnwrapper:
    """Maps 32-bit sequence numbers of one stream onto unbounded integers.

    Each value is placed at the integer nearest to the last reference point that is congruent
    to it modulo 2**32, so positions stay ordered across wrap-around (streams longer than
    4 GiB included) as long as consecutive values are less than 2**31 apart.
    """

    __slots__ = ("_reference",)

    def __init__(self, first_seq: int) -> None:
        self._reference = first_seq & SEQ_MASK

    def unwrap(self, seq: int) -> int:
        value = self._reference + seq_diff(seq, self._reference & SEQ_MASK)
        if value > self._reference:
            self._reference = value
        return value

    def peek(self, seq: int) -> int:
        """Like unwrap, without moving the reference point (for ACK-side lookups)."""
        return self._reference + seq_diff(seq, self._reference & SEQ_MASK)
