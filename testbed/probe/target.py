"""The implementation under test as an echo server in the target host.

    python -m testbed.probe.target {kernel|python} --listen ADDRESS --port PORT [--announce ADDRESS]

Probes need a peer that answers: every byte a connection receives is sent back, and the end
of the peer's data (DATA_FIN, or FIN after a fallback) closes the connection from this side.
`kernel` is a Linux MPTCP socket (IPPROTO_MPTCP); `python` is the bundled sans-IO stack on
raw packets (the same driver and guard as testbed.endpoints.stack_endpoint), with
`--announce` sending ADD_ADDR for a second local address on every connection it accepts.
Prints one line, `listening`, once connections can arrive.
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
    ranges = [(port, port), (61000, 65535)]
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
    parser.add_argument("--listen", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--announce", default=None)
    args = parser.parse_args(argv)
    stop = StopRequest()
    stop.install()
    if args.stack == "kernel":
        return run_kernel(args.listen, args.port, stop)
    return run_python(args.listen, args.port, args.announce, stop)


if __name__ == "__main__":
    sys.exit(main())
