"""Applications on top of the bundled stack, packaged as simulator endpoints.

`HostDriver` wraps one `testbed.mptcp.host.MptcpHost` and the application using it, and has
the PacketEndpoint shape, so the simulator drives stack and application together: before each
`packets_to_send`, the host's events are handed to the application, which may write more data
or close (all in virtual time, nothing outside `now`).

`BulkSender` writes a payload and closes; `BulkReceiver` reads and hashes everything that
arrives, remembering whether any byte differed from what was sent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from testbed.mptcp import events as ev
from testbed.mptcp.errors import LocalProtocolError
from testbed.wire.types import Packet

# How much to hand to Connection.send in one call: large enough to keep the send buffer full,
# small enough not to copy the whole payload per call.
WRITE_CHUNK = 256 * 1024
# Bound on host/application ping-pong within one pump (events -> writes -> packets -> events).
MAX_EVENT_ROUNDS = 8


class Application(Protocol):
    def on_event(self, event: ev.Event, now: float) -> None: ...


class HostDriver:
    """A host plus its application, in the PacketEndpoint shape the simulator drives."""

    def __init__(self, host: Any, application: Application) -> None:
        self.host = host
        self.application = application

    def receive_packet(self, packet: Packet, now: float) -> None:
        self.host.receive_packet(packet, now)

    def packets_to_send(self, now: float) -> list[Packet]:
        # The application may react to events emitted while the host produced packets (for
        # example send-buffer space freed by the flush), so alternate until both are quiet.
        self.deliver_events(now)
        packets: list[Packet] = []
        for _ in range(MAX_EVENT_ROUNDS):
            packets.extend(self.host.packets_to_send(now))
            if not self.deliver_events(now):
                break
        return packets

    def get_timer(self) -> float | None:
        return self.host.get_timer()

    def handle_timer(self, now: float) -> None:
        self.host.handle_timer(now)

    def deliver_events(self, now: float) -> int:
        """Hand every pending host event to the application (which may act on the host);
        returns how many there were."""
        host, application = self.host, self.application
        delivered = 0
        while True:
            event = host.next_event()
            if event is None:
                return delivered
            application.on_event(event, now)
            delivered += 1


@dataclass
class EventLog:
    """What an application saw of its connection: the evidence behind an outcome class."""

    established_at: float | None = None
    closed_reason: str | None = None
    closed_at: float | None = None
    fallbacks: list[str] = field(default_factory=list)
    subflows_established: int = 0
    subflows_closed: list[str] = field(default_factory=list)
    refused_calls: list[str] = field(default_factory=list)  # API calls the stack refused
    other_connection_events: int = 0  # events of connections the application does not use

    def record(self, event: ev.Event, now: float) -> None:
        if isinstance(event, ev.ConnectionEstablished) and self.established_at is None:
            self.established_at = now
        elif isinstance(event, ev.ConnectionClosed) and self.closed_reason is None:
            self.closed_reason, self.closed_at = event.reason, now
        elif isinstance(event, ev.FallbackOccurred):
            self.fallbacks.append(event.kind)
        elif isinstance(event, ev.SubflowEstablished):
            self.subflows_established += 1
        elif isinstance(event, ev.SubflowClosed):
            self.subflows_closed.append(event.reason)

    def as_dict(self) -> dict[str, object]:
        return {
            "established_at": self.established_at, "closed_reason": self.closed_reason,
            "closed_at": self.closed_at, "fallbacks": list(self.fallbacks),
            "subflows_established": self.subflows_established,
            "subflows_closed": list(self.subflows_closed),
            "refused_calls": list(self.refused_calls),
            "other_connection_events": self.other_connection_events,
        }


class BulkSender:
    """Opens nothing itself: is given a connection, writes `payload` into it, then closes."""

    def __init__(self, payload: bytes, *, close_when_done: bool = True) -> None:
        self.payload = payload
        self._view = memoryview(payload)  # slices without copying: the stack copies what fits
        self.offset = 0
        self.connection: Any = None
        self.log = EventLog()
        self.close_when_done = close_when_done
        self.closed = False

    def attach(self, connection: Any) -> None:
        self.connection = connection

    def on_event(self, event: ev.Event, now: float) -> None:
        if event.connection is not self.connection:
            self.log.other_connection_events += 1
            return
        self.log.record(event, now)
        if isinstance(event, (ev.ConnectionEstablished, ev.SendBufferAvailable)):
            self.write_more()

    def write_more(self) -> None:
        """Fill the send buffer; close once the whole payload was accepted."""
        connection = self.connection
        if connection is None or self.closed or self.log.closed_reason is not None:
            return
        payload = self.payload
        try:
            while self.offset < len(payload):
                accepted = connection.send(self._view[self.offset:self.offset + WRITE_CHUNK])
                if not accepted:
                    return
                self.offset += accepted
            if self.close_when_done:
                self.closed = True
                connection.close()
        except LocalProtocolError as error:  # the connection died under us (reset, ...)
            self.log.refused_calls.append(str(error))


class BulkReceiver:
    """Accepts one connection, reads everything, hashes it, and checks each byte against the
    expected payload as it arrives so a corrupted byte is caught where it happened."""

    def __init__(self, expected: bytes, on_complete: Callable[[], None] | None = None) -> None:
        self.expected = expected
        self.received = 0
        self.hasher = hashlib.sha256()
        self._expected_view = memoryview(expected)
        self.first_mismatch: int | None = None
        self.end_of_data = False
        self.first_byte_at: float | None = None
        self.last_byte_at: float | None = None
        self.connection: Any = None
        self.log = EventLog()
        self._on_complete = on_complete

    def on_event(self, event: ev.Event, now: float) -> None:
        if isinstance(event, ev.ConnectionAccepted) and self.connection is None:
            self.connection = event.connection
        if event.connection is not self.connection:
            # Another connection on the port (e.g. an MP_JOIN whose option a middlebox
            # stripped arrives as a plain SYN): not the transfer under test.
            self.log.other_connection_events += 1
            return
        self.log.record(event, now)
        if isinstance(event, ev.ConnectionAccepted):
            return
        if isinstance(event, ev.DataReceived):
            self.read(event.connection, now)
        elif isinstance(event, ev.DataEndReceived):
            self.read(event.connection, now)
            self.end_of_data = True
            try:
                event.connection.close()
            except LocalProtocolError as error:  # already closed (reset, fastclose)
                self.log.refused_calls.append(str(error))

    def read(self, connection: Any, now: float) -> None:
        data = connection.receive()
        if not data:
            return
        if self.first_byte_at is None:
            self.first_byte_at = now
        self.last_byte_at = now
        start = self.received
        expected = self._expected_view[start:start + len(data)]
        if self.first_mismatch is None and data != expected:
            self.first_mismatch = start + first_difference(data, bytes(expected))
        self.hasher.update(data)
        self.received += len(data)

    @property
    def complete(self) -> bool:
        return self.end_of_data and self.received == len(self.expected)


def first_difference(got: bytes, want: bytes) -> int:
    """Index of the first differing byte (the shorter length when one is a prefix)."""
    for index, (got_byte, want_byte) in enumerate(zip(got, want, strict=False)):
        if got_byte != want_byte:
            return index
    return min(len(got), len(want))
