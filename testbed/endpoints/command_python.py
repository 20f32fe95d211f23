"""The bundled Python stack as a plain stdin/stdout program: the command contract's second
worked example (docs/command-endpoints.md).

    python -m testbed.endpoints.command_python client --connect ADDR:PORT [--local ADDR ...]
    python -m testbed.endpoints.command_python server --listen ADDR:PORT [--local ADDR ...]

The client sends everything it reads on stdin over one MPTCP connection, then closes it
(DATA_FIN) and exits once the peer acknowledged it; the server accepts one connection and
writes everything it receives to stdout, then exits when the peer closed. This is what any
third-party stack would do to run under `stack = "command"`: the program knows nothing of the
testbed's request or payload, only bytes in and bytes out. Because the stack has no kernel
socket for `ss` to see, it ends with one stderr line `testbed-stack-report {json}` (MPTCP in
use, per-subflow totals, its counters); the server says `listening` on stderr when ready.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from dataclasses import asdict
from typing import Any

from testbed.endpoints.kernel import StopRequest, _parse_host_port, _positive_float
from testbed.endpoints.sampler import SubflowTracker
from testbed.endpoints.stack_endpoint import STACK_EPHEMERAL_PORTS, _address, host_addresses
from testbed.endpoints.stack_observe import StackObserver
from testbed.mptcp import events
from testbed.mptcp.config import StackConfig
from testbed.mptcp.connection import Connection
from testbed.mptcp.driver.guard import GuardError, KernelGuard
from testbed.mptcp.driver.loop import StackDriver
from testbed.mptcp.driver.packet_io import PacketIO, PortFilter
from testbed.mptcp.host import MptcpHost

STACK_REPORT_PREFIX = "testbed-stack-report "
READ_CHUNK = 1 << 16
SAMPLE_S = 0.1
CLOSE_GRACE_S = 2.0


class PipeApp:
    """Moves bytes between the stdio pipes and one stack connection."""

    def __init__(self, role: str, host: MptcpHost, timeout_s: float, stop: StopRequest) -> None:
        self.role = role
        self.host = host
        self.timeout_s = timeout_s
        self.stop = stop
        self.connection: Connection | None = None
        self.pending = b""
        self.stdin_done = False
        self.close_sent_at: float | None = None
        self.peer_closed = False
        self.closed_reason: str | None = None
        self.error: str | None = None
        self.last_progress = time.monotonic()
        self.started = self.last_progress
        self.tracker = SubflowTracker()
        self.observer: StackObserver | None = None
        self.next_sample = 0.0
        self.finished = False
        self.established = False
        if role == "client":
            os.set_blocking(sys.stdin.fileno(), False)

    def adopt(self, connection: Connection) -> None:
        self.connection = connection
        self.observer = StackObserver(connection)

    def on_event(self, event: events.Event, now: float) -> None:
        if isinstance(event, events.ConnectionAccepted) and self.connection is None:
            self.adopt(event.connection)
        if event.connection is not self.connection:
            return
        self.last_progress = now
        if isinstance(event, (events.ConnectionEstablished, events.ConnectionAccepted)):
            self.established = True
        elif isinstance(event, events.DataReceived):
            self._deliver()
        elif isinstance(event, events.DataEndReceived):
            self._deliver()
            self.peer_closed = True
        elif isinstance(event, events.ConnectionClosed):
            self.closed_reason = event.reason
            if event.reason != "closed":
                self.error = f"connection {event.reason}"

    def _deliver(self) -> None:
        assert self.connection is not None
        data = self.connection.receive()
        view = memoryview(data)
        while view:  # stdout is the wrapper's pipe: a blocking write just waits for its reader
            view = view[os.write(sys.stdout.fileno(), view):]

    def _feed(self, now: float) -> bool:
        """Stdin into the connection's send buffer; True when stdin may have more right now."""
        connection = self.connection
        assert connection is not None
        while not self.stdin_done:
            room = connection.send_buffer_free()
            if room <= 0:
                return False
            if not self.pending:
                try:
                    self.pending = os.read(sys.stdin.fileno(), min(READ_CHUNK, room))
                except BlockingIOError:
                    return True
                if not self.pending:
                    self.stdin_done = True
                    break
            count = connection.send(self.pending[:room])
            self.pending = self.pending[count:]
            if count:
                self.last_progress = now
        if self.stdin_done and self.close_sent_at is None:
            connection.close()
            self.close_sent_at = now
        return False

    def step(self, now: float) -> float | None:
        if self.finished:
            return None
        connection = self.connection
        reason = self.stop()
        if reason is not None:
            self.error = reason
            if connection is not None:
                connection.abort(now)
            self.finished = True
            return None
        if connection is not None and now >= self.next_sample and self.observer is not None:
            self.tracker.observe(now - self.started, self.observer.observe(now))
            self.next_sample = now + SAMPLE_S
        more = False
        if connection is not None and self.closed_reason is None:
            if self.role == "client" and self.established:
                more = self._feed(now)
            if self.role == "server" and self.peer_closed and self.close_sent_at is None:
                connection.close()
                self.close_sent_at = now
        if self._done(now):
            if self.observer is not None:  # the last totals, not those of 100 ms ago
                self.tracker.observe(now - self.started, self.observer.observe(now))
            self.finished = True
            return None
        if now - self.last_progress >= self.timeout_s:
            self.error = f"no progress for {self.timeout_s:g} s"
            if connection is not None:
                connection.abort(now)
            self.finished = True
            return None
        return now + (0.001 if more else 0.005)

    def _done(self, now: float) -> bool:
        connection = self.connection
        if connection is None:
            return False
        if self.closed_reason is not None:
            return True
        if self.close_sent_at is None:
            return False
        acked = connection.data.data_fin_acked if connection.mode == "mptcp" else True
        return (acked and (self.role == "client" or self.peer_closed)) or \
            now - self.close_sent_at >= CLOSE_GRACE_S + self.timeout_s

    def report(self) -> dict[str, Any]:
        connection = self.connection
        counters = dict(connection.counters) if connection is not None else {}
        return {"mptcp_used": connection is not None and connection.mode == "mptcp",
                "subflows": [asdict(s) for s in self.tracker.subflow_reports()],
                "stack_counters": {k: v for k, v in counters.items() if isinstance(v, int)}}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m testbed.endpoints.command_python",
                                     description="The bundled MPTCP stack as a stdin/stdout program.")
    roles = parser.add_subparsers(dest="role", required=True)
    server = roles.add_parser("server", help="write what one connection receives to stdout")
    server.add_argument("--listen", required=True, type=lambda t: _parse_host_port(t, "--listen"))
    client = roles.add_parser("client", help="send stdin over one connection")
    client.add_argument("--connect", required=True, type=lambda t: _parse_host_port(t, "--connect"))
    for sub in (server, client):
        sub.add_argument("--local", type=_address, action="append",
                         help="a local address of the stack (repeat; default: all of the host's)")
        sub.add_argument("--timeout", type=_positive_float, default=30.0)
        sub.add_argument("--rng-seed", type=int, default=None)
        sub.add_argument("--checksum", action="store_true")
    return parser


