"""The programs at both ends of a proxy experiment: an MPTCP (or plain TCP) client and a
legacy server whose namespace has MPTCP disabled.

    python -m testbed.proxy.endpoints server --port 5201 --ready FILE
    python -m testbed.proxy.endpoints client --address SERVER --port 5201 --mode bulk \
        --bytes 50000000 --seed 1 [--tcp --bind ADDRESS]
    python -m testbed.proxy.endpoints client --address SERVER --port 5201 --mode echo \
        --size 64 --exchanges 200

A connection opens with one header line: "bulk <seed>" (the client then sends the testbed's
deterministic payload and half-closes; the server answers with one JSON line: byte count,
SHA-256, and the longest pauses between its reads, which show a stall after a path cut) or
"echo <size> <count>" (request/response: the server returns each `size`-byte request). The
client prints "started <monotonic time>" once connected (the experiment cuts a path relative
to it), then one JSON line with the verdict: the transfer is intact only when the server's
count and digest match the payload the client sent.
"""

from __future__ import annotations

import argparse
import json
import select
import signal
import socket
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from testbed.balancer.endpoints import IPPROTO_MPTCP, established_subflows
from testbed.endpoints.payload import PayloadSource, StreamDigest, expected_digest

PIECE = 256 * 1024
HEADER_LIMIT = 100
REPLY_LIMIT = 4096
GAPS_KEPT = 5  # the longest pauses between the server's reads, reported with their start
GAP_FLOOR_S = 0.02


def _read_line(conn: socket.socket, limit: int) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        data = conn.recv(1)
        if not data or len(line) >= limit:
            raise ValueError(f"no header line (got {line[:40]!r})")
        line += data
    return line


def _serve_bulk(conn: socket.socket) -> None:
    digest = StreamDigest()
    gaps: list[tuple[float, float]] = []
    last = time.monotonic()
    buffer = bytearray(PIECE)
    view = memoryview(buffer)
    while count := conn.recv_into(buffer):
        now = time.monotonic()
        if now - last >= GAP_FLOOR_S:
            gaps.append((round(last, 4), round(now - last, 4)))
            gaps = sorted(gaps, key=lambda gap: -gap[1])[:GAPS_KEPT]
        last = now
        digest.update(view[:count])
    reply = {"bytes": digest.byte_count, "sha256": digest.hexdigest(), "gaps": gaps,
             "last_read": round(last, 4)}
    conn.sendall(json.dumps(reply).encode() + b"\n")


def _serve_echo(conn: socket.socket, size: int, count: int) -> None:
    for _ in range(count):
        request = b""
        while len(request) < size:
            data = conn.recv(size - len(request))
            if not data:
                return
            request += data
        conn.sendall(request)


def serve_connection(conn: socket.socket, counts: dict[str, int]) -> None:
    try:
        with conn:
            conn.settimeout(60.0)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            words = _read_line(conn, HEADER_LIMIT).decode(errors="replace").split()
            if words[:1] == ["bulk"]:
                _serve_bulk(conn)
            elif words[:1] == ["echo"] and len(words) == 3:
                _serve_echo(conn, int(words[1]), int(words[2]))
            else:
                raise ValueError(f"unknown request {words!r}")
            counts["served"] += 1
    except (OSError, ValueError):
        counts["errors"] += 1


