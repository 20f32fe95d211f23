"""What an endpoint program reports, and how the runner reads and pairs the reports.

Every stdout line of ``python -m testbed.endpoints.kernel`` is one JSON object with an
``"event"`` key: ``"listening"`` (server, once it listens) and ``"report"`` (one per
connection, the last line for a one-connection run). This module owns that format: the
dataclasses, ``parse_report``/``parse_output`` for the runner and ``merge_reports``, which
pairs a client and a server report into a connection record whose integrity is ``"ok"``
only when both ends saw the same byte count and SHA-256.

It imports nothing of the socket side, so the runner can use it on any machine.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, fields, is_dataclass
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

REPORT_SCHEMA = 1

Role = Literal["client", "server"]
Direction = Literal["upload", "download"]
Integrity = Literal["ok", "mismatch"]

ErrorKind = Literal[
    "refused",  # nobody listening (RST to the SYN)
    "reset",  # connection reset or broken pipe during the transfer
    "timeout",  # connect/accept/IO made no progress for --timeout seconds
    "mptcp-unavailable",  # the kernel refused IPPROTO_MPTCP
    "protocol",  # the peer is not a testbed endpoint, or sent data it must not
    "interrupted",  # SIGTERM/SIGINT before the connection finished
    "os",  # any other system call failure
    "command",  # a command endpoint's program did not start, become ready or exit
]


class ReportError(ValueError):
    """A report line is not valid JSON or lacks/misspells a field (named in the message)."""


@dataclass(frozen=True)
class SubflowReport:
    """Last totals seen for one subflow (``open_at_end`` False: it closed before the end)."""

    index: int
    local: str
    remote: str
    bytes_sent: int  # tcpi_bytes_sent: includes retransmissions
    bytes_acked: int
    bytes_received: int
    bytes_retrans: int
    total_retrans: int
    rtt_us: int
    first_seen_s: float
    last_seen_s: float
    open_at_end: bool


@dataclass(frozen=True)
class MptcpCounters:
    """The last ``struct mptcp_info`` seen; byte counters are None on kernels before 6.5."""

    subflows: int  # additional subflows open (not counting the initial one)
    subflows_total: int | None
    add_addr_signal: int
    add_addr_accepted: int
    flags: int
    fallback: bool
    remote_key_received: bool
    csum_enabled: bool
    token: int
    retransmits: int | None
    bytes_retrans: int | None
    bytes_sent: int | None
    bytes_received: int | None
    bytes_acked: int | None


@dataclass(frozen=True)
class EndpointReport:
    """One side's account of one connection."""

    role: Role
    connection: int  # index of the connection at this endpoint (server: accept order)
    transport: Literal["mptcp", "tcp"]  # what was asked for
    mptcp_requested: bool
    mptcp_used: bool  # still MPTCP at the end: MPTCP_INFO answered, fallback flag clear
    direction: Direction | None  # None when the server failed before reading the request
    sending: bool  # this side sent the payload
    mode: Literal["bytes", "seconds", "requests"] | None
    requested_bytes: int | None
    requested_seconds: float | None
    seed: int | None
    bytes: int
    sha256: str
    duration_s: float
    goodput_mbps: float
    local: str | None
    remote: str | None
    started_at_unix: float | None  # wall clock when the connection was up: t_s = 0 of the CSV
    subflows: tuple[SubflowReport, ...] = ()
    mptcp_info: MptcpCounters | None = None
    samples: int = 0
    # Some sample saw MPTCP: with mptcp_used False this is a fallback after the handshake
    # (infinite mapping), not a fallback on the SYN.
    mptcp_seen: bool = False
    error: str | None = None
    error_kind: ErrorKind | None = None
    exit_code: int = 0
    schema: int = REPORT_SCHEMA
    # The bundled Python stack's own per-connection counters (MPTcpExt names where the
    # kernel has one, see testbed.mptcp.counters); None for a kernel endpoint.
    stack_counters: dict[str, int] | None = None
    # A command endpoint (stack = "command"): its program's exit status (None: killed or never
    # started), the tail of its stderr, and where the kernel figures came from ("ss", or why
    # there are none). None for the other stacks.
    command_exit_status: int | None = None
    command_stderr: str | None = None
    kernel_view: str | None = None
    # request/response traffic (mode "requests", testbed.endpoints.request_response): the
    # request stream this end sent (client) or received (server), and the client's latency of
    # each answered request with when it was sent (s after the first request)
    requests_bytes: int | None = None
    requests_sha256: str | None = None
    latencies_ms: tuple[float, ...] = ()
    request_sent_s: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["subflows"] = [asdict(sub) for sub in self.subflows]
        return {"event": "report", **data}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=False)


