"""The bytes on the wire: a 24-byte request from the client, then the payload one way.

The client opens every connection with a fixed-size request telling the server which way
the payload goes and how much of it (bytes, or seconds of sending) and with which seed,
so a server needs no per-run options. The request is not part of the payload: it is not
counted in ``bytes`` nor hashed, but it is in the kernel's per-subflow byte counters.

Request layout (network byte order)::

    magic "TBEP" | version u8 | direction u8 | mode u8 | reserved u8 | amount u64 | seed u64

``amount`` is a byte count (mode 0) or microseconds of sending (mode 1); mode 2 is
request/response traffic (testbed.endpoints.request_response), its amount the two sizes.

After the payload the sender shuts down its write side and waits for the receiver to
close, so the sender's duration covers delivery of the last byte, not just its hand-off
to the kernel.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from testbed.endpoints.payload import SEED_MAX, PayloadSource, StreamDigest

REQUEST = struct.Struct("!4sBBBxQQ")
REQUEST_MAGIC = b"TBEP"
REQUEST_VERSION = 1
_DIRECTIONS: tuple[Literal["upload", "download"], ...] = ("upload", "download")
Mode = Literal["bytes", "seconds", "requests"]
_MODES: tuple[Mode, ...] = ("bytes", "seconds", "requests")
SEND_WINDOW = 1 << 20
RECV_BUFFER = 1 << 20


class ProtocolError(Exception):
    """The peer broke the endpoint protocol (bad request, data where none is allowed)."""


class IdleTimeout(Exception):
    """No progress for the configured I/O timeout."""


class Interrupted(Exception):
    """The program was asked to stop (SIGTERM/SIGINT) before the transfer finished."""


@dataclass(frozen=True)
class TransferRequest:
    """What the client asks for; sent as the first 24 bytes of the connection."""

    direction: Literal["upload", "download"]
    mode: Mode
    # bytes, microseconds when mode == "seconds", or (request bytes << 32 | response bytes)
    # when mode == "requests" (testbed.endpoints.request_response)
    amount: int
    seed: int

    def __post_init__(self) -> None:
        if self.direction not in _DIRECTIONS:
            raise ValueError(f"direction must be one of {_DIRECTIONS}, got {self.direction!r}")
        if self.mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {self.mode!r}")
        if not 0 <= self.amount <= SEED_MAX:
            raise ValueError(f"amount must be in 0..2**64-1, got {self.amount}")
        if not 0 <= self.seed <= SEED_MAX:
            raise ValueError(f"seed must be in 0..2**64-1, got {self.seed}")

    @property
    def byte_limit(self) -> int | None:
        return self.amount if self.mode == "bytes" else None

    @property
    def seconds(self) -> float | None:
        return self.amount / 1e6 if self.mode == "seconds" else None

    def encode(self) -> bytes:
        return REQUEST.pack(
            REQUEST_MAGIC,
            REQUEST_VERSION,
            _DIRECTIONS.index(self.direction),
            _MODES.index(self.mode),
            self.amount,
            self.seed,
        )

    @classmethod
    def decode(cls, raw: bytes) -> TransferRequest:
        if len(raw) != REQUEST.size:
            raise ProtocolError(f"request must be {REQUEST.size} bytes, got {len(raw)}")
        magic, version, direction, mode, amount, seed = REQUEST.unpack(raw)
        if magic != REQUEST_MAGIC:
            raise ProtocolError(
                f"request magic is {magic!r}, expected {REQUEST_MAGIC!r}: "
                "the peer is not a testbed endpoint client (or a middlebox rewrote the payload)"
            )
        if version != REQUEST_VERSION:
            raise ProtocolError(f"request version {version} unsupported (expected {REQUEST_VERSION})")
        if direction >= len(_DIRECTIONS):
            raise ProtocolError(f"request direction code {direction} unknown")
        if mode >= len(_MODES):
            raise ProtocolError(f"request mode code {mode} unknown")
        return cls(_DIRECTIONS[direction], _MODES[mode], amount, seed)


class StreamProgress:
    """Bytes moved one way so far: count, SHA-256 and the instants of first and last byte.

    Filled in place by the stream functions, so a transfer cut short by a reset or a
    timeout still reports exactly what got through. A receiver may also keep the bytes it got
    in a file (`keep_received`): the integrity oracle (testbed.integrity) reads it to say where
    and how a stream differs, without either side holding the stream in memory.
    """

    def __init__(self) -> None:
        self.digest = StreamDigest()
        self.first_byte_at: float | None = None
        self.finished_at: float | None = None
        self._kept: BinaryIO | None = None

    def keep_received(self, path: Path | None) -> None:
        """Write every byte passed to `received` to `path` (None: keep nothing)."""
        if path is not None and self._kept is None:
            self._kept = path.open("wb")

    def received(self, data: bytes | bytearray | memoryview) -> None:
        """Count and hash bytes that arrived (and keep them when asked to)."""
        self.digest.update(data)
        if self._kept is not None:
            self._kept.write(data)

    def close(self) -> None:
        if self._kept is not None:
            self._kept.close()
            self._kept = None

    @property
    def byte_count(self) -> int:
        return self.digest.byte_count


@dataclass(frozen=True)
class IoPolicy:
    """How the blocking loops wait.

    Every blocking call waits at most ``poll_slice`` seconds, so a stop request (a signal
    recorded by the program) is noticed quickly without raising from a signal handler at
    an arbitrary line; ``io_timeout`` is the longest stretch without progress.
    """

    io_timeout: float
    clock: Callable[[], float]
    stop_reason: Callable[[], str | None]
    poll_slice: float = 0.25

    def check_stop(self) -> None:
        reason = self.stop_reason()
        if reason is not None:
            raise Interrupted(reason)

    def arm(self, sock: socket.socket, idle_since: float, deadline: float | None = None) -> None:
        """Bound the next blocking call on ``sock`` by slice, idle budget and deadline."""
        self.check_stop()
        now = self.clock()
        wait = min(self.poll_slice, self.io_timeout - (now - idle_since))
        if deadline is not None:
            wait = min(wait, deadline - now)
        sock.settimeout(max(wait, 0.001))

    def idle_expired(self, idle_since: float) -> bool:
        return self.clock() - idle_since >= self.io_timeout


def receive_exactly(sock: socket.socket, size: int, policy: IoPolicy) -> bytes:
    """Read exactly ``size`` bytes (the request); EOF before that is a ProtocolError."""
    data = bytearray()
    idle_since = policy.clock()
    while len(data) < size:
        policy.arm(sock, idle_since)
        try:
            chunk = sock.recv(size - len(data))
        except TimeoutError:
            if policy.idle_expired(idle_since):
                raise IdleTimeout(f"no request from the client within {policy.io_timeout:g} s") from None
            continue
        if not chunk:
            raise ProtocolError(f"connection closed after {len(data)} of {size} request bytes")
        data += chunk
        idle_since = policy.clock()
    return bytes(data)


def send_all(sock: socket.socket, data: bytes, policy: IoPolicy) -> None:
    """Send a small message completely (the request)."""
    view = memoryview(data)
    idle_since = policy.clock()
    while view:
        policy.arm(sock, idle_since)
        try:
            count = sock.send(view)
        except TimeoutError:
            if policy.idle_expired(idle_since):
                raise IdleTimeout(f"could not send the request in {policy.io_timeout:g} s") from None
            continue
        view = view[count:]
        idle_since = policy.clock()


def send_stream(
    sock: socket.socket,
    source: PayloadSource,
    progress: StreamProgress,
    byte_limit: int | None,
    deadline: float | None,
    policy: IoPolicy,
) -> None:
    """Send the payload until ``byte_limit`` bytes or the ``deadline`` (clock time).

    Exactly the bytes that ``send`` accepted are counted and hashed, so a deadline that
    interrupts a blocked send still reports what went out.
    """
    if byte_limit is None and deadline is None:
        raise ValueError("send_stream needs a byte limit or a deadline")
    sent = 0
    idle_since = policy.clock()
    while byte_limit is None or sent < byte_limit:
        if deadline is not None and policy.clock() >= deadline:
            break
        policy.arm(sock, idle_since, deadline)
        remaining = SEND_WINDOW if byte_limit is None else min(SEND_WINDOW, byte_limit - sent)
        window = source.window(sent, remaining)
        try:
            count = sock.send(window)
        except TimeoutError:
            if policy.idle_expired(idle_since):
                raise IdleTimeout(f"send made no progress for {policy.io_timeout:g} s") from None
            continue
        idle_since = policy.clock()
        if progress.first_byte_at is None:
            progress.first_byte_at = idle_since
        progress.digest.update(window[:count])
        sent += count
    progress.finished_at = policy.clock()


def receive_stream(sock: socket.socket, progress: StreamProgress, policy: IoPolicy) -> None:
    """Receive and hash until the peer closes its write side."""
    digest = progress.digest
    buffer = bytearray(RECV_BUFFER)
    view = memoryview(buffer)
    idle_since = policy.clock()
    while True:
        policy.arm(sock, idle_since)
        try:
            count = sock.recv_into(buffer)
        except TimeoutError:
            if policy.idle_expired(idle_since):
                raise IdleTimeout(
                    f"no data for {policy.io_timeout:g} s after {digest.byte_count} bytes"
                ) from None
            continue
        idle_since = policy.clock()
        if count == 0:
            progress.finished_at = idle_since
            return
        if progress.first_byte_at is None:
            progress.first_byte_at = idle_since
        progress.received(view[:count])


def unacknowledged_bytes(sock: socket.socket) -> int:
    """Bytes written but not yet acknowledged (SIOCOUTQ; data-level for an MPTCP socket)."""
    raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, bytes(4))
    value: int = struct.unpack("=i", raw)[0]
    return value


def wait_until_acknowledged(
    sock: socket.socket,
    policy: IoPolicy,
    sleep: Callable[[float], None],
    poll_interval: float = 0.001,
) -> float:
    """Wait until the peer acknowledged everything sent; returns when that happened.

    This is the sender's "last byte delivered" instant, and the last moment its counters
    are complete: once both FINs are through, a plain TCP (or fallen-back) socket's
    tcp_info is gone.
    """
    last_level = unacknowledged_bytes(sock)
    progress_at = policy.clock()
    while last_level > 0:
        policy.check_stop()
        sleep(poll_interval)
        level = unacknowledged_bytes(sock)
        if level < last_level:
            progress_at = policy.clock()
        elif policy.idle_expired(progress_at):
            raise IdleTimeout(f"{level} bytes stayed unacknowledged for {policy.io_timeout:g} s")
        last_level = level
    return policy.clock()


def finish_sending(sock: socket.socket, policy: IoPolicy) -> float:
    """Shut down the write side and wait for the peer to close; returns when it did.

    The receiver closes only after reading everything, so its close confirms that the
    payload was consumed. Any data arriving here breaks the protocol (the receiver never
    sends).
    """
    sock.shutdown(socket.SHUT_WR)
    idle_since = policy.clock()
    while True:
        policy.arm(sock, idle_since)
        try:
            data = sock.recv(4096)
        except TimeoutError:
            if policy.idle_expired(idle_since):
                raise IdleTimeout(
                    f"peer did not close within {policy.io_timeout:g} s after the payload"
                ) from None
            continue
        if data:
            raise ProtocolError(f"receiver sent {len(data)} unexpected bytes")
        return policy.clock()
