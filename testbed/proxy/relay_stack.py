"""The python-stack proxy: the bundled MPTCP stack terminates the client's connection on the
proxy node, and each connection is relayed over a kernel TCP socket to the server.

    python -m testbed.proxy.relay_stack --server 10.0.100.2 --port 5201 --ready FILE

Runs on the proxy node, which routes the server's address. The stack owns that address for
the server's port (as a python endpoint owns its host's addresses): its AF_PACKET taps see the
client's segments to server:port on whichever path they come, the guard table
(testbed.mptcp.driver.guard) drops them at prerouting so the node's kernel neither forwards
nor answers them, and the stack answers as the server's address over raw sockets (bound with
`net.ipv4.ip_nonlocal_bind=1`, which the experiment sets: the address is not the node's). The
client's join over the other path reaches the same stack, which knows its token.

For every connection the stack accepts, the relay dials the server with plain kernel TCP from
the node's own address and copies bytes both ways: the client's DATA_FIN becomes a
shutdown(SHUT_WR) of the TCP socket, the server's end of stream a close() (DATA_FIN) of the
MPTCP connection, so half-close passes through; a reset on one side aborts the other (a TCP
RST, or MP_FASTCLOSE). It never looks inside the bytes. On SIGTERM it prints its counts.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import random
import socket
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from testbed.endpoints.kernel import StopRequest
from testbed.mptcp import events
from testbed.mptcp.config import StackConfig
from testbed.mptcp.driver.guard import GuardError, KernelGuard
from testbed.mptcp.driver.loop import StackDriver
from testbed.mptcp.driver.packet_io import PacketIO, PortFilter
from testbed.mptcp.errors import LocalProtocolError
from testbed.mptcp.host import MptcpHost

PIECE = 256 * 1024
BLOCKED_POLL_S = 0.002  # how soon to retry a relay whose TCP send or MPTCP send buffer is full
CONNECT_TIMEOUT_S = 10.0
EXIT_DRIVER_UNAVAILABLE = 3


class Relay:
    """One accepted MPTCP connection and its kernel TCP socket to the server."""

    def __init__(self, connection: object, target: tuple[str, int], now: float) -> None:
        self.connection = connection
        self.upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.upstream.setblocking(False)
        self.upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connect_started = now
        self.connected = False
        self.failed: str | None = None
        self.to_server = b""
        self.to_client = b""
        self.client_ended = False  # DATA_FIN from the client
        self.server_shut = False  # our shutdown(SHUT_WR) towards the server
        self.server_ended = False  # end of stream from the server
        self.client_closed = False  # our close() (DATA_FIN) towards the client
        self.finished = False
        self.closed_reason: str | None = None  # the MPTCP connection's ConnectionClosed
        self.bytes_to_server = 0
        self.bytes_to_client = 0
        code = self.upstream.connect_ex(target)
        if code not in (0, errno.EINPROGRESS):
            self.failed = f"connect: {os.strerror(code)}"

    def _check_connected(self, now: float) -> None:
        code = self.upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code not in (0, errno.EINPROGRESS):
            self.failed = f"connect: {os.strerror(code)}"
            return
        try:
            self.upstream.getpeername()
            self.connected = True
        except OSError:
            if now - self.connect_started > CONNECT_TIMEOUT_S:
                self.failed = "connect: timed out"

    def pump(self, now: float) -> bool:
        """Move what can be moved now; True when blocked on a full buffer (poll again soon)."""
        if self.finished or self.failed:
            return False
        if not self.connected:
            self._check_connected(now)
            if not self.connected:
                return self.failed is None
        connection = self.connection
        blocked = False
        try:
            while True:  # client -> server
                if not self.to_server:
                    self.to_server = connection.receive(PIECE)  # type: ignore[attr-defined]
                    if not self.to_server:
                        break
                try:
                    sent = self.upstream.send(self.to_server)
                except BlockingIOError:
                    blocked = True
                    break
                self.bytes_to_server += sent
                self.to_server = self.to_server[sent:]
            if self.client_ended and not self.to_server and not self.server_shut:
                self.upstream.shutdown(socket.SHUT_WR)
                self.server_shut = True
            while not self.server_ended and not self.client_closed:  # server -> client
                if not self.to_client:
                    try:
                        self.to_client = self.upstream.recv(PIECE)
                    except BlockingIOError:
                        break
                    if not self.to_client:
                        self.server_ended = True
                        break
                taken = connection.send(self.to_client)  # type: ignore[attr-defined]
                self.bytes_to_client += taken
                self.to_client = self.to_client[taken:]
                if self.to_client:
                    blocked = True
                    break
            if self.server_ended and not self.to_client and not self.client_closed:
                connection.close()  # type: ignore[attr-defined]
                self.client_closed = True
        except OSError as exc:
            self.failed = f"server side: {exc.strerror or exc}"
        return blocked

    def reset_upstream(self) -> None:
        with contextlib.suppress(OSError):
            self.upstream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.upstream.close()


class RelayApp:
    """The DriverApp: a relay per accepted connection; runs until stopped."""

    def __init__(self, stop: StopRequest, announce: tuple[str, int] | None = None) -> None:
        self.stop = stop
        self.announce = announce  # the short-circuit: ADD_ADDR of (server address, port)
        self.relays: dict[int, Relay] = {}
        self.counts = {"connections": 0, "relayed": 0, "errors": 0, "upstream_failed": 0,
                       "bytes_to_server": 0, "bytes_to_client": 0}

    @property
    def finished(self) -> bool:
        return False

    def readable(self) -> list[socket.socket]:
        return [r.upstream for r in self.relays.values()
                if r.connected and not r.server_ended and not r.to_client]

    def on_event(self, event: events.Event, now: float) -> None:
        key = id(event.connection)
        if isinstance(event, events.ConnectionAccepted):
            first = event.connection.live_subflows[0].tcp
            self.relays[key] = Relay(event.connection, (first.local_address, first.local_port), now)
            self.counts["connections"] += 1
            if self.announce is not None:
                try:
                    event.connection.add_address(self.announce[0], now=now, port=self.announce[1])
                    self.counts["announced"] = self.counts.get("announced", 0) + 1
                except LocalProtocolError:  # the connection fell back to TCP: nothing to announce
                    pass
            return
        relay = self.relays.get(key)
        if relay is None:
            return
        if isinstance(event, events.DataEndReceived):
            relay.client_ended = True
        elif isinstance(event, events.ConnectionClosed):
            relay.closed_reason = event.reason
            if event.reason == "closed":
                # both DATA_FINs acknowledged, possibly in the same batch as the client's:
                # step() passes the last bytes and the end on to the server, then finishes
                relay.client_ended = True
            else:
                self._finish(relay, clean=False)

    def _finish(self, relay: Relay, clean: bool) -> None:
        relay.finished = True
        self.relays.pop(id(relay.connection), None)
        self.counts["bytes_to_server"] += relay.bytes_to_server
        self.counts["bytes_to_client"] += relay.bytes_to_client
        if clean:
            self.counts["relayed"] += 1
            relay.upstream.close()
        else:
            self.counts["errors"] += 1
            relay.reset_upstream()

    def step(self, now: float) -> float | None:
        poll = False
        for relay in list(self.relays.values()):
            poll |= relay.pump(now)
            if relay.closed_reason == "closed" and not relay.failed and relay.server_shut:
                self._finish(relay, clean=relay.client_closed)
                continue
            if relay.failed:
                if not relay.connected:
                    self.counts["upstream_failed"] += 1
                relay.connection.abort(now)  # type: ignore[attr-defined]
                if not relay.finished:
                    self._finish(relay, clean=False)
        return now + BLOCKED_POLL_S if poll else None


def run(server: str, port: int, ready: str | None, stop: StopRequest,
        announce_port: int | None = None) -> int:
    start = time.monotonic()
    rng = random.Random(int.from_bytes(os.urandom(8), "big"))
    host = MptcpHost(addresses=[server], config=StackConfig(), rng=rng, now=start)
    app = RelayApp(stop, None if announce_port is None else (server, announce_port))
    ports = [(port, port)]
    io = PacketIO([server], PortFilter(ports))
    try:
        with KernelGuard([server], ports):
            host.listen(port)
            driver = StackDriver(host, io)
            if ready:
                Path(ready).write_text("ready\n")
            driver.run(app, stop=lambda: stop() is not None)
            stats = driver.stats()
    finally:
        io.close()
    print(json.dumps({"relay": "python", **app.counts, "driver_dropped": stats["dropped"],
                      "io": stats["io"]}), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.proxy.relay_stack")
    parser.add_argument("--server", required=True, help="the intercepted server address the stack answers as")
    parser.add_argument("--port", type=int, required=True, help="the server's port")
    parser.add_argument("--announce-port", type=int,
                        help="announce the server's address with this port (ADD_ADDR) on every connection")
    parser.add_argument("--ready")
    args = parser.parse_args(argv)
    stop = StopRequest()
    stop.install()
    try:
        return run(args.server, args.port, args.ready, stop, args.announce_port)
    except (GuardError, PermissionError, OSError) as exc:
        print(f"relay_stack: the stack's driver is unavailable: {exc}", file=sys.stderr)
        return EXIT_DRIVER_UNAVAILABLE


if __name__ == "__main__":
    sys.exit(main())
