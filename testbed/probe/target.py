"""The implementation under test as an echo server in the target host.

    python -m testbed.probe.target {kernel|python} --listen ADDRESS --port PORT [--announce ADDRESS]
    python -m testbed.probe.target {kernel|python} --connect ADDRESS --port PORT --local A [--local B]

Probes need a peer that answers: every byte a connection receives is sent back, and the end
of the peer's data (DATA_FIN, or FIN after a fallback) closes the connection from this side.
`kernel` is a Linux MPTCP socket (IPPROTO_MPTCP); `python` is the bundled sans-IO stack on
raw packets (the same driver and guard as testbed.endpoints.stack_endpoint), with
`--announce` sending ADD_ADDR for a second local address on every connection it accepts.
Prints one line, `listening`, once connections can arrive. With `--connect` the target is a
client instead: it connects, sends CLIENT_DATA, reads for `--seconds` and closes (the python
stack joins from its other `--local` addresses; the kernel from its `subflow` endpoints).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import socket
import sys
import threading
import time

from testbed.endpoints.kernel import StopRequest
from testbed.mptcp import events
from testbed.mptcp.config import StackConfig
from testbed.mptcp.errors import LocalProtocolError
from testbed.mptcp.host import MptcpHost

IPPROTO_MPTCP = 262
CLIENT_DATA = b"hello from the target as a client\n"
STACK_EPHEMERAL = (61000, 65535)
ADD_ADDR_TIMEOUT_S = 1.0  # the probes wait for a retransmitted ADD_ADDR; Linux's default is 120 s


def python_target_config() -> StackConfig:
    """The bundled stack as a probe target: no joins of its own (the prober drives them)."""
    return StackConfig(path_manager="none", add_addr_timeout_s=ADD_ADDR_TIMEOUT_S)


class EchoApp:
    """Echo every connection of a sans-IO host; used on raw packets and in memory."""

    def __init__(self, announce: str | None = None) -> None:
        self.announce = announce
        self.pending: dict[object, bytes] = {}

    @property
    def finished(self) -> bool:
        return False

    def on_event(self, event: events.Event, now: float) -> None:
        # events of one batch are handled after all its packets: a connection the peer
        # reset in the same batch refuses receive()/send(), which must not end the server
        with contextlib.suppress(LocalProtocolError):
            self._on_event(event, now)

    def _on_event(self, event: events.Event, now: float) -> None:
        connection = event.connection
        if isinstance(event, events.ConnectionAccepted) and self.announce is not None:
            with contextlib.suppress(Exception):  # fell back already: nothing to announce on
                connection.add_address(self.announce, now=now)
        elif isinstance(event, events.DataReceived):
            self.pending[connection] = self.pending.get(connection, b"") + connection.receive()
            self._flush(connection)
        elif isinstance(event, events.SendBufferAvailable):
            self._flush(connection)
        elif isinstance(event, events.DataEndReceived):
            self._flush(connection)
            connection.close()
        elif isinstance(event, events.ConnectionClosed):
            self.pending.pop(connection, None)

    def _flush(self, connection: object) -> None:
        data = self.pending.get(connection, b"")
        if data:
            sent = connection.send(data)  # type: ignore[attr-defined]
            self.pending[connection] = data[sent:]

    def step(self, now: float) -> float | None:
        return None


class ClientApp:
    """The target as a client: send CLIENT_DATA once established, read what comes back."""

    def __init__(self, until: float) -> None:
        self.until = until
        self.done = False

    @property
    def finished(self) -> bool:
        return self.done

    def on_event(self, event: events.Event, now: float) -> None:
        with contextlib.suppress(LocalProtocolError):
            if isinstance(event, events.ConnectionEstablished):
                event.connection.send(CLIENT_DATA)
            elif isinstance(event, events.DataReceived):
                event.connection.receive()
            elif isinstance(event, events.ConnectionClosed):
                self.done = True

    def step(self, now: float) -> float | None:
        if now >= self.until:
            self.done = True
        return self.until


def python_client_config() -> StackConfig:
    return StackConfig(path_manager="fullmesh")


def run_python_client(local: list[str], remote: str, port: int, seconds: float,
                      stop: StopRequest) -> int:
    from testbed.mptcp.driver.guard import KernelGuard
    from testbed.mptcp.driver.loop import StackDriver
    from testbed.mptcp.driver.packet_io import PacketIO, PortFilter

    host = MptcpHost(addresses=local, config=python_client_config(),
                     rng=random.Random(int.from_bytes(os.urandom(8), "big")), now=time.monotonic(),
                     ephemeral_ports=STACK_EPHEMERAL)
    io = PacketIO(local, PortFilter([STACK_EPHEMERAL]))
    try:
        with KernelGuard(local, [STACK_EPHEMERAL], table=f"tb_probe_client_{os.getpid()}"):
            host.connect(remote, port, now=time.monotonic(), local_address=local[0])
            StackDriver(host, io).run(ClientApp(time.monotonic() + seconds),
                                      stop=lambda: stop() is not None)
    finally:
        io.close()
    return 0


def run_kernel_client(remote: str, port: int, seconds: float, stop: StopRequest) -> int:
    end = time.monotonic() + seconds
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP) as sock:
        sock.settimeout(seconds)
        try:
            sock.connect((remote, port))
            sock.sendall(CLIENT_DATA)
            sock.settimeout(0.2)
            while time.monotonic() < end and stop() is None:
                try:
                    if not sock.recv(65536):
                        break
                except TimeoutError:
                    continue
        except OSError:
            return 0  # the prober reset or refused it: that is the probe's business
    return 0


def run_kernel(address: str, port: int, stop: StopRequest) -> int:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((address, port))
    server.listen(128)
    server.settimeout(0.2)
    print("listening", flush=True)

    def echo(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass

    while not stop():
        try:
            conn, _ = server.accept()
        except TimeoutError:
            continue
        except OSError:
            continue
        threading.Thread(target=echo, args=(conn,), daemon=True).start()
    return 0


def run_python(address: str, port: int, announce: str | None, stop: StopRequest) -> int:
    from testbed.mptcp.driver.guard import KernelGuard
    from testbed.mptcp.driver.loop import StackDriver
    from testbed.mptcp.driver.packet_io import PacketIO, PortFilter

    addresses = [address] + ([announce] if announce else [])
    ranges = [(port, port)]  # no ephemeral ports: a client process of the target uses them
    host = MptcpHost(addresses=addresses, config=python_target_config(),
                     rng=random.Random(int.from_bytes(os.urandom(8), "big")), now=time.monotonic())
    host.listen(port)
    io = PacketIO(addresses, PortFilter(ranges))
    try:
        with KernelGuard(addresses, ranges, table=f"tb_probe_target_{os.getpid()}"):
            print("listening", flush=True)
            StackDriver(host, io).run(EchoApp(announce), stop=lambda: stop() is not None)
    finally:
        io.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.probe.target")
    parser.add_argument("stack", choices=("kernel", "python"))
    parser.add_argument("--listen", default=None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--announce", default=None)
    parser.add_argument("--connect", default=None, help="be a client of this address instead")
    parser.add_argument("--local", action="append", default=[])
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args(argv)
    stop = StopRequest()
    stop.install()
    if args.connect is not None:
        if args.stack == "kernel":
            return run_kernel_client(args.connect, args.port, args.seconds, stop)
        return run_python_client(args.local or [args.listen], args.connect, args.port,
                                 args.seconds, stop)
    if args.listen is None:
        parser.error("--listen or --connect is required")
    if args.stack == "kernel":
        return run_kernel(args.listen, args.port, stop)
    return run_python(args.listen, args.port, args.announce, stop)


if __name__ == "__main__":
    sys.exit(main())
