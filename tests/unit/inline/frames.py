"""Real Ethernet frames for the inline tests, built with the project codec."""

from __future__ import annotations

import ipaddress

from testbed.wire import (
    ACK,
    PSH,
    Ipv6Extension,
    Ipv6Packet,
    Packet,
    TcpSegment,
    Timestamps,
    encode_packet,
    encode_packet_v6,
)

CLIENT_MAC = bytes.fromhex("020000000001")
SERVER_MAC = bytes.fromhex("020000000002")
ETH_IPV4 = b"\x08\x00"


def tcp_packet(payload: bytes = b"hello", seq: int = 1000, src: str = "10.99.0.1",
               dst: str = "10.99.0.2") -> Packet:
    return Packet(src=src, dst=dst, tcp=TcpSegment(
        src_port=40000, dst_port=5201, seq=seq, ack=1, flags=ACK | PSH, window=500,
        options=[Timestamps(tsval=1, tsecr=2)], payload=payload))


def tcp_frame(packet: Packet | None = None, upstream: bool = True) -> bytes:
    header = (SERVER_MAC + CLIENT_MAC) if upstream else (CLIENT_MAC + SERVER_MAC)
    return header + ETH_IPV4 + encode_packet(packet or tcp_packet())


def arp_frame() -> bytes:
    """A broadcast ARP request for 10.99.0.2 from 10.99.0.1."""
    body = (bytes.fromhex("0001080006040001") + CLIENT_MAC + bytes([10, 99, 0, 1])
            + bytes(6) + bytes([10, 99, 0, 2]))
    return b"\xff" * 6 + CLIENT_MAC + b"\x08\x06" + body


ETH_IPV6 = b"\x86\xdd"


def tcp_packet_v6(payload: bytes = b"hello", seq: int = 1000, src: str = "fd00:99::1",
                  dst: str = "fd00:99::2", extensions: tuple[Ipv6Extension, ...] = ()) -> Ipv6Packet:
    return Ipv6Packet(src=src, dst=dst, extensions=extensions, tcp=TcpSegment(
        src_port=40000, dst_port=5201, seq=seq, ack=1, flags=ACK | PSH, window=500,
        options=[Timestamps(tsval=1, tsecr=2)], payload=payload))


def tcp_frame_v6(packet: Ipv6Packet | None = None, upstream: bool = True) -> bytes:
    header = (SERVER_MAC + CLIENT_MAC) if upstream else (CLIENT_MAC + SERVER_MAC)
    return header + ETH_IPV6 + encode_packet_v6(packet or tcp_packet_v6())


def neighbour_solicitation_frame(target: str, source: str = "fd00:99::1") -> bytes:
    """A neighbour solicitation for `target` from `source` (checksum left zero: not checked)."""
    target_bytes = ipaddress.IPv6Address(target).packed
    multicast = bytes.fromhex("ff0200000000000000000001ff") + target_bytes[13:]
    body = bytes((135, 0, 0, 0, 0, 0, 0, 0)) + target_bytes + bytes((1, 1)) + CLIENT_MAC
    ip = (bytes.fromhex("60000000") + len(body).to_bytes(2, "big") + bytes((58, 255))
          + ipaddress.IPv6Address(source).packed + multicast)
    return bytes.fromhex("3333ff") + target_bytes[13:] + CLIENT_MAC + ETH_IPV6 + ip + body