@dataclass(frozen=True)
class ListeningEvent:
    """The server's readiness line: the address it listens on (port resolved if 0 was asked)."""

    address: str
    transport: Literal["mptcp", "tcp"]
    connections: int
    pid: int

    def to_json(self) -> str:
        return json.dumps({"event": "listening", **asdict(self)}, separators=(",", ":"))


@dataclass(frozen=True)
class ConnectionRecord:
    """A client and a server report of the same connection, checked against each other."""

    client: EndpointReport
    server: EndpointReport
    direction: Direction | None
    integrity: Integrity
    problems: tuple[str, ...]  # every disagreement and error, human-readable
    errors: tuple[str, ...]  # the errors either end reported
    bytes: int  # what the receiving side got
    goodput_mbps: float  # measured by the receiving side
    mptcp_used: bool  # both ends saw MPTCP
    subflows: tuple[SubflowReport, ...]  # the sender's view: its acked bytes per subflow

    @property
    def complete(self) -> bool:
        """Data intact and neither end reported an error."""
        return self.integrity == "ok" and not self.errors


def _check_value(where: str, name: str, hint: object, value: object) -> object:
    """Validate one JSON value against a resolved type hint of a dataclass field."""
    origin = get_origin(hint)
    if origin in (Union, UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        non_null = [option for option in options if option is not type(None)]
        if len(non_null) == 1:
            return _check_value(where, name, non_null[0], value)
        raise ReportError(f"{where}: field {name!r} has an unsupported union type")
    if value is None:
        raise ReportError(f"{where}: field {name!r} must not be null")
    if is_dataclass(hint):
        assert isinstance(hint, type)
        return _build(hint, value, f"{where}.{name}")
    if origin is dict:
        key_type, value_type = get_args(hint)
        if not isinstance(value, dict):
            raise ReportError(f"{where}: field {name!r} must be an object, got {value!r}")
        return {
            _check_value(where, f"{name} key", key_type, key): _check_value(
                where, f"{name}[{key!r}]", value_type, item
            )
            for key, item in value.items()
        }
    if origin is tuple:
        element = get_args(hint)[0]
        if not isinstance(value, list):
            raise ReportError(f"{where}: field {name!r} must be a list, got {value!r}")
        return tuple(_check_value(where, f"{name}[{i}]", element, item) for i, item in enumerate(value))
    if origin is Literal:
        allowed = list(get_args(hint))
        if value not in allowed:
            raise ReportError(f"{where}: field {name!r} is {value!r}, expected one of {allowed}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ReportError(f"{where}: field {name!r} must be a number, got {value!r}")
        return float(value)
    if hint in (int, str, bool):
        assert isinstance(hint, type)
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise ReportError(f"{where}: field {name!r} must be {hint.__name__}, got {value!r}")
        return value
    raise ReportError(f"{where}: field {name!r} has an unsupported type {hint!r}")


def _build(cls: type, data: object, where: str) -> Any:
    """Construct dataclass ``cls`` from a JSON object, checking names and types."""
    if not isinstance(data, dict):
        raise ReportError(f"{where}: expected a JSON object, got {type(data).__name__}")
    specs = {spec.name: spec for spec in fields(cls)}
    unknown = sorted(set(data) - set(specs) - {"event"})
    if unknown:
        raise ReportError(f"{where}: unknown field(s) {unknown}")
    hints = get_type_hints(cls)
    kwargs: dict[str, object] = {}
    for name, spec in specs.items():
        if name not in data:
            if spec.default is not MISSING or spec.default_factory is not MISSING:
                continue
            raise ReportError(f"{where}: missing field {name!r}")
        kwargs[name] = _check_value(where, name, hints[name], data[name])
    return cls(**kwargs)


def parse_report(line: str) -> EndpointReport:
    """Decode one ``"event": "report"`` JSON line; ReportError names what is wrong."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ReportError(f"report line is not JSON ({exc}): {line[:120]!r}") from None
    event = data.get("event") if isinstance(data, dict) else None
    if event != "report":
        raise ReportError(f"not a report line (event={event!r}): {line[:120]!r}")
    report: EndpointReport = _build(EndpointReport, data, "report")
    if report.schema != REPORT_SCHEMA:
        raise ReportError(f"report schema {report.schema} is not supported (expected {REPORT_SCHEMA})")
    return report


def parse_listening(line: str) -> ListeningEvent:
    """Decode the server's ``"event": "listening"`` line."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ReportError(f"listening line is not JSON ({exc}): {line[:120]!r}") from None
    if not isinstance(data, dict) or data.get("event") != "listening":
        raise ReportError(f"not a listening line: {line[:120]!r}")
    event: ListeningEvent = _build(ListeningEvent, data, "listening")
    return event


def parse_output(stdout: str) -> tuple[ListeningEvent | None, list[EndpointReport]]:
    """Every event of one endpoint run's stdout: the listening line (server) and the reports."""
    listening: ListeningEvent | None = None
    reports: list[EndpointReport] = []
    for number, line in enumerate(stdout.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ReportError(f"stdout line {number} is not JSON ({exc}): {line[:120]!r}") from None
        event = data.get("event") if isinstance(data, dict) else None
        if event == "listening":
            listening = parse_listening(line)
        elif event == "report":
            reports.append(parse_report(line))
        else:
            raise ReportError(f"stdout line {number}: unknown event {event!r}")
    return listening, reports


def merge_reports(client: EndpointReport, server: EndpointReport) -> ConnectionRecord:
    """Pair both ends of one connection; integrity is "ok" only if bytes and SHA-256 agree."""
    if client.role != "client":
        raise ValueError(f"merge_reports: first report has role {client.role!r}, expected 'client'")
    if server.role != "server":
        raise ValueError(f"merge_reports: second report has role {server.role!r}, expected 'server'")
    problems: list[str] = []
    direction = client.direction
    if server.direction is not None and server.direction != client.direction:
        problems.append(f"direction differs: client {client.direction}, server {server.direction}")
    sender, receiver = (client, server) if direction == "upload" else (server, client)
    errors = tuple(
        f"{report.role} error ({report.error_kind}): {report.error}"
        for report in (client, server)
        if report.error is not None
    )
    problems.extend(errors)
    if sender.bytes != receiver.bytes:
        problems.append(
            f"byte count differs: {sender.role} sent {sender.bytes}, "
            f"{receiver.role} received {receiver.bytes}"
        )
    if sender.sha256 != receiver.sha256:
        problems.append(f"sha256 differs: {sender.role} {sender.sha256}, {receiver.role} {receiver.sha256}")
    if client.mptcp_used != server.mptcp_used:
        problems.append(f"ends disagree on MPTCP: client {client.mptcp_used}, server {server.mptcp_used}")
    intact = sender.bytes == receiver.bytes and sender.sha256 == receiver.sha256
    if client.mode == "requests" and (client.requests_bytes, client.requests_sha256) != (
            server.requests_bytes, server.requests_sha256):
        problems.append(f"request stream differs: client sent {client.requests_bytes} bytes "
                        f"({client.requests_sha256}), server received {server.requests_bytes} "
                        f"({server.requests_sha256})")
        intact = False
    return ConnectionRecord(
        client=client,
        server=server,
        direction=direction,
        integrity="ok" if intact else "mismatch",
        problems=tuple(problems),
        errors=errors,
        bytes=receiver.bytes,
        goodput_mbps=receiver.goodput_mbps,
        mptcp_used=client.mptcp_used and server.mptcp_used,
        subflows=sender.subflows,
    )
