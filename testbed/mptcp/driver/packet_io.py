"""Packets in and out of a testbed host for the stack: AF_PACKET in, raw IPv4/IPv6 out.

Receive: one AF_PACKET SOCK_DGRAM socket on every interface (no link header to strip) per
family the stack has addresses of,
with PACKET_IGNORE_OUTGOING so the stack does not read its own segments back. Packet taps
run before the IP layer, so the stack still sees segments that `guard.KernelGuard` drops
at prerouting. A cheap byte-level filter (testbed.wire.peek) keeps only TCP to one of the
stack's addresses and ports: everything else on the host (other programs, routing chatter) is not the stack's.

Send: one raw IPv4 socket (IPPROTO_RAW, which implies IP_HDRINCL) per local address, bound
to it: the kernel routes each packet by its source (the testbed's per-source policy rules),
resolves the next hop's MAC, and runs it through the qdiscs and netfilter like any packet.
AF_PACKET send would need our own ARP and routing for the same pkt/s (see iobench.py).

IPv6 the same way: a raw AF_INET6 IPPROTO_RAW socket implies IPV6_HDRINCL, but unlike IPv4
the kernel completes nothing in the header, so ours is whole (payload length included).
Received IPv6 packets are kept when TCP follows the fixed header directly (what Linux
sends); one with extension headers is not the stack's and is counted as ignored.
"""

from __future__ import annotations

import errno
import fcntl
import socket
import sys
import termios
from collections.abc import Iterable

from testbed.mptcp.addresses import is_ipv6
from testbed.wire.errors import WireError
from testbed.wire.ipv4 import encode_headers_for_raw_socket
from testbed.wire.ipv6 import IPV6_HEADER, IPV6_MAX_PAYLOAD_LENGTH
from testbed.wire.peek import keep_ipv4_tcp_to
from testbed.wire.tcp import tcp_header_and_checksum
from testbed.wire.types import IPPROTO_TCP, Packet

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
RECEIVE_BUFFER = 16 << 20
SEND_BUFFER = 4 << 20
# What one full-sized frame counts in a raw socket's send memory (sk_wmem_alloc, which SIOCOUTQ
# reads) until the qdisc hands it on: 2304 bytes for a 1500-byte IPv4 packet on Linux 6.x.
FULL_FRAME_TRUESIZE = 2304
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


def keep_ipv6_tcp_to(packets: list[bytes], addresses: frozenset[bytes],
                     ports: PortFilter) -> list[bytes]:
    """The IPv6 packets whose fixed header is followed by TCP, addressed to one of `addresses`
    (16-byte form) and a port in `ports`, in order; shorter than both headers: left out."""
    return [packet for packet in packets
            if len(packet) >= 60 and packet[0] >> 4 == 6 and packet[6] == IPPROTO_TCP
            and packet[24:40] in addresses and ((packet[42] << 8) | packet[43]) in ports]


def _receive_socket(ethertype: int) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ethertype))
    sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    sock.setblocking(False)
    return sock