def run_server(ports: list[int], ready: str | None, mptcp: bool) -> int:
    """A legacy TCP server (its namespace refuses MPTCP), or with `mptcp` an MPTCP one (the
    short-circuit experiment); serves until SIGTERM, prints counts."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    counts = {"served": 0, "errors": 0}
    listeners = []
    for port in ports:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP if mptcp else 0)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("0.0.0.0", port))
        listener.listen(64)
        listener.setblocking(False)
        listeners.append(listener)
    if ready:
        Path(ready).write_text("ready\n")
    while not stop.is_set():
        waiting, _, _ = select.select(listeners, [], [], 0.2)
        for listener in waiting:
            try:
                conn, _peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                continue
            conn.setblocking(True)
            threading.Thread(target=serve_connection, args=(conn, counts), daemon=True).start()
    for listener in listeners:
        listener.close()
    print(json.dumps({"server": counts}), flush=True)
    return 0


def _connect(address: str, port: int, tcp: bool, bind: str | None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0 if tcp else IPPROTO_MPTCP)
    sock.settimeout(60.0)
    if bind:
        sock.bind((bind, 0))
    sock.connect((address, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    print(f"started {time.monotonic():.4f}", flush=True)
    return sock


class SubflowWatch:
    """The most subflows the connection had established at once, sampled by a thread."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.most: list[str] = []
        self.mptcp: bool | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                now = established_subflows(self.sock)
            except OSError:
                return
            if self.mptcp is None:
                self.mptcp = now is not None
            if now and len(now) > len(self.most):
                self.most = now
            self._stop.wait(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_bulk(address: str, port: int, byte_count: int, seed: int, tcp: bool, bind: str | None) -> dict:
    record: dict[str, object] = {"mode": "bulk", "bytes_sent": byte_count}
    sock = _connect(address, port, tcp, bind)
    watch = SubflowWatch(sock)
    started = time.monotonic()
    try:
        sock.sendall(f"bulk {seed}\n".encode())
        source = PayloadSource(seed)
        offset = 0
        while offset < byte_count:
            piece = source.window(offset, min(PIECE, byte_count - offset))
            sock.sendall(piece)
            offset += len(piece)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while len(reply) < REPLY_LIMIT and (data := sock.recv(REPLY_LIMIT)):
            reply += data
        elapsed = time.monotonic() - started
        answer = json.loads(reply.decode(errors="replace") or "null")
        if not isinstance(answer, dict):
            raise ValueError("the server did not answer")
        record.update(bytes=answer["bytes"], sha256=answer["sha256"], gaps=answer["gaps"],
                      started=round(started, 4), last_read=answer["last_read"],
                      intact=answer["bytes"] == byte_count
                      and answer["sha256"] == expected_digest(seed, byte_count),
                      duration_s=round(elapsed, 4),
                      goodput_mbit=round(byte_count * 8 / elapsed / 1e6, 2))
    except (OSError, ValueError, KeyError) as exc:
        record.update(error=f"{type(exc).__name__}: {exc}", intact=False)
    finally:
        watch.stop()
        sock.close()
    record.update(mptcp=bool(watch.mptcp), subflows=max(1, len(watch.most)), subflow_sources=watch.most)
    return record


def run_echo(address: str, port: int, size: int, exchanges: int, tcp: bool, bind: str | None) -> dict:
    record: dict[str, object] = {"mode": "echo", "size": size, "exchanges": exchanges}
    sock = _connect(address, port, tcp, bind)
    watch = SubflowWatch(sock)
    rtts: list[float] = []
    try:
        sock.sendall(f"echo {size} {exchanges}\n".encode())
        request = bytes(range(256)) * (size // 256 + 1)
        request = request[:size]
        for _ in range(exchanges):
            sent = time.perf_counter()
            sock.sendall(request)
            answer = b""
            while len(answer) < size:
                data = sock.recv(size - len(answer))
                if not data:
                    raise ValueError(f"the connection closed after {len(rtts)} exchanges")
                answer += data
            rtts.append(time.perf_counter() - sent)
            if answer != request:
                raise ValueError(f"exchange {len(rtts)}: the answer differs from the request")
        record.update(intact=True, rtt_median_us=round(statistics.median(rtts) * 1e6, 1),
                      rtt_p90_us=round(sorted(rtts)[int(len(rtts) * 0.9) - 1] * 1e6, 1),
                      rtt_min_us=round(min(rtts) * 1e6, 1))
    except (OSError, ValueError) as exc:
        record.update(error=f"{type(exc).__name__}: {exc}", intact=False)
    finally:
        watch.stop()
        sock.close()
    record.update(mptcp=bool(watch.mptcp), subflows=max(1, len(watch.most)), subflow_sources=watch.most)
    return record


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.proxy.endpoints")
    sub = parser.add_subparsers(dest="role", required=True)
    server = sub.add_parser("server")
    server.add_argument("--port", type=int, action="append", required=True, help="repeat for more ports")
    server.add_argument("--mptcp", action="store_true", help="listen with MPTCP (a server that speaks it)")
    server.add_argument("--ready")
    client = sub.add_parser("client")
    client.add_argument("--address", required=True)
    client.add_argument("--port", type=int, required=True)
    client.add_argument("--mode", choices=("bulk", "echo"), required=True)
    client.add_argument("--bytes", type=int, default=1_000_000)
    client.add_argument("--seed", type=int, default=1)
    client.add_argument("--size", type=int, default=64)
    client.add_argument("--exchanges", type=int, default=200)
    client.add_argument("--tcp", action="store_true", help="plain TCP instead of MPTCP")
    client.add_argument("--bind", help="the local address to connect from")
    args = parser.parse_args(argv)
    if args.role == "server":
        return run_server(args.port, args.ready, args.mptcp)
    if args.mode == "bulk":
        record = run_bulk(args.address, args.port, args.bytes, args.seed, args.tcp, args.bind)
    else:
        record = run_echo(args.address, args.port, args.size, args.exchanges, args.tcp, args.bind)
    print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
