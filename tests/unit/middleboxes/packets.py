"""Packet builders for middlebox tests: a client/server pair and a small MPTCP conversation."""

from __future__ import annotations

import dataclasses
import ipaddress
import random
from typing import Any

from middleboxes.contract import Direction
from middleboxes.registry import build_middlebox
from testbed.wire.ipv6 import Ipv6Packet
from testbed.wire.types import (
    ACK,
    FIN,
    PSH,
    SYN,
    AddAddr,
    Dss,
    MaximumSegmentSize,
    MpCapable,
    MpJoinAck,
    MpJoinSyn,
    MpJoinSynAck,
    NoOperation,
    Packet,
    SackPermitted,
    TcpOption,
    TcpSegment,
    Timestamps,
    WindowScale,
)

CLIENT = "10.0.0.1"
SERVER = "10.0.1.1"
CLIENT_PORT = 40000
SERVER_PORT = 5201
UP = Direction.UPSTREAM
DOWN = Direction.DOWNSTREAM


def packet(direction: Direction = UP, *, seq: int = 1000, ack: int = 0, flags: int = ACK,
           payload: bytes = b"", options: list[TcpOption] | None = None,
           client: str = CLIENT, client_port: int = CLIENT_PORT, server: str = SERVER,
           server_port: int = SERVER_PORT, window: int = 65535, ident: int = 7) -> Packet:
    """A segment of the client<->server connection travelling in `direction`."""
    if direction is UP:
        src, dst, sport, dport = client, server, client_port, server_port
    else:
        src, dst, sport, dport = server, client, server_port, client_port
    return Packet(src=src, dst=dst, ident=ident,
                  tcp=TcpSegment(src_port=sport, dst_port=dport, seq=seq, ack=ack, flags=flags,
                                 window=window, options=list(options or []), payload=payload))


def build(name: str, seed: int = 1, **params: Any) -> Any:
    return build_middlebox(name, params, random.Random(seed))


SYN_OPTIONS: list[TcpOption] = [MaximumSegmentSize(1460), SackPermitted(),
                                 Timestamps(100, 0), NoOperation(), WindowScale(7)]

C_ISN, S_ISN = 1_000_000, 2_000_000
C_KEY, S_KEY = 0x1111222233334444, 0x5555666677778888


def mptcp_conversation() -> list[tuple[Packet, Direction]]:
    """Handshake with MP_CAPABLE, first data both ways, ADD_ADDR, DATA_FIN, an MP_JOIN."""
    mss = MaximumSegmentSize(1460)
    ts = Timestamps(200, 100)
    return [
        (packet(UP, seq=C_ISN, flags=SYN, options=[*SYN_OPTIONS, MpCapable()]), UP),
        (packet(DOWN, seq=S_ISN, ack=C_ISN + 1, flags=SYN | ACK,
                options=[mss, SackPermitted(), ts, NoOperation(), WindowScale(7),
                         MpCapable(sender_key=S_KEY)]), DOWN),
        (packet(UP, seq=C_ISN + 1, ack=S_ISN + 1,
                options=[ts, MpCapable(sender_key=C_KEY, receiver_key=S_KEY)]), UP),
        (packet(UP, seq=C_ISN + 1, ack=S_ISN + 1, flags=ACK | PSH, payload=b"A" * 1000,
                options=[ts, MpCapable(sender_key=C_KEY, receiver_key=S_KEY, data_len=1000)]),
         UP),
        (packet(UP, seq=C_ISN + 1001, ack=S_ISN + 1, flags=ACK, payload=b"B" * 1400,
                options=[ts, Dss(data_ack=5000, dsn=9001, subflow_seq=1001, data_len=1400)]),
         UP),
        (packet(DOWN, seq=S_ISN + 1, ack=C_ISN + 2401, payload=b"C" * 300,
                options=[ts, Dss(data_ack=10401, dsn=5000, subflow_seq=1, data_len=300)]),
         DOWN),
        (packet(DOWN, seq=S_ISN + 301, ack=C_ISN + 2401,
                options=[AddAddr(address_id=1, address="10.0.2.1", hmac=0x0102030405060708)]),
         DOWN),
        (packet(UP, seq=C_ISN + 2401, ack=S_ISN + 301,
                options=[AddAddr(address_id=1, address="10.0.2.1", echo=True)]), UP),
        (packet(UP, seq=C_ISN + 2401, ack=S_ISN + 301, flags=ACK | FIN,
                options=[Dss(data_ack=5300, dsn=10401, subflow_seq=0, data_len=1,
                             data_fin=True)]), UP),
        (packet(UP, seq=3_000_000, flags=SYN, client_port=40001,
                options=[mss, SackPermitted(), MpJoinSyn(False, 2, 0xABCDEF01, 0x12345678)]),
         UP),
        (packet(DOWN, seq=4_000_000, ack=3_000_001, flags=SYN | ACK, client_port=40001,
                options=[mss, SackPermitted(),
                         MpJoinSynAck(False, 0, 0x0102030405060708, 0x9ABCDEF0)]), DOWN),
        (packet(UP, seq=3_000_001, ack=4_000_001, client_port=40001,
                options=[MpJoinAck(bytes(range(20)))]), UP),
    ]


def ipv6_of(address: str) -> str:
    """The IPv6 address the IPv6 tests use for an IPv4 one: 10.0.0.1 -> fd00::10:0:0:1."""
    return str(ipaddress.IPv6Address("fd00::" + address.replace(".", ":")))


def as_ipv6(packet: Packet) -> Ipv6Packet:
    """The same TCP segment in an IPv6 packet (addresses mapped by `ipv6_of`)."""
    return Ipv6Packet(src=ipv6_of(packet.src), dst=ipv6_of(packet.dst),
                      tcp=dataclasses.replace(packet.tcp, options=list(packet.tcp.options)),
                      hop_limit=packet.ttl, traffic_class=packet.tos)


def mptcp_conversation_v6() -> list[tuple[Ipv6Packet, Direction]]:
    """`mptcp_conversation` over IPv6 (the options, ADD_ADDR's IPv4 address included, as is)."""
    return [(as_ipv6(packet), direction) for packet, direction in mptcp_conversation()]
