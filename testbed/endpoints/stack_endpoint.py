"""Traffic endpoint on the bundled Python MPTCP stack, run inside a testbed host.

Same command line, same bytes on the wire and same JSON-lines output as
``python -m testbed.endpoints.kernel`` (see there), so the runner can swap one for the
other and a python endpoint talks to a kernel one; plus the stack's options:

    python -m testbed.endpoints.stack_endpoint server --listen ADDR:PORT [...]
    python -m testbed.endpoints.stack_endpoint client --connect ADDR:PORT [--bind ADDR] [...]
      stack options: --local ADDR (repeat; default every address of the host),
      --cc reno|lia|olia|balia --scheduler NAME --path-manager NAME --checksum
      --backup ADDR (subflows from ADDR open as backup) --announce ADDR[:PORT] (ADD_ADDR it, with
      that port: the server then also takes joins there)
      --stack-config JSON (any StackConfig field) --at AMOUNT:KIND[:ADDR] (timed signalling,
      see stack_transfer.Action) --driver-stats (one extra {"event":"driver",...} line on stderr)
      --no-ack-coalescing (see driver.ack_coalesce)

Addresses of either family (IPv6 ones bracketed where a port follows, `[fd00::1]:5201`; an
IPv4-mapped one, as the runner writes a dual-stack socket's address, stands for the IPv4
address): one connection holds IPv4 and IPv6 subflows (docs/ipv6.md).

The stack owns the host's addresses next to the kernel: an nft table (driver.guard) hides
its segments from the kernel for the program's lifetime. ``--tcp`` runs the stack with
MPTCP disabled (plain TCP). Exit codes as the kernel endpoint (3: could not open the raw
sockets or install the nft table: not root, or no nft).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import socket
import sys
import time
from typing import Any

from testbed.endpoints.kernel import (
    EXIT_OK,
    EXIT_TRANSFER_FAILED,
    StopRequest,
    _non_negative_int,
    _positive_int,
    _timeseries_path,
    build_endpoint_parser,
    client_request,
)
from testbed.endpoints.local_addresses import interface_addresses
from testbed.endpoints.report import EndpointReport, ListeningEvent
from testbed.endpoints.request_response import RequestPlan
from testbed.endpoints.stack_transfer import Action, JobSettings, TransferJob
from testbed.endpoints.transfer import TransferRequest
from testbed.mptcp import events
from testbed.mptcp.addresses import canonical_address, same_family
from testbed.mptcp.config import CONGESTION_CONTROLS, PATH_MANAGERS, SCHEDULERS, StackConfig
from testbed.mptcp.driver.guard import GuardError, KernelGuard
from testbed.mptcp.driver.loop import BATCH, StackDriver
from testbed.mptcp.driver.packet_io import PacketIO, PortFilter
from testbed.mptcp.host import MptcpHost
from testbed.net.topo import host_port

EXIT_DRIVER_UNAVAILABLE = 3
# Ports the stack picks for its own connections: above the kernel's ip_local_port_range
# (32768-60999), so the kernel of the same host never uses them and the guard can drop them.
STACK_EPHEMERAL_PORTS = (61000, 65535)


def host_addresses() -> list[str]:
    """Every IPv4 and global IPv6 address of this namespace's interfaces (not loopback, not
    link-local: the testbed routes neither), in interface order, IPv4 first on each."""
    found = [(index, family != socket.AF_INET, address)
             for family in (socket.AF_INET, socket.AF_INET6)
             for index, address in interface_addresses(family)]
    usable = [(index, v6, address) for index, v6, address in found
              if not (ipaddress.ip_address(address).is_loopback
                      or ipaddress.ip_address(address).is_link_local)]
    return [canonical_address(address) for _, _, address in sorted(usable)]


def _address(text: str) -> str:
    """An IPv4 or IPv6 address in the stack's spelling (an IPv4-mapped one as IPv4)."""
    try:
        return canonical_address(text.removeprefix("[").removesuffix("]"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 or IPv6 address") from None


def _announce_target(text: str) -> tuple[str, int | None]:
    """`ADDR`, `ADDR:PORT`, `ADDR6` or `[ADDR6]:PORT`: what --announce ADD_ADDRs."""
    if text.startswith("["):
        address, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    elif text.count(":") > 1:
        address, port = text, ""
    else:
        address, _, port = text.partition(":")
    if not port:
        return _address(address), None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"--announce {text!r}: the port must be 1..65535")
    return _address(address), int(port)


def _action(text: str) -> Action:
    try:
        return Action.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _stack_config(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--stack-config is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--stack-config must be a JSON object")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The kernel endpoint's command line (the runner's contract), plus the stack's own options."""
    parser, server, client = build_endpoint_parser(
        "python -m testbed.endpoints.stack_endpoint",
        "Bundled Python MPTCP stack traffic endpoint (JSON lines on stdout).",
    )
    for sub in (server, client):
        sub.add_argument("--local", type=_address, action="append",
                         help="a local address of the stack (repeat; default: all of the host's)")
        sub.add_argument("--cc", choices=CONGESTION_CONTROLS)
        sub.add_argument("--scheduler", choices=SCHEDULERS)
        sub.add_argument("--path-manager", choices=PATH_MANAGERS)
        sub.add_argument("--checksum", action="store_true", help="request DSS checksums")
        sub.add_argument("--backup", type=_address, action="append", default=[],
                         help="open subflows from this local address as backup (MP_JOIN B bit)")
        sub.add_argument("--announce", type=_announce_target, action="append", default=[],
                         help="announce this local address (ADD_ADDR) once MPTCP is up; "
                              "ADDR:PORT announces it with that port")
        sub.add_argument("--stack-config", type=_stack_config, default={},
                         help="JSON object of StackConfig fields")
        sub.add_argument("--at", type=_action, action="append", default=[],
                         help="timed action AMOUNT[s|k|K|M|G]:KIND[:ADDR], e.g. 4M:remove-addr:10.0.2.1")
        sub.add_argument("--driver-stats", action="store_true",
                         help="print driver statistics (timer lateness, pkt counts) to stderr")
        sub.add_argument("--batch", type=_positive_int, default=BATCH,
                         help="packets read per loop iteration before the stack's output is sent")
        sub.add_argument("--no-ack-coalescing", action="store_true",
                         help="feed the stack every pure ACK of a batch (default: a run of pure "
                              "cumulative ACKs of one subflow is folded into its newest one)")
        sub.add_argument("--rng-seed", type=_non_negative_int, default=None,
                         help="seed of the stack's keys, nonces and ISNs (default: random)")
    return parser


def stack_config(args: argparse.Namespace) -> StackConfig:
    values: dict[str, Any] = dict(args.stack_config)
    if args.transport == "tcp":
        values["mptcp_enabled"] = False
    for option, field_name in (("cc", "congestion_control"), ("scheduler", "scheduler"),
                               ("path_manager", "path_manager")):
        if getattr(args, option) is not None:
            values[field_name] = getattr(args, option)
    if args.checksum:
        values["checksum"] = True
    if args.backup:
        values["backup_addresses"] = tuple(args.backup)
    return StackConfig.from_dict(values)


class EndpointApp:
    """The DriverApp of the endpoint program: jobs per connection, reports on stdout."""

    def __init__(self, args: argparse.Namespace, host: MptcpHost, stop: StopRequest,
                 connections: int) -> None:
        self.args = args
        self.host = host
        self.stop = stop
        self.connections = connections
        self.jobs: dict[int, TransferJob] = {}
        self.reports: list[EndpointReport] = []
        self.accepted = 0
        self.waiting_since = time.monotonic()
        self.failed_to_accept: str | None = None

    def settings(self, index: int) -> JobSettings:
        args = self.args
        return JobSettings(role=args.role, io_timeout=args.timeout,
                           sample_interval_s=args.sample_ms / 1000.0,
                           timeseries=_timeseries_path(args.timeseries, index, self.connections),
                           received_file=_timeseries_path(args.received_file, index,
                                                          self.connections),
                           actions=tuple(args.at), announce=tuple(args.announce))

    def add_job(self, connection: Any, request: TransferRequest | None, now: float,
                plan: RequestPlan | None = None) -> None:
        index = self.accepted
        self.accepted += 1
        self.waiting_since = now
        self.jobs[id(connection)] = TransferJob(index, self.settings(index), connection,
                                                request, now, time.time(), plan)

    @property
    def finished(self) -> bool:
        if self.failed_to_accept is not None:
            return True
        return len(self.reports) == self.connections

    def on_event(self, event: events.Event, now: float) -> None:
        if isinstance(event, events.ConnectionAccepted) and id(event.connection) not in self.jobs:
            if self.accepted >= self.connections:
                event.connection.abort(now)
                return
            self.add_job(event.connection, None, now)
        job = self.jobs.get(id(event.connection))
        if job is not None:
            job.on_event(event, now)

    def step(self, now: float) -> float | None:
        deadline: float | None = None
        for job in list(self.jobs.values()):
            if job.finished:
                continue
            job_deadline = job.step(now, self.stop())
            if job.finished:
                report = job.report()
                self.reports.append(report)
                emit(report.to_json())
            elif job_deadline is not None and (deadline is None or job_deadline < deadline):
                deadline = job_deadline
        if self.args.role == "server" and self.accepted < self.connections:
            if any(not job.finished for job in self.jobs.values()):
                # a connection in progress is progress: the server waits for the next one only
                # from when it last had one (as the kernel endpoint's accept does), not from its
                # start, or a backend gives up while a run's later connections are still coming
                self.waiting_since = now
            reason = self.stop()
            if reason is None and now - self.waiting_since >= self.args.timeout:
                reason = f"no connection within {self.args.timeout:g} s"
            if reason is not None:
                self.failed_to_accept = reason
        return deadline


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _failed(args: argparse.Namespace, index: int, kind: str, message: str) -> EndpointReport:
    return EndpointReport(
        role=args.role, connection=index, transport=args.transport,
        mptcp_requested=args.transport == "mptcp", mptcp_used=False, direction=None,
        sending=False, mode=None, requested_bytes=None, requested_seconds=None, seed=None,
        bytes=0, sha256="e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        duration_s=0.0, goodput_mbps=0.0, local=None, remote=None, started_at_unix=None,
        error=message, error_kind=kind, exit_code=EXIT_TRANSFER_FAILED)  # type: ignore[arg-type]


def run(args: argparse.Namespace, stop: StopRequest) -> int:
    config = stack_config(args)
    addresses = args.local or host_addresses()
    if args.role == "client" and args.bind is not None:
        bind_address = canonical_address(args.bind[0])  # (a dual-stack socket's ::ffff:a.b.c.d)
        if bind_address not in addresses:
            raise ValueError(f"--bind {bind_address} is not one of the local addresses {addresses}")
        addresses = [bind_address, *[a for a in addresses if a != bind_address]]
    if args.role == "server":
        listen_address, port = args.listen
        if port == 0:
            raise ValueError("--listen: the python stack needs an explicit port")
        if listen_address not in ("0.0.0.0", "::"):
            listen_address = canonical_address(listen_address)
        if listen_address not in ("0.0.0.0", "::", *addresses):
            raise ValueError(f"--listen {listen_address} is not one of the local addresses {addresses}")
        # joins may come to the ports we announce (the host takes a join on any port)
        port_ranges = [(port, port), *{(p, p) for _, p in args.announce if p is not None and p != port}]
    else:
        port_ranges = [STACK_EPHEMERAL_PORTS]
        remote = canonical_address(args.connect[0])
        sources = addresses[:1] if args.bind else addresses
        if not any(same_family(remote, local) for local in sources):
            raise ValueError(f"--connect {remote}: no local address of its family to connect "
                             f"from ({'--bind' if args.bind else 'local'} {', '.join(sources)})")
    rng = random.Random(args.rng_seed if args.rng_seed is not None else int.from_bytes(os.urandom(8), "big"))
    start = time.monotonic()
    host = MptcpHost(addresses=addresses, config=config, rng=rng, now=start,
                     ephemeral_ports=STACK_EPHEMERAL_PORTS)
    connections = args.connections if args.role == "server" else 1
    app = EndpointApp(args, host, stop, connections)
    io = PacketIO(addresses, PortFilter(port_ranges))
    try:
        with KernelGuard(addresses, port_ranges):
            driver = StackDriver(host, io, batch=args.batch, coalesce_acks=not args.no_ack_coalescing)
            if args.role == "server":
                host.listen(port)
                emit(ListeningEvent(address=host_port(listen_address, port), transport=args.transport,
                                    connections=connections, pid=os.getpid()).to_json())
            else:
                request, plan = client_request(args)
                remote, remote_port = args.connect
                remote = canonical_address(remote)
                connection = host.connect(remote, remote_port, now=time.monotonic(),
                                          local_address=addresses[0] if args.bind else None)
                app.add_job(connection, request, time.monotonic(), plan)
            driver.run(app, stop=lambda: False)
            if args.driver_stats:
                print(json.dumps({"event": "driver", **driver.stats()}), file=sys.stderr)
    finally:
        io.close()
    if app.failed_to_accept is not None:
        kind = "interrupted" if stop() else "timeout"
        for index in range(app.accepted, connections):
            report = _failed(args, index, kind, app.failed_to_accept)
            app.reports.append(report)
            emit(report.to_json())
    return max((report.exit_code for report in app.reports), default=EXIT_OK)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stop = StopRequest()
    stop.install()
    try:
        return run(args, stop)
    except ValueError as exc:
        print(f"{args.role}: {exc}", file=sys.stderr)
        return 2
    except (GuardError, PermissionError) as exc:
        print(f"{args.role}: the stack's driver is unavailable: {exc}", file=sys.stderr)
        emit(_failed(args, 0, "os", str(exc)).to_json())
        return EXIT_DRIVER_UNAVAILABLE


if __name__ == "__main__":
    sys.exit(main())
