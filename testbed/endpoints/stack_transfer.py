"""The testbed's transfer protocol on the bundled stack: one `TransferJob` per connection.

The same bytes as the kernel endpoint (testbed.endpoints.transfer): a 24-byte request from
the client, then the seeded payload one way, then the sender closes (DATA_FIN) once the
receiver acknowledged everything at the data level, and the receiver closes after the
peer's DATA_FIN. Everything is driven by events and `step(now)` calls from the driver; no
blocking, no threads: sampling for the time series happens in `step` too.

Timed actions (`Action`) exercise MPTCP signalling mid-transfer: they fire once a given
number of payload bytes went through, or a given time after the first payload byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from testbed.endpoints.payload import PayloadSource
from testbed.endpoints.report import EndpointReport, ErrorKind, MptcpCounters, Role
from testbed.endpoints.request_response import RequestPlan, StackExchange, payload_seed
from testbed.endpoints.sampler import SubflowTracker, TimeseriesWriter
from testbed.endpoints.stack_observe import StackObserver
from testbed.endpoints.transfer import REQUEST, ProtocolError, StreamProgress, TransferRequest
from testbed.mptcp import events
from testbed.mptcp.addresses import canonical_address
from testbed.mptcp.connection import Connection
from testbed.mptcp.errors import LocalProtocolError
from testbed.net.topo import host_port

SEND_CHUNK = 256 * 1024
CLOSE_GRACE_S = 3.0  # after our close: longest wait for the peer's last signals
ActionKind = Literal["add-addr", "remove-addr", "backup", "nobackup", "fastclose"]
ACTION_KINDS: tuple[str, ...] = ("add-addr", "remove-addr", "backup", "nobackup", "fastclose")
_ACTION = re.compile(r"^(?P<amount>[0-9.]+)(?P<unit>s|k|K|M|G)?:(?P<kind>[a-z-]+)"
                     r"(?::\[?(?P<arg>[0-9A-Fa-f.:]+)\]?)?$")  # an IPv4 or IPv6 address
_UNITS = {None: 1, "k": 1000, "K": 1024, "M": 1 << 20, "G": 1 << 30}


@dataclass(frozen=True)
class Action:
    """`kind` (with an address `arg`) once `after_bytes` payload bytes moved, or
    `after_seconds` after the first payload byte."""

    kind: ActionKind
    arg: str | None
    after_bytes: int | None = None
    after_seconds: float | None = None

    @classmethod
    def parse(cls, text: str) -> Action:
        """`4M:remove-addr:10.0.2.1`, `0.5s:fastclose`, `1000000:backup:10.0.1.1`,
        `2M:remove-addr:fd00:10:0:2::1` (or `[fd00:10:0:2::1]`)."""
        match = _ACTION.match(text)
        if match is None:
            raise ValueError(f"action {text!r} is not AMOUNT[s|k|K|M|G]:KIND[:ADDR]")
        kind = match["kind"]
        if kind not in ACTION_KINDS:
            raise ValueError(f"action {text!r}: kind {kind!r} is not one of {ACTION_KINDS}")
        arg = match["arg"] and canonical_address(match["arg"])  # ValueError naming it
        if (arg is None) != (kind == "fastclose"):
            raise ValueError(f"action {text!r}: {kind} " + (
                "takes no address" if kind == "fastclose" else "needs a local address"))
        if match["unit"] == "s":
            return cls(kind, arg, after_seconds=float(match["amount"]))  # type: ignore[arg-type]
        return cls(kind, arg, after_bytes=int(float(match["amount"]) * _UNITS[match["unit"]]))  # type: ignore[arg-type]


@dataclass(frozen=True)
class JobSettings:
    role: Role
    io_timeout: float
    sample_interval_s: float
    timeseries: Path | None
    received_file: Path | None = None  # keep the payload received here (integrity oracle)
    actions: tuple[Action, ...] = ()
    # local addresses (and ports, None: no port) to ADD_ADDR once MPTCP is up
    announce: tuple[tuple[str, int | None], ...] = ()


class TransferJob:
    """One connection's request, payload, close and report."""

    def __init__(self, index: int, settings: JobSettings, connection: Connection,
                 request: TransferRequest | None, now: float, wall_now: float,
                 plan: RequestPlan | None = None) -> None:
        self.index = index
        self.plan = plan  # a request/response client's plan
        self.exchange: StackExchange | None = None  # request/response traffic
        self.requests = StreamProgress()  # its request stream
        self.settings = settings
        self.connection = connection
        self.request = request
        self.started_at = now
        self.started_at_unix = wall_now
        self.progress = StreamProgress()
        self.tracker = SubflowTracker()
        self.observer = StackObserver(connection)
        self.writer = TimeseriesWriter(settings.timeseries.open("w", encoding="ascii")) \
            if settings.timeseries else None
        self.next_sample = now
        self.last_progress = now
        self.established = False
        self.request_sent = False
        self.request_buffer = bytearray()
        self.sending = False
        self.source: PayloadSource | None = None
        self.offset = 0
        self.send_deadline: float | None = None
        self.payload_dsn = 0  # DSN of the first payload byte we send
        self._last_una: int | None = None
        self.payload_queued = False
        self.end_at: float | None = None
        self.closed_at: float | None = None
        self.peer_closed = False
        self.connection_closed: str | None = None
        self.error: tuple[ErrorKind, str] | None = None
        self.finished = False
        self.announced = False
        self.pending_actions = list(settings.actions)
        self.actions_done: list[str] = []

    # ------------------------------------------------------------------ events
    def on_event(self, event: events.Event, now: float) -> None:
        if isinstance(event, (events.ConnectionEstablished, events.ConnectionAccepted)):
            self.established = True
            self.last_progress = now
        elif isinstance(event, events.DataReceived):
            self._read(now)
        elif isinstance(event, events.DataEndReceived):
            self._read(now)
            self.peer_closed = True
            if not self.sending and self.progress.finished_at is None:
                self.progress.finished_at = now
        elif isinstance(event, events.ConnectionClosed):
            self.connection_closed = event.reason
            if event.reason != "closed" and self.error is None and not self._complete():
                kind: ErrorKind = "refused" if event.reason == "refused" else (
                    "timeout" if event.reason == "timeout" else "reset")
                self.error = (kind, f"connection {event.reason} by the stack "
                              f"({self.connection.outcome()})")

    def _read(self, now: float) -> None:
        data = self.connection.receive()
        if not data:
            return
        self.last_progress = now
        if self.request is None:
            self.request_buffer += data
            if len(self.request_buffer) < REQUEST.size:
                return
            raw = bytes(self.request_buffer[:REQUEST.size])
            data = bytes(self.request_buffer[REQUEST.size:])
            try:
                self.request = TransferRequest.decode(raw)
            except ProtocolError as exc:
                self._fail("protocol", str(exc))
                return
            self._start_payload(now)
            if not data:
                return
        if self.exchange is not None:
            self.exchange.on_data(data, now)
            if self.exchange.error is not None:
                self._fail("protocol", self.exchange.error)
            return
        if self.sending:
            self._fail("protocol", f"receiver sent {len(data)} unexpected bytes")
            return
        if self.progress.first_byte_at is None:
            self.progress.first_byte_at = now
        self.progress.received(data)

    def _start_payload(self, now: float) -> None:
        request = self.request
        assert request is not None
        self.sending = (request.direction == "upload") == (self.settings.role == "client")
        if not self.sending:
            self.progress.keep_received(self.settings.received_file)
        if request.mode == "requests":
            client = self.settings.role == "client"
            if client and self.plan is None:
                raise LocalProtocolError("a request/response client needs its RequestPlan")
            try:  # the client sends requests and receives responses, the server the reverse
                self.exchange = StackExchange(
                    self.connection, request, self.plan if client else None,
                    self.requests if client else self.progress,
                    self.progress if client else self.requests, now)
            except ProtocolError as exc:
                self._fail("protocol", str(exc))
            return
        if self.sending:
            self.payload_dsn = self.connection.data.send_end
            self.source = PayloadSource(request.seed)
            seconds = request.seconds
            self.send_deadline = None if seconds is None else now + seconds

    def _fail(self, kind: ErrorKind, message: str) -> None:
        if self.error is None:
            self.error = (kind, message)
        if self.connection.closed_reason is None:
            self.connection.abort()

    def _complete(self) -> bool:
        return self.end_at is not None and self.peer_closed

    # ------------------------------------------------------------------ acting
    def step(self, now: float, stop_reason: str | None) -> float | None:
        """Move the transfer on; returns this job's next deadline."""
        if self.finished:
            return None
        if stop_reason is not None and self.error is None and not self._complete():
            self._fail("interrupted", stop_reason)
        if self.error is None and self.connection_closed is None:
            self._advance(now)
        if now >= self.next_sample:
            self.sample(now)
            self.next_sample = now + self.settings.sample_interval_s
        done = self.error is not None or self.connection_closed is not None or (
            self._complete() and (self._data_fin_acked() or now - (self.closed_at or now)
                                  >= CLOSE_GRACE_S))
        if not done and now - self.last_progress >= self.settings.io_timeout:
            self._fail("timeout", f"no progress for {self.settings.io_timeout:g} s after "
                       f"{self.progress.byte_count} bytes")
            done = True
        if done:
            self._finish(now)
            return None
        deadline = self.next_sample
        if self.exchange is not None and (due := self.exchange.due()) is not None:
            deadline = min(deadline, due)
        if self.send_deadline is not None and not self.payload_queued:
            deadline = min(deadline, self.send_deadline)
        return deadline

    def _data_fin_acked(self) -> bool:
        connection = self.connection
        if connection.mode != "mptcp":
            return connection.closed_reason is not None or all(
                s.is_closed or (s.fin_offset is not None and s.snd_una > s.fin_offset)
                for s in (c.tcp for c in connection.live_subflows))
        return connection.data.data_fin_acked

    def _advance(self, now: float) -> None:
        connection = self.connection
        if not self.established:
            return
        if self.settings.role == "client" and not self.request_sent:
            assert self.request is not None
            if connection.send(self.request.encode()) != REQUEST.size:
                raise LocalProtocolError("send buffer too small for the 24-byte request")
            self.request_sent = True
            self._start_payload(now)
        if self.announce_due():
            self._announce(now)
        self._run_actions(now)
        if self.request is None or self.error is not None:
            return
        if self.exchange is not None:
            self._exchange(now)
        elif self.sending:
            self._send_payload(now)
        elif self.peer_closed and self.closed_at is None:
            connection.close()
            self.closed_at = now
            self.end_at = self.progress.finished_at

    def _exchange(self, now: float) -> None:
        """Request/response: move it on; the client closes once every request is answered,
        the server once the client closed and every response is acknowledged."""
        exchange = self.exchange
        assert exchange is not None
        connection = self.connection
        exchange.advance(now)
        una = connection.data.snd_data_una
        if una != self._last_una:
            self._last_una = una
            self.last_progress = now
        if self.closed_at is not None:
            return
        if exchange.client and self.peer_closed and not exchange.all_answered:
            assert exchange.plan is not None
            self._fail("protocol", f"server closed after answering {exchange.answered} of "
                                   f"{exchange.plan.requests} requests")
            return
        if exchange.all_answered or (self.peer_closed and exchange.idle
                                     and una >= connection.data.send_end):
            self.end_at = now
            connection.close()
            self.closed_at = now

    def announce_due(self) -> bool:
        return (not self.announced and bool(self.settings.announce)
                and self.connection.mode == "mptcp" and self.connection.remote_key is not None)

    def _announce(self, now: float) -> None:
        self.announced = True
        for address, port in self.settings.announce:
            self.connection.add_address(address, now=now, port=port)

    def _run_actions(self, now: float) -> None:
        if not self.pending_actions or self.progress.first_byte_at is None:
            return
        moved = self.progress.byte_count if not self.sending else max(
            self.connection.data.snd_data_una - self.payload_dsn, 0)
        elapsed = now - self.progress.first_byte_at
        for action in list(self.pending_actions):
            due = (action.after_bytes is not None and moved >= action.after_bytes) or (
                action.after_seconds is not None and elapsed >= action.after_seconds)
            if not due:
                continue
            self.pending_actions.remove(action)
            self.actions_done.append(f"{action.kind}{':' + action.arg if action.arg else ''}"
                                     f"@{round(elapsed, 3)}s/{moved}B")
            self._act(action, now)

    def _act(self, action: Action, now: float) -> None:
        connection = self.connection
        try:
            if action.kind == "fastclose":
                connection.abort(now)
                self.error = ("reset", "MP_FASTCLOSE sent by this endpoint (--at fastclose)")
            elif action.kind == "add-addr":
                connection.add_address(action.arg or "", now=now)
            elif action.kind == "remove-addr":
                connection.remove_address(action.arg or "", now=now)
            else:
                for subflow in list(connection.live_subflows):
                    if subflow.tcp.local_address == action.arg and not subflow.tcp.is_closed:
                        connection.set_backup(subflow, action.kind == "backup", now=now)
        except LocalProtocolError as exc:
            self.actions_done.append(f"failed: {exc}")

    def _send_payload(self, now: float) -> None:
        connection = self.connection
        request = self.request
        assert request is not None and self.source is not None
        if not self.payload_queued:
            limit = request.byte_limit
            while True:
                if self.send_deadline is not None and now >= self.send_deadline:
                    break
                if limit is not None and self.offset >= limit:
                    break
                room = connection.send_buffer_free()
                if room <= 0:
                    break
                want = SEND_CHUNK if limit is None else min(SEND_CHUNK, limit - self.offset)
                window = self.source.window(self.offset, min(want, room))
                count = connection.send(window)
                if count == 0:
                    break
                if self.progress.first_byte_at is None:
                    self.progress.first_byte_at = now
                self.progress.digest.update(window[:count])
                self.offset += count
            if (limit is not None and self.offset >= limit) or (
                    self.send_deadline is not None and now >= self.send_deadline):
                self.payload_queued = True
                self.progress.finished_at = now
        una = connection.data.snd_data_una
        if una != self._last_una:
            self._last_una = una
            self.last_progress = now
        if self.payload_queued and self.end_at is None and una >= connection.data.send_end:
            self.end_at = now
            self.sample(now)
            connection.close()
            self.closed_at = now

    # ------------------------------------------------------------------ reporting
    def sample(self, now: float) -> None:
        rows = self.tracker.observe(now - self.started_at, self.observer.observe(now))
        if self.writer is not None:
            self.writer.write(rows)

    def _finish(self, now: float) -> None:
        self.finished = True
        self.sample(now)
        self.progress.close()
        if self.writer is not None:
            self.writer.close()

    def report(self) -> EndpointReport:
        request = self.request
        progress = self.progress
        start_at = progress.first_byte_at
        end_at = self.end_at if self.end_at is not None else (progress.finished_at or start_at)
        duration = max(end_at - start_at, 0.0) if start_at is not None and end_at else 0.0
        goodput = progress.byte_count * 8 / duration / 1e6 if duration > 0 else 0.0
        connection = self.connection
        kind, message = self.error if self.error is not None else (None, None)
        counters = dict(connection.counters)
        # packets the driver dropped before any connection saw them (testbed.mptcp.driver.loop)
        counters.update({k: v for k, v in connection.host.counters.items()
                         if k.startswith("Driver")})
        info = self.tracker.last_mptcp_info
        return EndpointReport(
            role=self.settings.role,
            connection=self.index,
            transport="mptcp" if connection.handshake.mptcp_requested else "tcp",
            mptcp_requested=connection.handshake.mptcp_requested,
            mptcp_used=connection.mode == "mptcp",
            direction=request.direction if request else None,
            sending=self.sending,
            mode=request.mode if request else None,
            requested_bytes=request.byte_limit if request else None,
            requested_seconds=request.seconds if request else None,
            seed=payload_seed(request) if request and self.sending else None,
            bytes=progress.byte_count,
            sha256=progress.digest.hexdigest(),
            duration_s=round(duration, 6),
            goodput_mbps=round(goodput, 3),
            local=host_port(connection.local_address, connection.local_port),
            remote=host_port(connection.remote_address, connection.remote_port),
            started_at_unix=round(self.started_at_unix, 6),
            subflows=tuple(self.tracker.subflow_reports()),
            mptcp_info=None if info is None else MptcpCounters(
                subflows=info.subflows, subflows_total=info.subflows_total,
                add_addr_signal=info.add_addr_signal, add_addr_accepted=info.add_addr_accepted,
                flags=info.flags, fallback=info.fallback,
                remote_key_received=info.remote_key_received, csum_enabled=info.csum_enabled,
                token=info.token, retransmits=info.retransmits, bytes_retrans=info.bytes_retrans,
                bytes_sent=info.bytes_sent, bytes_received=info.bytes_received,
                bytes_acked=info.bytes_acked),
            samples=self.tracker.samples,
            mptcp_seen=self.tracker.mptcp_seen or connection.mode == "mptcp",
            error=message,
            error_kind=kind,
            exit_code=0 if self.error is None else 1,
            stack_counters=counters,
            **self._exchange_fields(),
        )

    def _exchange_fields(self) -> dict[str, object]:
        """The EndpointReport fields of request/response traffic ({} for bulk traffic)."""
        if self.exchange is None:
            return {}
        log = self.exchange.log
        return {"requests_bytes": self.requests.byte_count,
                "requests_sha256": self.requests.digest.hexdigest(),
                "latencies_ms": tuple(log.latencies_ms), "request_sent_s": tuple(log.sent_at_s)}
