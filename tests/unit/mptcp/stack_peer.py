"""Our stack on a raw AF_PACKET socket, for the kernel interoperability test.

Run inside a network namespace: `python -m tests.unit.mptcp.stack_peer ROLE ...` (see
`main`). It owns an address the namespace's kernel does not have, talks Ethernet directly to
the peer's MAC (the peer has a static neighbour entry for our addresses), runs one
connection (client: send then read to EOF; server: read then send), and prints a JSON
summary. Real time enters only here, as `now` for the sans-IO host.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import select
import socket
import time

from testbed.mptcp.config import StackConfig
from testbed.mptcp.host import MptcpHost
from testbed.wire import decode_packet, encode_packet

ETH_P_IP = 0x0800
SO_RCVBUFFORCE = 33  # asm-generic/socket.h; not exported by the socket module


def pattern(size: int, factor: int) -> bytes:
    return bytes((i * factor) & 0xFF for i in range(size))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["client", "server"])
    parser.add_argument("--local", required=True, help="comma-separated local addresses")
    parser.add_argument("--remote", required=True)
    parser.add_argument("--port", type=int, default=5201)
    parser.add_argument("--send", type=int, required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--peer-mac", required=True)
    parser.add_argument("--iface", required=True)
    parser.add_argument("--checksum", action="store_true")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--hold-for-joins", type=int, default=0,
                        help="send the last byte only once this many joins were established "
                             "(a peer's join is then seen whatever the speed of the transfer)")
    args = parser.parse_args()

    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
    sock.bind((args.iface, 0))
    # the default buffer holds about 100 frames: a kernel peer's burst on veth overflowed it and
    # took a join's SYN with it (root: the FORCE variant may exceed net.core.rmem_max)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
    ethernet = bytes.fromhex(args.peer_mac.replace(":", "")) + sock.getsockname()[4] + b"\x08\x00"
    start = time.monotonic()

    def now() -> float:
        return time.monotonic() - start

    host = MptcpHost(addresses=args.local.split(","), config=StackConfig(checksum=args.checksum),
                     rng=random.Random(7), now=0.0)
    payload = pattern(args.send, 3)
    connection = host.connect(args.remote, args.port, now=now()) if args.role == "client" \
        else None
    if args.role == "server":
        host.listen(args.port)
    received = bytearray()
    sent = 0
    closing = False
    events: list[str] = []
    joins_established = 0
    deadline = args.timeout
    while now() < deadline:
        for packet in host.packets_to_send(now()):
            sock.send(ethernet + encode_packet(packet))
        while (event := host.next_event()) is not None:
            events.append(type(event).__name__)
            if type(event).__name__ == "ConnectionAccepted":
                connection = event.connection
            elif type(event).__name__ == "SubflowEstablished":
                joins_established += 1
            elif type(event).__name__ == "ConnectionClosed":
                deadline = min(deadline, now() + 0.3)
        if connection is not None:
            received += connection.receive()
            may_send = args.role == "client" or len(received) >= args.expect
            held = joins_established < args.hold_for_joins
            if may_send and sent < args.send:
                sent += connection.send(payload[sent:args.send - 1 if held else args.send])
            if may_send and sent >= args.send and not closing:
                connection.close()
                closing = True
        timer = host.get_timer()
        wait = 0.02 if timer is None else max(0.0, min(0.02, timer - now()))
        readable, _, _ = select.select([sock], [], [], wait)
        for _ in range(512 if readable else 0):
            try:
                frame = sock.recv(65600, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            if len(frame) >= 34 and frame[12:14] == b"\x08\x00" and frame[23] == 6:
                host.receive_packet(decode_packet(frame[14:]), now())
        timer = host.get_timer()
        if timer is not None and timer <= now():
            host.handle_timer(now())
    stats = connection.stats() if connection is not None else None
    print(json.dumps({"received": len(received),
                      "sha256": hashlib.sha256(bytes(received)).hexdigest(),
                      "events": events, "stats": stats,
                      "host_counters": {k: v for k, v in host.counters.items() if v}}))


if __name__ == "__main__":
    main()
