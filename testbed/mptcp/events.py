"""Events a host reports to its application through `MptcpHost.next_event()`.

Data itself is not carried in events: `DataReceived` says a connection became readable and
how many new in-order bytes arrived; the application pulls them with `Connection.receive`.
This keeps one copy of received data (in the connection) and lets the receive window follow
what the application actually consumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from testbed.mptcp.subflow_context import SubflowContext


@dataclass(slots=True)
class Event:
    # the testbed.mptcp.connection.Connection the event is about (typed loosely: the
    # connection module imports this one, and events must not import it back)
    connection: Any


@dataclass(slots=True)
class ConnectionAccepted(Event):
    """A passive connection finished its handshake on a listening port."""


@dataclass(slots=True)
class ConnectionEstablished(Event):
    """The connection can carry data (both roles)."""


@dataclass(slots=True)
class DataReceived(Event):
    """The connection became readable: its receive buffer went from empty to holding
    `length` bytes. Edge-triggered: no further DataReceived arrives until the application
    has drained the buffer with `connection.receive()` (read everything on each event)."""

    length: int


@dataclass(slots=True)
class DataEndReceived(Event):
    """The peer closed its sending direction (DATA_FIN, or FIN after fallback)."""


@dataclass(slots=True)
class SendBufferAvailable(Event):
    """Send buffer space was freed after a `send()` could not take everything."""

    free_bytes: int


@dataclass(slots=True)
class ConnectionClosed(Event):
    """The connection is gone. reason: closed, reset, fastclose, timeout, refused."""

    reason: str


@dataclass(slots=True)
class SubflowEstablished(Event):
    subflow: SubflowContext


@dataclass(slots=True)
class SubflowClosed(Event):
    subflow: SubflowContext
    reason: str


@dataclass(slots=True)
class FallbackOccurred(Event):
    """The connection fell back to plain TCP: kind is fallback-syn, fallback-infinite-map or
    mp-fail."""

    kind: str


@dataclass(slots=True)
class AddressAnnounced(Event):
    """The peer announced an address (ADD_ADDR)."""

    address_id: int
    address: str
    port: int | None


@dataclass(slots=True)
class AddressRemoved(Event):
    address_id: int
