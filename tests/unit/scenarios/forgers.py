"""Test-only middleboxes that attack the MPTCP handshakes and data, for the scenario tests."""

from __future__ import annotations

from dataclasses import replace

from middleboxes.contract import Direction, MiddleboxCounters
from testbed.wire.types import (
    ACK,
    SYN,
    MpCapable,
    MpFastclose,
    MpJoinAck,
    MpJoinSynAck,
    Packet,
    TcpSegment,
)


class _Box:
    name = "test-box"

    def __init__(self) -> None:
        self.counters = MiddleboxCounters()

    def next_deadline(self) -> float | None:
        return None

    def release(self, now: float) -> list[tuple[Packet, Direction]]:
        return []


class FlipPayloadByte(_Box):
    """Flips one byte of the `nth` upstream data segment (counting from 1), keeping its
    length, as a payload-editing ALG that fixes up the TCP checksum would."""

    name = "flip-payload-byte"

    def __init__(self, nth: int = 20, offset: int = 100) -> None:
        super().__init__()
        self.nth = nth
        self.offset = offset
        self.data_seen = 0
        self.flipped_seq: int | None = None

    def process(self, packet: Packet, direction: Direction, now: float) -> list[Packet]:
        self.counters.seen += 1
        payload = packet.tcp.payload
        if direction is Direction.UPSTREAM and payload and self.flipped_seq is None:
            self.data_seen += 1
            if self.data_seen == self.nth:
                index = min(self.offset, len(payload) - 1)
                packet.tcp.payload = (payload[:index] + bytes([payload[index] ^ 0xFF])
                                      + payload[index + 1:])
                self.flipped_seq = packet.tcp.seq
                self.counters.changed += 1
        return [packet]


class ForgeJoinHmac(_Box):
    """Replaces the HMAC of MP_JOIN: on the third ACK (upstream, checked by the server) or on
    the SYN/ACK (downstream, checked by the client)."""

    name = "forge-join-hmac"

    def __init__(self, where: str) -> None:
        super().__init__()
        if where not in ("ack", "synack"):
            raise ValueError(f"where must be 'ack' or 'synack', got {where!r}")
        self.where = where

    def process(self, packet: Packet, direction: Direction, now: float) -> list[Packet]:
        self.counters.seen += 1
        options = packet.tcp.options
        for index, option in enumerate(options):
            if self.where == "ack" and isinstance(option, MpJoinAck):
                forged = bytes(b ^ 0x5A for b in option.sender_hmac)
                options[index] = MpJoinAck(sender_hmac=forged)
                self.counters.changed += 1
            elif self.where == "synack" and isinstance(option, MpJoinSynAck):
                options[index] = replace(
                    option, sender_truncated_hmac=option.sender_truncated_hmac ^ 0xFFFF)
                self.counters.changed += 1
        return [packet]


class InjectFastclose(_Box):
    """Learns the server's key from the MP_CAPABLE SYN/ACK, then after the `after`-th upstream
    data segment injects an ACK towards the server carrying MP_FASTCLOSE with that key (or a
    wrong one), in-window (same sequence numbers as the data segment)."""

    name = "inject-fastclose"

    def __init__(self, *, correct_key: bool, after: int = 30) -> None:
        super().__init__()
        self.correct_key = correct_key
        self.after = after
        self.server_key: int | None = None
        self.data_seen = 0
        self.injected_key: int | None = None

    def process(self, packet: Packet, direction: Direction, now: float) -> list[Packet]:
        self.counters.seen += 1
        segment = packet.tcp
        if direction is Direction.DOWNSTREAM and segment.flags & SYN and segment.flags & ACK:
            capable = segment.find(MpCapable)
            if isinstance(capable, MpCapable) and capable.sender_key is not None:
                self.server_key = capable.sender_key
            return [packet]
        if direction is not Direction.UPSTREAM or not segment.payload:
            return [packet]
        self.data_seen += 1
        if self.data_seen != self.after or self.server_key is None:
            return [packet]
        key = self.server_key if self.correct_key else self.server_key ^ 0x0123456789ABCDEF
        self.injected_key = key
        forged = Packet(packet.src, packet.dst, TcpSegment(
            src_port=segment.src_port, dst_port=segment.dst_port,
            seq=(segment.seq + len(segment.payload)) & 0xFFFFFFFF, ack=segment.ack,
            flags=ACK, window=segment.window, options=[MpFastclose(receiver_key=key)]))
        self.counters.injected += 1
        return [packet, forged]
