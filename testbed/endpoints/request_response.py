"""Request/response traffic: latency instead of bulk goodput.

The client asks for it with the usual 24-byte request (testbed.endpoints.transfer) in mode
"requests", its ``amount`` carrying the two message sizes (request bytes << 32 | response
bytes). Then it sends request after request, one outstanding at a time; the server answers
each complete request with a response. A request is timed at the client from the moment it
is handed to the socket to the last byte of its response. With a rate, request i starts at
i / rate seconds after the first, or when the answer to request i-1 arrived if that is later
(a late answer delays the next request instead of queueing it).

Both streams are cut from seeded payloads, so every byte is still checked end to end: the
requests are the client's payload stream for ``seed`` back to back, the responses the stream
for ``response_seed(seed)``. Each side hashes both streams; the runner compares them.

The kernel endpoint uses the blocking functions here (``client_exchange``,
``server_exchange``); the python stack's TransferJob drives a ``StackExchange``.
"""

from __future__ import annotations

import contextlib
import math
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from testbed.endpoints.payload import SEED_MAX, PayloadSource
from testbed.endpoints.transfer import (
    RECV_BUFFER,
    IdleTimeout,
    IoPolicy,
    ProtocolError,
    StreamProgress,
    TransferRequest,
    wait_until_acknowledged,
)

MESSAGE_MAX = (1 << 32) - 1  # each size travels in 32 bits of the request's amount
RESPONSE_SEED_XOR = 0x5E5B_0A5E_A115_E7ED  # response stream seed = request seed ^ this
PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class RequestPlan:
    """What a request/response client does: `requests` requests of `request_bytes`, each
    answered with `response_bytes`, started `rate_per_s` per second (None: back to back)."""

    requests: int
    request_bytes: int
    response_bytes: int
    rate_per_s: float | None = None

    def __post_init__(self) -> None:
        if self.requests < 1:
            raise ValueError(f"requests must be >= 1, got {self.requests}")
        for name in ("request_bytes", "response_bytes"):
            if not 1 <= getattr(self, name) <= MESSAGE_MAX:
                raise ValueError(f"{name} must be 1..{MESSAGE_MAX}, got {getattr(self, name)}")
        if self.rate_per_s is not None and not (math.isfinite(self.rate_per_s) and self.rate_per_s > 0):
            raise ValueError(f"rate_per_s must be > 0, got {self.rate_per_s}")

    def transfer_request(self, seed: int) -> TransferRequest:
        """The 24-byte request announcing this exchange (the responses are the download)."""
        return TransferRequest("download", "requests",
                               (self.request_bytes << 32) | self.response_bytes, seed)

    def start_offset(self, index: int) -> float:
        """Seconds after the first request when request `index` is due."""
        return 0.0 if self.rate_per_s is None else index / self.rate_per_s


def message_sizes(request: TransferRequest) -> tuple[int, int]:
    """(request bytes, response bytes) of a mode "requests" request; zero is a ProtocolError."""
    request_bytes, response_bytes = request.amount >> 32, request.amount & MESSAGE_MAX
    if request_bytes == 0 or response_bytes == 0:
        raise ProtocolError(f"request/response sizes must be >= 1 byte, got "
                            f"{request_bytes} and {response_bytes}")
    return request_bytes, response_bytes


def response_seed(seed: int) -> int:
    """The seed of the response stream: distinct from the request stream's."""
    return (seed ^ RESPONSE_SEED_XOR) & SEED_MAX


def payload_seed(request: TransferRequest) -> int:
    """The seed of the stream the integrity oracle judges: the responses' for this traffic."""
    return response_seed(request.seed) if request.mode == "requests" else request.seed


@dataclass
class LatencyLog:
    """Each answered request: when it was sent (s after the first) and its latency (ms)."""

    sent_at_s: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)

    def add(self, sent_at_s: float, latency_s: float) -> None:
        self.sent_at_s.append(round(sent_at_s, 6))
        self.latencies_ms.append(round(latency_s * 1000, 3))