def run(args: argparse.Namespace, stop: StopRequest) -> int:
    addresses = args.local or host_addresses()
    config = StackConfig.from_dict({"checksum": True} if args.checksum else {})
    if args.role == "server":
        port = args.listen[1]
        port_ranges = [(port, port)]
    else:
        port_ranges = [STACK_EPHEMERAL_PORTS]
    seed = args.rng_seed if args.rng_seed is not None else int.from_bytes(os.urandom(8), "big")
    host = MptcpHost(addresses=addresses, config=config, rng=random.Random(seed), now=time.monotonic(),
                     ephemeral_ports=STACK_EPHEMERAL_PORTS)
    app = PipeApp(args.role, host, args.timeout, stop)
    io = PacketIO(addresses, PortFilter(port_ranges))
    try:
        with KernelGuard(addresses, port_ranges):
            driver = StackDriver(host, io)
            if args.role == "server":
                host.listen(port)
                print(f"listening on {args.listen[0]}:{port}", file=sys.stderr, flush=True)
            else:
                address, remote_port = args.connect
                app.adopt(host.connect(address, remote_port, now=time.monotonic(),
                                       local_address=addresses[0]))
            driver.run(app, stop=lambda: False)
    finally:
        io.close()
        sys.stdout.flush()
    print(STACK_REPORT_PREFIX + json.dumps(app.report(), separators=(",", ":")), file=sys.stderr,
          flush=True)
    if app.error is not None:
        print(f"{args.role}: {app.error}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stop = StopRequest()
    stop.install()
    try:
        return run(args, stop)
    except (GuardError, PermissionError) as exc:
        print(f"{args.role}: the stack's driver is unavailable: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
