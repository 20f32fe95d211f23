"""A kernel MPTCP server or client for the translator labs, run in a namespace by `ip netns exec`.

    mptcp_peer.py server 4|6 PORT      prints "ready", then the bytes received from one client
    mptcp_peer.py client HOST PORT BYTES HOLD_S [BIND]
        binds BIND if given (the initial subflow's source), sends BYTES, waits HOLD_S
        (subflows join, addresses are announced), sends BYTES again
"""

from __future__ import annotations

import socket
import sys
import time

IPPROTO_MPTCP = 262


def server(family: str, port: int) -> None:
    ipv6 = family == "6"
    with socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_STREAM,
                       IPPROTO_MPTCP) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("::" if ipv6 else "0.0.0.0", port))
        listener.listen(1)
        print("ready", flush=True)
        listener.settimeout(30)
        connection, _ = listener.accept()
        total = 0
        with connection:
            connection.settimeout(30)
            while chunk := connection.recv(65536):
                total += len(chunk)
        print(total, flush=True)


def client(host: str, port: int, count: int, hold_s: float, bind: str | None) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM, IPPROTO_MPTCP) as sock:
        sock.settimeout(30)
        if bind:
            sock.bind((bind, 0))
        sock.connect((host, port))
        block = bytes(range(256)) * 256
        for _ in range(2):
            left = count
            while left > 0:
                left -= sock.send(block[:min(left, len(block))])
            time.sleep(hold_s)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)
    print("sent", 2 * count, flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(sys.argv[2], int(sys.argv[3]))
    else:
        client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]),
               sys.argv[6] if len(sys.argv) > 6 else None)
