"""Packets in and out of a testbed host for the stack: AF_PACKET in, raw IPv4 out.

Receive: one AF_PACKET SOCK_DGRAM socket on every interface (no link header to strip),
with PACKET_IGNORE_OUTGOING so the stack does not read its own segments back. Packet taps
run before the IP layer, so the stack still sees segments that `guard.KernelGuard` drops
at prerouting. A cheap byte-level filter (testbed.wire.peek) keeps only TCP to one of the
stack's addresses and ports: everything else on the host (other programs, routing chatter) is not the stack's.

Send: one raw IPv4 socket (IPPROTO_RAW, which implies IP_HDRINCL) per local address, bound
to it: the kernel routes each packet by its source (the testbed's per-source policy rules),
resolves the next hop's MAC, and runs it through the qdiscs and netfilter like any packet.
AF_PACKET send would need our own ARP and routing for the same pkt/s (see iobench.py).
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable

from testbed.wire.ipv4 import encode_headers_for_raw_socket
from testbed.wire.peek import keep_ipv4_tcp_to
from testbed.wire.types import Packet

ETH_P_IP = 0x0800
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
RECEIVE_BUFFER = 16 << 20
SEND_BUFFER = 4 << 20
SO_RCVBUFFORCE = 33  # asm-generic/socket.h; not exported by the socket module
MAX_PACKET = 65536


class PortFilter:
    """Which destination ports belong to the stack: listening ports and its ephemeral range."""

    def __init__(self, ranges: Iterable[tuple[int, int]]) -> None:
        self.ranges = sorted(set(ranges))
        for low, high in self.ranges:
            if not 0 < low <= high < 65536:
                raise ValueError(f"PortFilter: {low}-{high} is not a port range in 1..65535")
        self._singles = frozenset(low for low, high in self.ranges if low == high)
        self._spans = [(low, high) for low, high in self.ranges if low != high]

    def __contains__(self, port: int) -> bool:
        if port in self._singles:
            return True
        return any(low <= port <= high for low, high in self._spans)


class PacketIO:
    """The stack's sockets in one namespace. `receive` returns raw IPv4 packets for us."""

    def __init__(self, addresses: list[str], ports: PortFilter) -> None:
        if not addresses:
            raise ValueError("PacketIO: no local address")
        self.addresses = list(addresses)
        self._address_bytes = frozenset(socket.inet_aton(a) for a in addresses)
        self.ports = ports
        self.rx = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
        self.rx.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        try:
            self.rx.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
        except PermissionError:
            self.rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        self.rx.setblocking(False)
        self.tx: dict[str, socket.socket] = {}
        for address in self.addresses:
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            sock.bind((address, 0))
            self.tx[address] = sock
        self._packed = {address: socket.inet_aton(address) for address in self.addresses}
        self.received = 0
        self.ignored = 0
        self.sent = 0
        self.send_errors: dict[str, int] = {}

    def fileno(self) -> int:
        return self.rx.fileno()

    def receive(self, limit: int) -> list[bytes]:
        """Up to `limit` waiting packets addressed to the stack (never blocks)."""
        waiting: list[bytes] = []
        recv = self.rx.recv
        for _ in range(limit):
            try:
                waiting.append(recv(MAX_PACKET))
            except BlockingIOError:
                break
        out = keep_ipv4_tcp_to(waiting, self._address_bytes, self.ports)
        self.ignored += len(waiting) - len(out)
        self.received += len(out)
        return out

    def send_packet(self, packet: Packet) -> bool:
        """Encode and send one packet: the headers from testbed.wire (the kernel completes
        the IPv4 header), the payload not copied (sendmsg)."""
        sock = self.tx.get(packet.src)
        if sock is None:
            raise ValueError(f"PacketIO.send_packet: {packet.src} is not one of {self.addresses}")
        addresses = self._packed
        dst = addresses.get(packet.dst)
        if dst is None:
            dst = addresses[packet.dst] = socket.inet_aton(packet.dst)
        headers = encode_headers_for_raw_socket(packet, addresses[packet.src], dst)
        try:
            sock.sendmsg((headers, packet.tcp.payload), (), 0, (packet.dst, 0))
        except OSError as exc:
            return self._refused(exc)
        self.sent += 1
        return True

    def send(self, source: str, destination: str, data: bytes) -> bool:
        """Send one encoded IPv4 packet from `source`; False when the kernel refused it.

        A refused packet (no route: the interface is down) is a loss to the stack, exactly
        as a drop further on would be; the error is counted by name.
        """
        sock = self.tx.get(source)
        if sock is None:
            raise ValueError(f"PacketIO.send: {source} is not one of {self.addresses}")
        try:
            sock.sendto(data, (destination, 0))
        except OSError as exc:
            return self._refused(exc)
        self.sent += 1
        return True

    def _refused(self, exc: OSError) -> bool:
        """Count a packet the kernel refused, by errno name; it is a loss to the stack."""
        name = errno.errorcode.get(exc.errno or 0, str(exc))
        self.send_errors[name] = self.send_errors.get(name, 0) + 1
        return False

    def close(self) -> None:
        self.rx.close()
        for sock in self.tx.values():
            sock.close()

    def stats(self) -> dict[str, object]:
        return {"received": self.received, "ignored": self.ignored, "sent": self.sent,
                "send_errors": dict(self.send_errors)}
