"""The programs of a balancer experiment: a backend server and a client that opens many
kernel-MPTCP connections to the virtual address, one after another.

    python -m testbed.balancer.endpoints server --name be1 --port 5201 --ready FILE
    python -m testbed.balancer.endpoints client --address VIP --port 5201 --connections 20 \
        --bytes 200000 --seed 1 --settle-s 0.3

Every connection carries the testbed's deterministic payload (testbed.endpoints.payload) for
seed + index; the server answers with its name, the byte count and the SHA-256 it computed,
so the client checks each transfer end to end and learns which backend served it. The client
prints one JSON line per connection: the largest number of subflows MPTCP_INFO showed while it
was open (joins established plus the initial one), and the verdict.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from testbed.endpoints.payload import PayloadSource, StreamDigest, expected_digest

IPPROTO_MPTCP = 262
SOL_MPTCP = 284
MPTCP_TCPINFO = 2
TCP_ESTABLISHED = 1
MAX_SUBFLOWS = 8
_SUBFLOW_DATA_SIZE = 16
_TCP_INFO_SIZE = 232  # sizeof(struct tcp_info) in Linux 6.x; the kernel copies min(its, ours)
FIRST_PIECE = 4096  # sent before waiting for joins: a client becomes fully established (and its
# path manager opens joins) once the server has acknowledged data at the MPTCP level
SEND_PIECE = 64 * 1024
REPLY_LIMIT = 256


_LIBC = ctypes.CDLL(None, use_errno=True)


def established_subflows(sock: socket.socket) -> int | None:
    """How many of the connection's subflows are in TCP state ESTABLISHED (MPTCP_TCPINFO: a
    struct mptcp_subflow_data header, then one struct tcp_info per subflow, whose first byte
    is the state). Not MPTCP_INFO's mptcpi_subflows, which also counts a join still waiting
    for its SYN/ACK. None when the connection fell back to TCP (the kernel refuses then)."""
    header = struct.pack("=IIII", _SUBFLOW_DATA_SIZE, 0, 0, _TCP_INFO_SIZE)
    buffer = ctypes.create_string_buffer(header + bytes(_TCP_INFO_SIZE * MAX_SUBFLOWS))
    length = ctypes.c_uint32(len(buffer))
    if _LIBC.getsockopt(sock.fileno(), SOL_MPTCP, MPTCP_TCPINFO, buffer, ctypes.byref(length)) != 0:
        return None
    _size, count, size_kernel, size_user = struct.unpack_from("=IIII", buffer.raw)
    stride = size_user or min(size_kernel, _TCP_INFO_SIZE)
    shown = min(count, MAX_SUBFLOWS)
    return sum(1 for i in range(shown) if buffer.raw[_SUBFLOW_DATA_SIZE + i * stride] == TCP_ESTABLISHED)


def serve_connection(conn: socket.socket, name: str, counts: dict[str, int]) -> None:
    digest = StreamDigest()
    try:
        with conn:
            conn.settimeout(30.0)
            while data := conn.recv(SEND_PIECE):
                digest.update(data)
            conn.sendall(f"{name} {digest.byte_count} {digest.hexdigest()}\n".encode())
            counts["served"] += 1
    except OSError:
        counts["errors"] += 1


def run_server(name: str, port: int, ready: str | None) -> int:
    """Serve until SIGTERM, then print the counts as one JSON line."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    counts = {"served": 0, "errors": 0}
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(64)
    listener.settimeout(0.2)
    if ready:
        Path(ready).write_text("ready\n")
    while not stop.is_set():
        try:
            conn, _peer = listener.accept()
        except (TimeoutError, InterruptedError):
            continue
        threading.Thread(target=serve_connection, args=(conn, name, counts), daemon=True).start()
    listener.close()
    print(json.dumps({"backend": name, **counts}), flush=True)
    return 0


def one_connection(address: str, port: int, byte_count: int, seed: int, settle_s: float,
                   wanted_extra: int) -> dict[str, object]:
    """Connect, let the path managers open (or fail to open) joins for up to `settle_s`, send
    the payload, read the backend's verdict."""
    started = time.monotonic()
    record: dict[str, object] = {"seed": seed}
    most = 1
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
    try:
        sock.settimeout(20.0)
        sock.connect((address, port))
        record["local_port"] = sock.getsockname()[1]
        source = PayloadSource(seed)
        offset = 0
        while offset < byte_count:
            limit = FIRST_PIECE if offset == 0 else byte_count - offset
            piece = source.window(offset, min(byte_count - offset, limit))
            sock.sendall(piece)
            offset += len(piece)
            if offset == len(piece):  # after the first piece: give the joins their chance
                deadline = time.monotonic() + settle_s
                while time.monotonic() < deadline and most < 1 + wanted_extra:
                    most = max(most, established_subflows(sock) or 1)
                    time.sleep(0.01)
                record["mptcp"] = established_subflows(sock) is not None
            most = max(most, established_subflows(sock) or 1)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while len(reply) < REPLY_LIMIT and (data := sock.recv(REPLY_LIMIT)):
            reply += data
        backend, received, digest = reply.decode(errors="replace").split()
        record.update(backend=backend, bytes=int(received),
                      intact=int(received) == byte_count and digest == expected_digest(seed, byte_count))
    except (OSError, ValueError) as exc:
        record.update(error=f"{type(exc).__name__}: {exc}", intact=False)
    finally:
        sock.close()
    record["subflows"] = most
    record["duration_s"] = round(time.monotonic() - started, 4)
    return record


def run_client(address: str, port: int, connections: int, byte_count: int, seed: int,
               settle_s: float, wanted_extra: int) -> int:
    for index in range(connections):
        record = one_connection(address, port, byte_count, seed + index, settle_s, wanted_extra)
        print(json.dumps({"index": index, **record}), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.balancer.endpoints")
    sub = parser.add_subparsers(dest="role", required=True)
    server = sub.add_parser("server")
    server.add_argument("--name", required=True)
    server.add_argument("--port", type=int, required=True)
    server.add_argument("--ready")
    client = sub.add_parser("client")
    client.add_argument("--address", required=True)
    client.add_argument("--port", type=int, required=True)
    client.add_argument("--connections", type=int, required=True)
    client.add_argument("--bytes", type=int, required=True)
    client.add_argument("--seed", type=int, required=True)
    client.add_argument("--settle-s", type=float, default=0.3)
    client.add_argument("--wanted-extra", type=int, default=1)
    args = parser.parse_args(argv)
    if args.role == "server":
        return run_server(args.name, args.port, args.ready)
    with contextlib.suppress(BrokenPipeError):
        return run_client(args.address, args.port, args.connections, args.bytes, args.seed,
                          args.settle_s, args.wanted_extra)
    return 1


if __name__ == "__main__":
    sys.exit(main())
