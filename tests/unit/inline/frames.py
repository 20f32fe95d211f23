"""Real Ethernet frames for the inline tests, built with the project codec."""

from __future__ import annotations

from testbed.wire import ACK, PSH, Packet, TcpSegment, Timestamps, encode_packet

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
