"""The kernel proxy: a transparent MPTCP listener that relays each connection over plain TCP.

    python -m testbed.proxy.relay_kernel --port 5201 --ready FILE

Runs on the proxy node. The interception (intercept.py) hands it every subflow addressed to
the server's port: the listener is an IPPROTO_MPTCP socket with IP_TRANSPARENT, so the kernel's
MPTCP accepts the client's connection as if it were the server (and the joins over the other
path, which carry the connection's token), and getsockname() of an accepted connection is the
address the client dialled. The relay opens plain TCP from the proxy's own address to that
address and copies bytes both ways; an end of stream in one direction becomes a shutdown
(SHUT_WR) of the other socket, so half-close passes through, and an error on one side resets
the other. It never looks inside the bytes. On SIGTERM it prints its counts as one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import socket
import struct
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from testbed.balancer.endpoints import IPPROTO_MPTCP

IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)
PIECE = 256 * 1024
CONNECT_TIMEOUT_S = 10.0


class Counts:
    """What the relay did, shared by its threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values = {"connections": 0, "relayed": 0, "errors": 0, "upstream_failed": 0,
                       "bytes_to_server": 0, "bytes_to_client": 0}

    def add(self, key: str, amount: int = 1) -> None:
        with self.lock:
            self.values[key] += amount


def _reset(sock: socket.socket) -> None:
    """Close with a RST (SO_LINGER 0), so an error on one side is not mistaken for an end."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def pump(source: socket.socket, sink: socket.socket, counts: Counts, key: str) -> bool:
    """Copy until the source's end of stream, then half-close the sink. False on an error."""
    buffer = bytearray(PIECE)
    view = memoryview(buffer)
    try:
        while count := source.recv_into(buffer):
            sink.sendall(view[:count])
            counts.add(key, count)
        sink.shutdown(socket.SHUT_WR)
        return True
    except OSError:
        return False


def relay(client: socket.socket, counts: Counts) -> None:
    """One intercepted connection: dial the address the client dialled, copy both ways."""
    counts.add("connections")
    try:
        target = client.getsockname()[:2]
        server = socket.create_connection(target, timeout=CONNECT_TIMEOUT_S)
    except OSError:
        counts.add("upstream_failed")
        _reset(client)
        return
    server.settimeout(None)
    client.settimeout(None)
    for sock in (client, server):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    results: list[bool] = []
    down = threading.Thread(target=lambda: results.append(pump(server, client, counts, "bytes_to_client")),
                            daemon=True)
    down.start()
    up_ok = pump(client, server, counts, "bytes_to_server")
    if not up_ok:  # the client side failed: the server must not take it for a clean end
        _reset(server)
        _reset(client)
        down.join()
        counts.add("errors")
        return
    down.join()
    if results and results[0]:
        counts.add("relayed")
        client.close()
        server.close()
    else:
        counts.add("errors")
        _reset(client)
        _reset(server)


def listen(port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(128)
    listener.settimeout(0.2)
    return listener


def run(port: int, ready: str | None) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    counts = Counts()
    listener = listen(port)
    if ready:
        Path(ready).write_text("ready\n")
    while not stop.is_set():
        try:
            conn, _peer = listener.accept()
        except (TimeoutError, InterruptedError):
            continue
        except OSError:
            counts.add("errors")
            continue
        threading.Thread(target=relay, args=(conn, counts), daemon=True).start()
    listener.close()
    print(json.dumps({"relay": "kernel", **counts.values}), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.proxy.relay_kernel")
    parser.add_argument("--port", type=int, required=True, help="the server's port (TPROXY delivers there)")
    parser.add_argument("--ready")
    args = parser.parse_args(argv)
    return run(args.port, args.ready)


if __name__ == "__main__":
    sys.exit(main())
