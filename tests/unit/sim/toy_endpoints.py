"""Test-only endpoints and middleboxes that prove the simulator on its own, without the stack."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from middleboxes.contract import Direction, MiddleboxCounters
from testbed.wire.types import ACK, PSH, Packet, TcpSegment


def data_packet(src: str, dst: str, seq: int, payload_size: int, src_port: int = 1000,
                dst_port: int = 2000) -> Packet:
    return Packet(src=src, dst=dst, tcp=TcpSegment(
        src_port=src_port, dst_port=dst_port, seq=seq, ack=0, flags=ACK | PSH, window=65535,
        payload=bytes(payload_size)))


@dataclass
class Sink:
    """Records (arrival time, packet) and never sends."""

    received: list[tuple[float, Packet]] = field(default_factory=list)

    def receive_packet(self, packet: Packet, now: float) -> None:
        self.received.append((now, packet))

    def packets_to_send(self, now: float) -> list[Packet]:
        return []

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        raise AssertionError("a sink has no timer")


@dataclass
class Burst:
    """Hands out a fixed list of packets on its first pump, then records what comes back."""

    outbox: list[Packet]
    received: list[tuple[float, Packet]] = field(default_factory=list)

    def receive_packet(self, packet: Packet, now: float) -> None:
        self.received.append((now, packet))

    def packets_to_send(self, now: float) -> list[Packet]:
        out, self.outbox = self.outbox, []
        return out

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        raise AssertionError("a burst has no timer")


@dataclass
class PacedSender:
    """Sends `count` packets, one every `interval` seconds, driven only by its timer."""

    src: str
    dst: str
    count: int
    interval: float
    payload_size: int = 1000
    sent: int = 0
    _next: float = 0.0
    _due: bool = True

    def receive_packet(self, packet: Packet, now: float) -> None:
        pass

    def packets_to_send(self, now: float) -> list[Packet]:
        if not self._due or self.sent >= self.count:
            return []
        self._due = False
        packet = data_packet(self.src, self.dst, self.sent, self.payload_size)
        self.sent += 1
        self._next = now + self.interval
        return [packet]

    def get_timer(self) -> float | None:
        return None if self.sent >= self.count or self._due else self._next

    def handle_timer(self, now: float) -> None:
        self._due = True


@dataclass
class Echo:
    """Answers each packet with a copy whose addresses and ports are swapped."""

    echoed: int = 0
    _outbox: list[Packet] = field(default_factory=list)

    def receive_packet(self, packet: Packet, now: float) -> None:
        segment = packet.tcp
        self._outbox.append(Packet(src=packet.dst, dst=packet.src, tcp=TcpSegment(
            src_port=segment.dst_port, dst_port=segment.src_port, seq=segment.seq, ack=0,
            flags=segment.flags, window=segment.window, payload=segment.payload)))
        self.echoed += 1

    def packets_to_send(self, now: float) -> list[Packet]:
        out, self._outbox = self._outbox, []
        return out

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        raise AssertionError("echo has no timer")


class StuckTimer(Sink):
    """A broken endpoint whose timer never moves on."""

    def get_timer(self) -> float | None:
        return 1.0

    def handle_timer(self, now: float) -> None:
        pass


class DropMatching:
    """Middlebox: drops packets matching a predicate, in one direction or both."""

    def __init__(self, predicate: Callable[[Packet], bool], direction: Direction | None = None,
                 name: str = "drop-matching") -> None:
        self.name = name
        self.counters = MiddleboxCounters()
        self.predicate = predicate
        self.direction = direction
        self.seen_directions: list[Direction] = []

    def process(self, packet: Packet, direction: Direction, now: float) -> list[Packet]:
        self.counters.seen += 1
        self.seen_directions.append(direction)
        if (self.direction is None or direction is self.direction) and self.predicate(packet):
            self.counters.dropped += 1
            return []
        return [packet]

    def next_deadline(self) -> float | None:
        return None

    def release(self, now: float) -> list[tuple[Packet, Direction]]:
        return []


class HoldFor:
    """Middlebox: holds every packet for `hold` seconds, then releases it (a delay line)."""

    def __init__(self, hold: float, name: str = "hold") -> None:
        self.name = name
        self.counters = MiddleboxCounters()
        self.hold = hold
        self._held: list[tuple[float, Packet, Direction]] = []

    def process(self, packet: Packet, direction: Direction, now: float) -> list[Packet]:
        self.counters.seen += 1
        self._held.append((now + self.hold, packet, direction))
        return []

    def next_deadline(self) -> float | None:
        return min((due for due, _, _ in self._held), default=None)

    def release(self, now: float) -> list[tuple[Packet, Direction]]:
        due = [(p, d) for t, p, d in self._held if t <= now]
        self._held = [(t, p, d) for t, p, d in self._held if t > now]
        return due


class MarkPayload:
    """Middlebox: overwrites the first payload byte in place (proves packets are copied)."""

    def __init__(self, name: str = "mark") -> None:
        self.name = name
        self.counters = MiddleboxCounters()

    def process(self, packet: Packet, direction: Direction, now: float) -> list[Packet]:
        self.counters.seen += 1
        if packet.tcp.payload:
            packet.tcp.payload = b"\xff" + packet.tcp.payload[1:]
            self.counters.changed += 1
        return [packet]

    def next_deadline(self) -> float | None:
        return None

    def release(self, now: float) -> list[tuple[Packet, Direction]]:
        return []
