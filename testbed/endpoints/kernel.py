"""Traffic endpoint on the Linux kernel's MPTCP (or plain TCP), run inside a testbed host.

    python -m testbed.endpoints.kernel server --listen ADDR:PORT [--mptcp|--tcp]
        [--connections K] [--timeout S] [--sample-ms MS] [--timeseries CSV]
    python -m testbed.endpoints.kernel client --connect ADDR:PORT [--bind ADDR[:PORT]]
        [--mptcp|--tcp] (--bytes N | --seconds T | --requests N [--request-bytes S]
        [--response-bytes R] [--rate-per-s X]) [--direction upload|download]
        [--seed S] [--timeout S] [--sample-ms MS] [--timeseries CSV]

``--requests`` is request/response traffic (testbed.endpoints.request_response): the client's
report then also carries each request's latency.

MPTCP means ``socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP)``: no mptcpize, no LD_PRELOAD.
Stdout carries JSON lines only (see testbed.endpoints.report): the server's
``{"event":"listening",...}`` as soon as it listens, then one report per connection.
Human-readable diagnostics go to stderr.

Exit codes: 0 every connection completed; 1 a connection failed (its report says why);
2 bad command line; 3 the kernel refused IPPROTO_MPTCP (net.mptcp.enabled=0, or no MPTCP).
SIGTERM/SIGINT stop the endpoint within about 0.25 s with an "interrupted" report for
every unfinished connection (a second signal kills it outright; a client still in
connect() notices only when connect returns or times out).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import os
import queue
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from testbed.endpoints.kernel_info import IPPROTO_MPTCP, MptcpInfo
from testbed.endpoints.payload import SEED_MAX, PayloadSource
from testbed.endpoints.report import (
    EndpointReport,
    ErrorKind,
    ListeningEvent,
    MptcpCounters,
    Role,
)
from testbed.endpoints.request_response import (
    LatencyLog,
    RequestPlan,
    client_exchange,
    payload_seed,
    server_exchange,
)
from testbed.endpoints.sampler import SocketSampler, TimeseriesWriter
from testbed.endpoints.transfer import (
    REQUEST,
    IdleTimeout,
    Interrupted,
    IoPolicy,
    ProtocolError,
    StreamProgress,
    TransferRequest,
    finish_sending,
    receive_exactly,
    receive_stream,
    send_all,
    send_stream,
    wait_until_acknowledged,
)

EXIT_OK = 0
EXIT_TRANSFER_FAILED = 1
EXIT_USAGE = 2
EXIT_MPTCP_UNAVAILABLE = 3

Transport = Literal["mptcp", "tcp"]
_EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
_MPTCP_REFUSED_ERRNOS = (errno.EPROTONOSUPPORT, errno.ENOPROTOOPT, errno.EINVAL)


class MptcpUnavailable(Exception):
    """The kernel refused to create an IPPROTO_MPTCP socket."""


class StopRequest:
    """Records SIGTERM/SIGINT; the I/O loops poll it.

    The handler only records the signal: an exception raised from a handler can land on
    any line (inside a report write, inside Thread.join), which loses reports.
    """

    def __init__(self) -> None:
        self.reason: str | None = None

    def __call__(self) -> str | None:
        return self.reason

    def on_signal(self, signum: int, _frame: object) -> None:
        self.reason = f"stopped by {signal.Signals(signum).name}"
        # A second signal kills the process the default way.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)


@dataclass(frozen=True)
class EndpointSettings:
    """Everything a connection handler needs besides the socket."""

    role: Role
    transport: Transport
    io_timeout: float
    sample_interval_s: float
    timeseries: Path | None
    received_file: Path | None
    clock: Callable[[], float]
    wall_clock: Callable[[], float]
    sleep: Callable[[float], None]
    stop_reason: Callable[[], str | None]

    @property
    def io_policy(self) -> IoPolicy:
        return IoPolicy(io_timeout=self.io_timeout, clock=self.clock, stop_reason=self.stop_reason)


def socket_family(address: str) -> socket.AddressFamily:
    """AF_INET6 for an IPv6 address (an IPv4-mapped one too: a dual-stack connection), else AF_INET."""
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def open_socket(transport: Transport, family: socket.AddressFamily = socket.AF_INET) -> socket.socket:
    """A TCP socket, or an MPTCP one; MptcpUnavailable names the sysctl when refused.

    An AF_INET6 socket is dual stack (IPV6_V6ONLY off): Linux MPTCP lets a connection hold
    subflows of both families only when its socket is AF_INET6 and not v6-only."""
    protocol = socket.IPPROTO_TCP if transport == "tcp" else IPPROTO_MPTCP
    try:
        sock = socket.socket(family, socket.SOCK_STREAM, protocol)
    except OSError as exc:
        if transport != "tcp" and exc.errno in _MPTCP_REFUSED_ERRNOS:
            name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            raise MptcpUnavailable(
                f"MPTCP unavailable: the kernel refused socket({family.name}, SOCK_STREAM, "
                f"IPPROTO_MPTCP) with {name}; check sysctl net.mptcp.enabled (must be 1 in "
                f"this network namespace) and that the kernel has CONFIG_MPTCP, or use --tcp"
            ) from None
        raise
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    return sock


def _format_address(address: tuple) -> str:
    """"ip:port", "[ip6]:port"; an IPv4-mapped address as the IPv4 address it carries."""
    host = address[0]
    if host.startswith("::ffff:") and "." in host:
        host = host.removeprefix("::ffff:")
    return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"


def _counters(info: MptcpInfo | None) -> MptcpCounters | None:
    if info is None:
        return None
    return MptcpCounters(
        subflows=info.subflows,
        subflows_total=info.subflows_total,
        add_addr_signal=info.add_addr_signal,
        add_addr_accepted=info.add_addr_accepted,
        flags=info.flags,
        fallback=info.fallback,
        remote_key_received=info.remote_key_received,
        csum_enabled=info.csum_enabled,
        token=info.token,
        retransmits=info.retransmits,
        bytes_retrans=info.bytes_retrans,
        bytes_sent=info.bytes_sent,
        bytes_received=info.bytes_received,
        bytes_acked=info.bytes_acked,
    )


def classify_error(exc: BaseException) -> tuple[ErrorKind, str]:
    """(error_kind, message) for an exception that ended a connection."""
    if isinstance(exc, ConnectionRefusedError):
        return "refused", f"connection refused ({exc.strerror})"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return "reset", f"connection reset by peer ({exc.strerror})"
    if isinstance(exc, IdleTimeout):
        return "timeout", str(exc)
    if isinstance(exc, TimeoutError):
        return "timeout", f"timed out ({exc})"
    if isinstance(exc, ProtocolError):
        return "protocol", str(exc)
    if isinstance(exc, MptcpUnavailable):
        return "mptcp-unavailable", str(exc)
    if isinstance(exc, Interrupted):
        return "interrupted", str(exc)
    if isinstance(exc, OSError):
        name = errno.errorcode.get(exc.errno or 0, "?")
        return "os", f"{name}: {exc.strerror or exc}"
    return "os", f"{type(exc).__name__}: {exc}"


def failed_report(
    settings: EndpointSettings,
    connection: int,
    exc: BaseException,
    request: TransferRequest | None,
    exit_code: int = EXIT_TRANSFER_FAILED,
) -> EndpointReport:
    """The report of a connection that never carried payload (refused, accept timeout...)."""
    kind, message = classify_error(exc)
    return EndpointReport(
        role=settings.role,
        connection=connection,
        transport=settings.transport,
        mptcp_requested=settings.transport == "mptcp",
        mptcp_used=False,
        direction=request.direction if request else None,
        sending=False,
        mode=request.mode if request else None,
        requested_bytes=request.byte_limit if request else None,
        requested_seconds=request.seconds if request else None,
        seed=request.seed if request else None,
        bytes=0,
        sha256=_EMPTY_SHA256,
        duration_s=0.0,
        goodput_mbps=0.0,
        local=None,
        remote=None,
        started_at_unix=None,
        error=message,
        error_kind=kind,
        exit_code=exit_code,
    )


def _timeseries_path(base: Path | None, connection: int, connections: int) -> Path | None:
    """One CSV per connection: the given path, or PATH.<index>.csv when there are several."""
    if base is None or connections == 1:
        return base
    return base.with_name(f"{base.stem}.{connection}{base.suffix}")


def _socket_addresses(sock: socket.socket) -> tuple[str, str]:
    """(local, remote) as "ip:port"; "?" for a side the kernel no longer knows (peer reset)."""
    addresses = []
    for getter in (sock.getsockname, sock.getpeername):
        try:
            addresses.append(_format_address(getter()))
        except OSError:
            addresses.append("?")
    return addresses[0], addresses[1]


def _abort_on_close(sock: socket.socket) -> None:
    """Make close() reset the connection (RST, or MP_FASTCLOSE for MPTCP).

    An interrupted endpoint must not leave its peer waiting: closed gracefully, an MPTCP
    socket that stops reading can leave the peer's data unacknowledged at the data level
    until the peer's own timeout.
    """
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def run_connection(
    sock: socket.socket,
    settings: EndpointSettings,
    connection: int,
    request: TransferRequest | None,
    timeseries: Path | None,
    received_file: Path | None = None,
    plan: RequestPlan | None = None,
) -> EndpointReport:
    """Carry one connected socket through request, payload and close; always a report.

    ``request`` is what a client asks for; a server passes None and reads it from the wire.
    A request/response client passes its ``plan`` too.
    """
    origin = settings.clock()
    started_at_unix = settings.wall_clock()
    local, remote = _socket_addresses(sock)
    writer = TimeseriesWriter(timeseries.open("w", encoding="ascii")) if timeseries else None
    sampler = SocketSampler(
        sock,
        settings.transport == "mptcp",
        (local, remote),
        settings.sample_interval_s,
        settings.clock,
        origin,
        writer,
    )
    progress = StreamProgress()
    requests = StreamProgress()  # request/response traffic: the request stream
    latencies = LatencyLog()
    sending = False
    end_at: float | None = None
    error: BaseException | None = None
    policy = settings.io_policy
    try:
        sampler.start()
        if request is None:
            request = TransferRequest.decode(receive_exactly(sock, REQUEST.size, policy))
        else:
            send_all(sock, request.encode(), policy)
        sending = (request.direction == "upload") == (settings.role == "client")
        if request.mode == "requests" and settings.role == "server":
            end_at = server_exchange(sock, request, requests, progress, policy, settings.sleep)
        elif request.mode == "requests":
            if plan is None:
                raise ValueError("a request/response client needs its RequestPlan")
            progress.keep_received(received_file)
            client_exchange(sock, plan, request.seed, requests, progress, policy, settings.sleep,
                            latencies)
            end_at = progress.finished_at
            finish_sending(sock, policy)
        elif sending:
            seconds = request.seconds
            send_stream(
                sock,
                PayloadSource(request.seed),
                progress,
                byte_limit=request.byte_limit,
                deadline=None if seconds is None else settings.clock() + seconds,
                policy=policy,
            )
            end_at = wait_until_acknowledged(sock, policy, settings.sleep)
            sampler.sample()
            finish_sending(sock, policy)
        else:
            progress.keep_received(received_file)
            receive_stream(sock, progress, policy)
            end_at = progress.finished_at
    except (OSError, IdleTimeout, ProtocolError, Interrupted) as exc:
        error = exc
        if isinstance(exc, Interrupted):
            _abort_on_close(sock)
    finally:
        sampler.finish()
        progress.close()
        if writer is not None:
            writer.close()
    tracker = sampler.tracker
    mptcp_used = tracker.mptcp_at_end and not (
        tracker.last_mptcp_info is not None and tracker.last_mptcp_info.fallback
    )
    start_at = progress.first_byte_at
    if end_at is None:
        end_at = progress.finished_at or settings.clock()
    duration = max(end_at - start_at, 0.0) if start_at is not None else 0.0
    goodput = progress.byte_count * 8 / duration / 1e6 if duration > 0 else 0.0
    kind, message = classify_error(error) if error is not None else (None, None)
    return EndpointReport(
        role=settings.role,
        connection=connection,
        transport=settings.transport,
        mptcp_requested=settings.transport == "mptcp",
        mptcp_used=mptcp_used,
        direction=request.direction if request else None,
        sending=sending,
        mode=request.mode if request else None,
        requested_bytes=request.byte_limit if request else None,
        requested_seconds=request.seconds if request else None,
        seed=payload_seed(request) if request and sending else None,
        bytes=progress.byte_count,
        sha256=progress.digest.hexdigest(),
        duration_s=round(duration, 6),
        goodput_mbps=round(goodput, 3),
        local=local,
        remote=remote,
        started_at_unix=round(started_at_unix, 6),
        subflows=tuple(tracker.subflow_reports()),
        mptcp_info=_counters(tracker.last_mptcp_info),
        samples=tracker.samples,
        mptcp_seen=tracker.mptcp_seen,
        error=message,
        error_kind=kind,
        exit_code=EXIT_OK if error is None else EXIT_TRANSFER_FAILED,
        **request_fields(request, requests, latencies),
    )


def request_fields(request: TransferRequest | None, requests: StreamProgress,
                   latencies: LatencyLog) -> dict[str, object]:
    """The EndpointReport fields of request/response traffic ({} for bulk traffic)."""
    if request is None or request.mode != "requests":
        return {}
    return {"requests_bytes": requests.byte_count, "requests_sha256": requests.digest.hexdigest(),
            "latencies_ms": tuple(latencies.latencies_ms),
            "request_sent_s": tuple(latencies.sent_at_s)}


class _ReportPrinter:
    """Writes JSON lines to stdout, one at a time (connections finish in threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def emit(self, line: str) -> None:
        with self._lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()


def _parse_host_port(text: str, what: str, port_required: bool = True) -> tuple[str, int]:
    """ADDR:PORT or [ADDR6]:PORT (the port optional where allowed): an IPv4-mapped IPv6 address
    makes a dual-stack socket (see open_socket)."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise argparse.ArgumentTypeError(f"{what} must be [ADDR6]:PORT, got {text!r}")
        port_text = rest[1:] if rest else ""
        if not port_text:
            if port_required:
                raise argparse.ArgumentTypeError(f"{what} must be [ADDR6]:PORT, got {text!r}")
            port_text = "0"
    elif text.count(":") > 1:
        raise argparse.ArgumentTypeError(f"{what}: write an IPv6 address in brackets, [ADDR6]:PORT, "
                                         f"got {text!r}")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            if port_required:
                raise argparse.ArgumentTypeError(f"{what} must be ADDR:PORT, got {text!r}")
            host, port_text = text, "0"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}: {host!r} is not an IP address") from None
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise argparse.ArgumentTypeError(f"{what}: port {port_text!r} is not in 0..65535")
    return host, int(port_text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a non-negative integer")
    return int(text)


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _seed(text: str) -> int:
    value = _non_negative_int(text)
    if value > SEED_MAX:
        raise argparse.ArgumentTypeError(f"seed must be <= 2**64-1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    return build_endpoint_parser(
        "python -m testbed.endpoints.kernel",
        "Kernel MPTCP / TCP traffic endpoint for the testbed (JSON lines on stdout).",
    )[0]


def build_endpoint_parser(
    prog: str, description: str
) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser, argparse.ArgumentParser]:
    """The endpoint command line every endpoint program shares (the runner starts any stack's
    endpoint with these arguments); returns (parser, server, client) for programs that add more."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    roles = parser.add_subparsers(dest="role", required=True)
    server = roles.add_parser("server", help="accept K connections, then exit")
    server.add_argument("--listen", required=True, type=lambda t: _parse_host_port(t, "--listen"))
    server.add_argument("--connections", type=_positive_int, default=1)
    client = roles.add_parser("client", help="open one connection and transfer")
    client.add_argument("--connect", required=True, type=lambda t: _parse_host_port(t, "--connect"))
    client.add_argument("--bind", type=lambda t: _parse_host_port(t, "--bind", port_required=False))
    amount = client.add_mutually_exclusive_group(required=True)
    amount.add_argument("--bytes", type=_non_negative_int, help="payload size in bytes")
    amount.add_argument("--seconds", type=_positive_float, help="send for this long")
    amount.add_argument("--requests", type=_positive_int,
                        help="request/response traffic: this many requests, one at a time")
    client.add_argument("--request-bytes", type=_positive_int, default=100)
    client.add_argument("--response-bytes", type=_positive_int, default=1000)
    client.add_argument("--rate-per-s", type=_positive_float,
                        help="start requests at this rate (default: back to back)")
    client.add_argument("--direction", choices=("upload", "download"), default="upload")
    client.add_argument("--seed", type=_seed, default=1)
    for sub in (server, client):
        transport = sub.add_mutually_exclusive_group()
        transport.add_argument("--mptcp", dest="transport", action="store_const", const="mptcp")
        transport.add_argument("--tcp", dest="transport", action="store_const", const="tcp")
        sub.set_defaults(transport="mptcp")
        sub.add_argument(
            "--timeout",
            type=_positive_float,
            default=30.0,
            help="seconds without progress (connect, accept, I/O) before failing",
        )
        sub.add_argument("--sample-ms", type=_positive_float, default=50.0)
        sub.add_argument("--timeseries", type=Path, help="per-subflow CSV samples")
        sub.add_argument("--received-file", type=Path,
                         help="when receiving, keep the payload bytes received in this file "
                              "(for the integrity oracle; PATH.<i>.bin per connection when several)")
    return parser, server, client


def _accept(listener: socket.socket, policy: IoPolicy) -> socket.socket:
    """Wait for one connection, in poll slices so a stop request is seen."""
    waiting_since = policy.clock()
    while True:
        policy.arm(listener, waiting_since)
        try:
            conn, _peer = listener.accept()
        except TimeoutError:
            if policy.idle_expired(waiting_since):
                raise IdleTimeout(f"no connection within {policy.io_timeout:g} s") from None
            continue
        return conn


def run_server(args: argparse.Namespace, settings: EndpointSettings, out: _ReportPrinter) -> int:
    connections: int = args.connections
    listener = open_socket(settings.transport, socket_family(args.listen[0]))
    with listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(args.listen)
        listener.listen(max(connections, 8))
        out.emit(
            ListeningEvent(
                address=_format_address(listener.getsockname()),
                transport=settings.transport,
                connections=connections,
                pid=os.getpid(),
            ).to_json()
        )
        finished: queue.Queue[EndpointReport] = queue.Queue()
        reports: list[EndpointReport] = []
        workers = 0

        def serve(conn: socket.socket, index: int) -> None:
            # Always hand over a report: the main thread waits for one per connection.
            with conn:
                try:
                    path = _timeseries_path(settings.timeseries, index, connections)
                    report = run_connection(conn, settings, index, None, path,
                                            _timeseries_path(settings.received_file, index,
                                                             connections))
                except Exception as exc:  # e.g. the time-series file cannot be created
                    _abort_on_close(conn)
                    report = failed_report(settings, index, exc, None)
            out.emit(report.to_json())
            finished.put(report)

        policy = settings.io_policy
        for index in range(connections):
            try:
                conn = _accept(listener, policy)
            except (OSError, IdleTimeout, Interrupted) as exc:
                # Every connection not accepted gets a report, so the runner can count.
                for missing in range(index, connections):
                    report = failed_report(settings, missing, exc, None)
                    reports.append(report)
                    out.emit(report.to_json())
                break
            threading.Thread(target=serve, args=(conn, index), name=f"connection-{index}").start()
            workers += 1
        # Workers notice a stop request themselves; this loop only collects.
        for _ in range(workers):
            reports.append(finished.get())
    return max((report.exit_code for report in reports), default=EXIT_OK)


def client_request(args: argparse.Namespace) -> tuple[TransferRequest, RequestPlan | None]:
    """What the client's command line asks for (the same for every stack's endpoint)."""
    if args.requests is not None:
        plan = RequestPlan(args.requests, args.request_bytes, args.response_bytes, args.rate_per_s)
        return plan.transfer_request(args.seed), plan
    if args.seconds is not None:
        return TransferRequest(args.direction, "seconds", round(args.seconds * 1e6), args.seed), None
    return TransferRequest(args.direction, "bytes", args.bytes, args.seed), None


def run_client(args: argparse.Namespace, settings: EndpointSettings, out: _ReportPrinter) -> int:
    request, plan = client_request(args)
    sock = open_socket(settings.transport, socket_family(args.connect[0]))
    with sock:
        try:
            if args.bind is not None:
                sock.bind(args.bind)
            sock.settimeout(settings.io_timeout)
            sock.connect(args.connect)
            settings.io_policy.check_stop()
        except (OSError, Interrupted) as exc:
            report = failed_report(settings, 0, exc, request)
        else:
            report = run_connection(sock, settings, 0, request, settings.timeseries,
                                    settings.received_file, plan)
    out.emit(report.to_json())
    return report.exit_code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stop = StopRequest()
    stop.install()
    settings = EndpointSettings(
        role=args.role,
        transport=args.transport,
        io_timeout=args.timeout,
        sample_interval_s=args.sample_ms / 1000.0,
        timeseries=args.timeseries,
        received_file=args.received_file,
        clock=time.monotonic,
        wall_clock=time.time,
        sleep=time.sleep,
        stop_reason=stop,
    )
    out = _ReportPrinter()
    try:
        if args.role == "server":
            return run_server(args, settings, out)
        return run_client(args, settings, out)
    except MptcpUnavailable as exc:
        print(str(exc), file=sys.stderr)
        out.emit(failed_report(settings, 0, exc, None, EXIT_MPTCP_UNAVAILABLE).to_json())
        return EXIT_MPTCP_UNAVAILABLE
    except OSError as exc:  # bind/listen failures: address in use, not local, ...
        _kind, message = classify_error(exc)
        print(f"{args.role}: {message}", file=sys.stderr)
        out.emit(failed_report(settings, 0, exc, None).to_json())
        return EXIT_TRANSFER_FAILED


if __name__ == "__main__":
    sys.exit(main())
