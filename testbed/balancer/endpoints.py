"""The programs of a balancer experiment: a backend server and a client that opens many
kernel-MPTCP connections to the virtual address, one after another.

    python -m testbed.balancer.endpoints server --name be1 --port 5201 --ready FILE
    python -m testbed.balancer.endpoints client --address VIP --port 5201 --connections 20 \
        --bytes 200000 --seed 1 --settle-s 0.3

Every connection carries the testbed's deterministic payload (testbed.endpoints.payload) for
seed + index; the server answers with its name, the byte count and the SHA-256 it computed,
so the client checks each transfer end to end and learns which backend served it. The client
prints one JSON line per connection: the largest number of established subflows it had while
open (the initial one plus joins), their client addresses, and the verdict.
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
MPTCP_SUBFLOW_ADDRS = 3
_SUBFLOW_ADDRS_SIZE = 256  # struct mptcp_subflow_addrs: two sockaddr_storage (local, remote)
TCP_ESTABLISHED = 1
MAX_SUBFLOWS = 8
_SUBFLOW_DATA_SIZE = 16
_TCP_INFO_SIZE = 232  # sizeof(struct tcp_info) in Linux 6.x; the kernel copies min(its, ours)
FIRST_PIECE = 4096  # sent before waiting for joins: a client becomes fully established (and its
# path manager opens joins) once the server has acknowledged data at the MPTCP level
SEND_PIECE = 64 * 1024
REPLY_LIMIT = 256


_LIBC = ctypes.CDLL(None, use_errno=True)


def _subflow_getsockopt(sock: socket.socket, option: int, entry_size: int) -> list[bytes] | None:
    """One entry per subflow from an MPTCP getsockopt that takes a struct mptcp_subflow_data
    header (whose sizes the caller fills in, which Python's socket.getsockopt cannot do)."""
    header = struct.pack("=IIII", _SUBFLOW_DATA_SIZE, 0, 0, entry_size)
    buffer = ctypes.create_string_buffer(header + bytes(entry_size * MAX_SUBFLOWS))
    length = ctypes.c_uint32(len(buffer))
    if _LIBC.getsockopt(sock.fileno(), SOL_MPTCP, option, buffer, ctypes.byref(length)) != 0:
        return None
    raw = buffer.raw
    _size, count, size_kernel, size_user = struct.unpack_from("=IIII", raw)
    stride = size_user or min(size_kernel, entry_size)
    return [raw[_SUBFLOW_DATA_SIZE + i * stride:_SUBFLOW_DATA_SIZE + (i + 1) * stride]
            for i in range(min(count, MAX_SUBFLOWS))]


def established_subflows(sock: socket.socket) -> list[str] | None:
    """The local address of each subflow in TCP state ESTABLISHED. MPTCP_TCPINFO gives a
    struct tcp_info per subflow (its first byte is the state) and MPTCP_SUBFLOW_ADDRS the
    addresses, both in the kernel's subflow order. Not MPTCP_INFO's mptcpi_subflows, which
    also counts a join still waiting for its SYN/ACK. None when the connection fell back to
    TCP (the kernel refuses both then)."""
    infos = _subflow_getsockopt(sock, MPTCP_TCPINFO, _TCP_INFO_SIZE)
    addresses = _subflow_getsockopt(sock, MPTCP_SUBFLOW_ADDRS, _SUBFLOW_ADDRS_SIZE)
    if infos is None or addresses is None:
        return None
    local = []
    for info, addrs in zip(infos, addresses, strict=False):
        if info[0] == TCP_ESTABLISHED and struct.unpack_from("=H", addrs)[0] == socket.AF_INET:
            local.append(socket.inet_ntoa(addrs[4:8]))
    return local


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
    most: list[str] = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)

    def sample() -> list[str]:
        nonlocal most
        now = established_subflows(sock) or []
        if len(now) > len(most):
            most = now
        return now

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
                while time.monotonic() < deadline and len(most) < 1 + wanted_extra:
                    sample()
                    time.sleep(0.01)
                record["mptcp"] = established_subflows(sock) is not None
            sample()
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
    record["subflows"] = max(1, len(most))
    record["subflow_sources"] = most  # the client addresses of the subflows, when most were open
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