class PacketIO:
    """The stack's sockets in one namespace. `receive` returns raw IPv4 and IPv6 packets for
    us (`readable` are the sockets to wait on)."""

    def __init__(self, addresses: list[str], ports: PortFilter) -> None:
        if not addresses:
            raise ValueError("PacketIO: no local address")
        self.addresses = list(addresses)
        v4 = [a for a in self.addresses if not is_ipv6(a)]
        v6 = [a for a in self.addresses if is_ipv6(a)]
        self._address_bytes = frozenset(socket.inet_aton(a) for a in v4)
        self._address_bytes_v6 = frozenset(socket.inet_pton(socket.AF_INET6, a) for a in v6)
        self.ports = ports
        self.rx = _receive_socket(ETH_P_IP) if v4 else None
        self.rx6 = _receive_socket(ETH_P_IPV6) if v6 else None
        self.readable = [sock for sock in (self.rx, self.rx6) if sock is not None]
        self.tx: dict[str, socket.socket] = {}
        try:
            for address in self.addresses:
                family = socket.AF_INET6 if is_ipv6(address) else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW)
                self.tx[address] = sock
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
                sock.bind((address, 0))
        except OSError:
            self.close()
            raise
        self._packed = {address: socket.inet_aton(address) for address in v4}
        self._packed6 = {address: socket.inet_pton(socket.AF_INET6, address) for address in v6}
        self.received = 0
        self.ignored = 0
        self.sent = 0
        self.send_errors: dict[str, int] = {}

    def fileno(self) -> int:
        return self.readable[0].fileno()

    def queued_frames(self, address: str) -> int:
        """Full-sized frames' worth of `address`'s packets still in this host's own queues
        (its interface's qdiscs): the raw socket's send memory not yet freed (SIOCOUTQ).
        Raises OSError when the kernel does not report it."""
        sock = self.tx[address]
        buffer = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        return int.from_bytes(buffer, sys.byteorder) // FULL_FRAME_TRUESIZE

    def receive(self, limit: int) -> list[bytes]:
        """Up to `limit` waiting packets per family addressed to the stack (never blocks): a
        busy IPv4 socket does not starve the IPv6 one."""
        out: list[bytes] = []
        for sock, keep, addresses in ((self.rx, keep_ipv4_tcp_to, self._address_bytes),
                                      (self.rx6, keep_ipv6_tcp_to, self._address_bytes_v6)):
            if sock is None:
                continue
            waiting: list[bytes] = []
            recv = sock.recv
            for _ in range(limit):
                try:
                    waiting.append(recv(MAX_PACKET))
                except BlockingIOError:
                    break
            kept = keep(waiting, addresses, self.ports)  # type: ignore[operator]
            self.ignored += len(waiting) - len(kept)
            out.extend(kept)
        self.received += len(out)
        return out

    def send_packet(self, packet: Packet) -> bool:
        """Encode and send one packet: the headers from testbed.wire (the kernel completes
        the IPv4 header), the payload not copied (sendmsg)."""
        sock = self.tx.get(packet.src)
        if sock is None:
            raise ValueError(f"PacketIO.send_packet: {packet.src} is not one of {self.addresses}")
        if packet.src in self._packed6:
            return self._send_v6(sock, packet)
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

    def _send_v6(self, sock: socket.socket, packet: Packet) -> bool:
        """One IPv6 packet: the whole fixed header is ours (IPV6_HDRINCL completes nothing)."""
        addresses = self._packed6
        dst = addresses.get(packet.dst)
        if dst is None:
            try:
                dst = addresses[packet.dst] = socket.inet_pton(socket.AF_INET6, packet.dst)
            except OSError:
                raise WireError("ip6.dst", f"not an IPv6 address: {packet.dst!r}") from None
        tcp_header, _ = tcp_header_and_checksum(packet.tcp, packet.src, packet.dst)
        payload = packet.tcp.payload
        length = len(tcp_header) + len(payload)
        if length > IPV6_MAX_PAYLOAD_LENGTH:
            raise WireError("ip6.payload_length", f"{length} exceeds 65535")
        header = IPV6_HEADER.pack((6 << 28) | (packet.tos << 20), length, IPPROTO_TCP,
                                  packet.ttl, addresses[packet.src], dst)
        try:
            sock.sendmsg((header, tcp_header, payload), (), 0, (packet.dst, 0))
        except OSError as exc:
            return self._refused(exc)
        self.sent += 1
        return True

    def send(self, source: str, destination: str, data: bytes) -> bool:
        """Send one encoded IPv4 or IPv6 packet from `source`; False when the kernel refused it.

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
        for sock in (*self.readable, *self.tx.values()):
            sock.close()

    def stats(self) -> dict[str, object]:
        return {"received": self.received, "ignored": self.ignored, "sent": self.sent,
                "send_errors": dict(self.send_errors)}