def percentile(values: list[float] | tuple[float, ...], pct: float) -> float:
    """The nearest-rank percentile: a latency that was measured, never an interpolation."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(math.ceil(pct / 100 * len(ordered)), 1)
    return ordered[rank - 1]


def latency_summary(latencies_ms: list[float] | tuple[float, ...]) -> dict[str, Any]:
    """count, p50/p90/p99/max and mean in ms (None each when nothing was answered)."""
    summary: dict[str, Any] = {"count": len(latencies_ms)}
    for pct in PERCENTILES:
        summary[f"p{pct}_ms"] = percentile(latencies_ms, pct) if latencies_ms else None
    summary["max_ms"] = max(latencies_ms) if latencies_ms else None
    summary["mean_ms"] = round(sum(latencies_ms) / len(latencies_ms), 3) if latencies_ms else None
    return summary


def no_delay(sock: socket.socket) -> None:
    """Small messages leave at once (Nagle would hold a response's tail for an ACK)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# ---------------------------------------------------------------------- kernel (blocking)
def _send_slice(sock: socket.socket, source: PayloadSource, offset: int, count: int,
                progress: StreamProgress, policy: IoPolicy) -> None:
    """Send bytes offset..offset+count of `source`, hashing exactly what was accepted."""
    end = offset + count
    idle_since = policy.clock()
    while offset < end:
        policy.arm(sock, idle_since)
        window = source.window(offset, end - offset)
        try:
            sent = sock.send(window)
        except TimeoutError:
            if policy.idle_expired(idle_since):
                raise IdleTimeout(f"send made no progress for {policy.io_timeout:g} s") from None
            continue
        idle_since = policy.clock()
        if progress.first_byte_at is None:
            progress.first_byte_at = idle_since
        progress.digest.update(window[:sent])
        offset += sent
    progress.finished_at = policy.clock()


def _receive_message(sock: socket.socket, size: int, progress: StreamProgress, policy: IoPolicy,
                     buffer: bytearray, what: str) -> bool:
    """Receive exactly `size` bytes into `progress`; False on a clean EOF before the first one."""
    view = memoryview(buffer)
    got = 0
    idle_since = policy.clock()
    while got < size:
        policy.arm(sock, idle_since)
        try:
            count = sock.recv_into(view[:min(len(buffer), size - got)])
        except TimeoutError:
            if policy.idle_expired(idle_since):
                raise IdleTimeout(f"no data for {policy.io_timeout:g} s after {got} of {size} "
                                  f"{what} bytes") from None
            continue
        idle_since = policy.clock()
        if count == 0:
            if got == 0:
                return False
            raise ProtocolError(f"peer closed after {got} of {size} {what} bytes")
        if progress.first_byte_at is None:
            progress.first_byte_at = idle_since
        progress.received(view[:count])
        got += count
    progress.finished_at = policy.clock()
    return True


def _wait_until(due: float, policy: IoPolicy, sleep: Callable[[float], None]) -> None:
    while (left := due - policy.clock()) > 0:
        policy.check_stop()
        sleep(min(left, policy.poll_slice))


def client_exchange(sock: socket.socket, plan: RequestPlan, seed: int, sent: StreamProgress,
                    received: StreamProgress, policy: IoPolicy, sleep: Callable[[float], None],
                    log: LatencyLog) -> None:
    """Send every request and time its answer into `log` (the caller's, so an exchange cut
    short by an error still reports the latencies it measured)."""
    no_delay(sock)
    source = PayloadSource(seed)
    buffer = bytearray(min(plan.response_bytes, RECV_BUFFER))
    start = policy.clock()
    for index in range(plan.requests):
        _wait_until(start + plan.start_offset(index), policy, sleep)
        sent_at = policy.clock()
        _send_slice(sock, source, index * plan.request_bytes, plan.request_bytes, sent, policy)
        if not _receive_message(sock, plan.response_bytes, received, policy, buffer, "response"):
            raise ProtocolError(f"server closed after answering {index} of {plan.requests} requests")
        log.add(sent_at - start, policy.clock() - sent_at)


def server_exchange(sock: socket.socket, request: TransferRequest, received: StreamProgress,
                    sent: StreamProgress, policy: IoPolicy, sleep: Callable[[float], None]) -> float:
    """Answer every request until the client closes; returns when the last response was
    acknowledged (the server's end of the exchange), then closes the write side."""
    no_delay(sock)
    request_bytes, response_bytes = message_sizes(request)
    source = PayloadSource(response_seed(request.seed))
    buffer = bytearray(min(request_bytes, RECV_BUFFER))
    index = 0
    while _receive_message(sock, request_bytes, received, policy, buffer, "request"):
        _send_slice(sock, source, index * response_bytes, response_bytes, sent, policy)
        index += 1
    end_at = wait_until_acknowledged(sock, policy, sleep)
    sock.shutdown(socket.SHUT_WR)
    return end_at


# ---------------------------------------------------------------------- python stack (events)
class StackExchange:
    """The same exchange on a bundled-stack connection: fed by `on_data`, moved by `advance`,
    never blocking. `error` is set (and the caller aborts) when the peer breaks the protocol."""

    def __init__(self, connection: Any, request: TransferRequest, plan: RequestPlan | None,
                 sent: StreamProgress, received: StreamProgress, now: float) -> None:
        self.connection = connection
        self.client = plan is not None
        self.plan = plan
        self.request_bytes, self.response_bytes = message_sizes(request)
        seed = request.seed if self.client else response_seed(request.seed)
        self.source = PayloadSource(seed)
        self.sent = sent
        self.received = received
        self.log = LatencyLog()
        self.start = now
        self.offset = 0  # bytes of our outgoing stream handed to the connection
        self.owed = 0  # bytes queued for sending but not yet handed over
        self.incoming = 0  # bytes of the current incoming message
        self.outstanding_since: float | None = None  # client: the open request's send time
        self.issued = 0  # client: requests started
        self.answered = 0  # client: responses complete; server: requests complete
        self.error: str | None = None

    @property
    def all_answered(self) -> bool:
        return self.plan is not None and self.answered >= self.plan.requests

    @property
    def idle(self) -> bool:
        """Nothing left to hand to the connection."""
        return self.owed == 0

    def on_data(self, data: bytes, now: float) -> None:
        if self.received.first_byte_at is None:
            self.received.first_byte_at = now
        self.received.received(data)
        self.received.finished_at = now
        self.incoming += len(data)
        if not self.client:
            complete, self.incoming = divmod(self.incoming, self.request_bytes)
            self.answered += complete
            self.owed += complete * self.response_bytes
            return
        if self.outstanding_since is not None and self.incoming >= self.response_bytes:
            self.incoming -= self.response_bytes
            self.log.add(self.outstanding_since - self.start, now - self.outstanding_since)
            self.outstanding_since = None
            self.answered += 1
        if self.outstanding_since is None and self.incoming > 0:
            self.error = f"server sent {self.incoming} bytes beyond the answer to request {self.answered}"

    def due(self) -> float | None:
        """Client: when the next request may start (None: waiting for an answer, or done)."""
        if self.plan is None or self.outstanding_since is not None or self.issued >= self.plan.requests:
            return None
        return self.start + self.plan.start_offset(self.issued)

    def advance(self, now: float) -> None:
        due = self.due()
        if due is not None and now >= due:
            if self.issued == 0:
                self.start = now
            self.outstanding_since = now
            self.issued += 1
            self.owed += self.request_bytes
        while self.owed > 0:
            room = self.connection.send_buffer_free()
            if room <= 0:
                return
            window = self.source.window(self.offset, min(self.owed, room))
            count = self.connection.send(window)
            if count == 0:
                return
            if self.sent.first_byte_at is None:
                self.sent.first_byte_at = now
            self.sent.digest.update(window[:count])
            self.sent.finished_at = now
            self.offset += count
            self.owed -= count
