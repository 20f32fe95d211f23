"""A leg's frame I/O: PACKET_MMAP rings (TPACKET_V2), or a plain socket's recv and send.

The inline process spends most of its time moving frames in and out. With a plain AF_PACKET
socket every frame costs a `recv` and a `send` system call and a Python call around each; with
an RX ring the kernel writes arriving frames into memory shared with the process, which reads
them without a system call, and with a TX ring the process writes the frames of a wake-up into
shared slots and hands all of them to the kernel with one `send` (`flush`). Measured on the
2-core development machine (plain forwarding, iperf3 through a three-namespace line, 5 s, with
runtime.py's leg-by-leg loop): 3.41-3.44 Gbit/s with recv/send, 3.9-4.0 Gbit/s with the rings.

Each ring leg maps 12 MiB of kernel memory (an 8 MiB RX ring, 4096 slots at MTU 1500, and a
4 MiB TX ring), so an inline process holds 24 MiB; no frame was dropped for want of a slot at
4 Gbit/s.

Both kinds offer the same small interface (`Leg`), so the event loop does not care which it
has; `SocketLeg` also wraps the socketpairs the unit tests use. A `RingLeg` refuses what the
kernel would refuse from `send` (a frame longer than the leg's MTU allows, or shorter than an
Ethernet header) with the same errors, so send errors are counted as before.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import socket
import struct
from collections.abc import Callable
from typing import Protocol

SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_TX_RING = 13
PACKET_LOSS = 14
TPACKET_V2 = 1
SIOCGIFMTU = 0x8921

TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1  # RX: the frame is the process's
TP_STATUS_SEND_REQUEST = 1  # TX: the frame is the kernel's to send (0: the slot is free)
TX_DATA_OFFSET = 32  # TPACKET2_HDRLEN - sizeof(struct sockaddr_ll): where a TX frame's data goes
ETHERNET_HEADER = 14
VLAN_TAG = 4
RX_RING_BYTES = 8 * 1024 * 1024  # 4096 frames of MTU 1500: 12 ms at 4 Gbit/s
TX_RING_BYTES = 4 * 1024 * 1024
BLOCK_BYTES = 1 << 20
SEND_TIMEOUT_S = 1

# struct tpacket2_hdr: tp_status, tp_len, tp_snaplen, tp_mac, tp_net (then times and VLAN)
_RX_HEADER = struct.Struct("IIIHH")
_TX_HEADER = struct.Struct("III")  # tp_status, tp_len, tp_snaplen
_STATUS_FREE = b"\0\0\0\0"
_STATISTICS = struct.Struct("II")  # struct tpacket_stats: tp_packets, tp_drops


class Leg(Protocol):
    """What the event loop needs from a leg."""

    io: str
    truncated: int  # frames longer than a ring slot, never forwarded

    def fileno(self) -> int: ...
    def receive(self, limit: int) -> list[bytes]: ...
    def send_batch(self, frames: list[bytes]) -> tuple[int, int, list[OSError]]: ...
    def flush(self) -> None: ...
    def receive_drops(self) -> int: ...
    def close(self) -> None: ...


def _kernel_drops(sock: socket.socket) -> int:
    """Frames the kernel dropped for want of room since the last call (it resets them)."""
    try:
        _packets, drops = _STATISTICS.unpack(sock.getsockopt(SOL_PACKET, PACKET_STATISTICS,
                                                             _STATISTICS.size))
    except OSError:
        return 0  # not a packet socket (the unit tests' socketpairs)
    return int(drops)


class SocketLeg:
    """One system call per frame each way: the socketpairs of the unit tests, and the fallback
    when the kernel refuses the rings (the reason is in `io`)."""

    def __init__(self, sock: socket.socket, why: str = "") -> None:
        self._socket = sock
        self.io = f"socket ({why})" if why else "socket"
        self.truncated = 0  # recv takes a whole frame: never
        self._drops = 0

    def fileno(self) -> int:
        return self._socket.fileno()

    def receive(self, limit: int) -> list[bytes]:
        recv = self._socket.recv
        frames = []
        for _ in range(limit):
            try:
                frames.append(recv(65536, socket.MSG_DONTWAIT))
            except BlockingIOError:
                break
        return frames

    def send_batch(self, frames: list[bytes]) -> tuple[int, int, list[OSError]]:
        """Frames sent, their bytes, and the error of each frame that was not."""
        send = self._socket.send
        sent = sent_bytes = 0
        errors = []
        for frame in frames:
            try:
                send(frame)
            except OSError as error:
                errors.append(error)
                continue
            sent += 1
            sent_bytes += len(frame)
        return sent, sent_bytes, errors

    def flush(self) -> None:
        pass

    def receive_drops(self) -> int:
        self._drops += _kernel_drops(self._socket)
        return self._drops

    def close(self) -> None:
        self._socket.close()


def interface_mtu(sock: socket.socket, ifname: str) -> int:
    request = struct.pack("16si", ifname.encode()[:15], 0)
    return int(struct.unpack("16si", fcntl.ioctl(sock, SIOCGIFMTU, request))[1])


def slot_bytes(mtu: int) -> int:
    """The smallest power of two (at least 2048) holding a frame of `mtu` with its ring header."""
    size = 2048
    while size < mtu + ETHERNET_HEADER + VLAN_TAG + 128:
        size *= 2
    return size


class RingLeg:
    """An AF_PACKET socket with an RX and a TX ring (TPACKET_V2) mapped into the process."""

    io = "ring"

    def __init__(self, sock: socket.socket, ifname: str) -> None:
        """Sets up the rings on `sock` (bound, not yet used); raises OSError when the kernel
        refuses them."""
        mtu = interface_mtu(sock, ifname)
        self._slot = slot_bytes(mtu)
        block = max(BLOCK_BYTES, self._slot)
        rx_blocks, tx_blocks = RX_RING_BYTES // block, TX_RING_BYTES // block
        per_block = block // self._slot
        # a full TX ring waits for the kernel at most this long (the default is forever)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                        struct.pack("ll", int(SEND_TIMEOUT_S), 0))
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
        # a frame the kernel cannot send is skipped rather than stopping the TX ring for good
        sock.setsockopt(SOL_PACKET, PACKET_LOSS, 1)
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING,
                        struct.pack("IIII", block, rx_blocks, self._slot, per_block * rx_blocks))
        sock.setsockopt(SOL_PACKET, PACKET_TX_RING,
                        struct.pack("IIII", block, tx_blocks, self._slot, per_block * tx_blocks))
        self._socket = sock
        self._map = mmap.mmap(sock.fileno(), block * (rx_blocks + tx_blocks))
        self._rx_slots, self._tx_slots = per_block * rx_blocks, per_block * tx_blocks
        self._tx_base = block * rx_blocks
        self._rx_next = self._tx_next = 0
        self._pending = False  # frames queued since the last flush
        self._max_frame = mtu + ETHERNET_HEADER + VLAN_TAG
        self._drops = 0
        self.truncated = 0  # frames longer than a slot (the kernel kept only their start)

    def fileno(self) -> int:
        return self._socket.fileno()

    def receive(self, limit: int) -> list[bytes]:
        """Up to `limit` frames the kernel has written, each copied out and its slot returned."""
        ring, unpack, slot = self._map, _RX_HEADER.unpack_from, self._slot
        index, slots = self._rx_next, self._rx_slots
        frames = []
        for _ in range(limit):
            offset = index * slot
            status, length, captured, mac, _net = unpack(ring, offset)
            if not status & TP_STATUS_USER:
                break
            if captured == length:
                frames.append(ring[offset + mac:offset + mac + captured])
            else:
                self.truncated += 1
            ring[offset:offset + 4] = _STATUS_FREE
            index = index + 1 if index + 1 < slots else 0
        self._rx_next = index
        return frames

    def send_batch(self, frames: list[bytes]) -> tuple[int, int, list[OSError]]:
        """Queue `frames` in the TX ring in order (`flush` sends them): frames queued, their
        bytes, and the error of each frame that was not (too long or too short, as `send`
        would say, or the ring still full after waiting for the kernel)."""
        ring, slot, base, slots = self._map, self._slot, self._tx_base, self._tx_slots
        index, max_frame, pack = self._tx_next, self._max_frame, _TX_HEADER.pack_into
        sent = sent_bytes = 0
        errors: list[OSError] = []
        for frame in frames:
            length = len(frame)
            if length > max_frame or length < ETHERNET_HEADER:
                errors.append(OSError(errno.EMSGSIZE, "frame longer than the leg's MTU")
                              if length > max_frame else
                              OSError(errno.EINVAL, "frame shorter than an Ethernet header"))
                continue
            offset = base + index * slot
            if ring[offset]:  # the kernel has not sent this slot's frame yet
                with contextlib.suppress(OSError):  # SEND_TIMEOUT_S passed, or the device went
                    self.flush(wait=True)
                if ring[offset]:
                    errors.append(OSError(errno.ENOBUFS, "the TX ring stayed full"))
                    continue
            ring[offset + TX_DATA_OFFSET:offset + TX_DATA_OFFSET + length] = frame
            # status last in memory order is not needed: the kernel reads the TX ring only
            # inside our own send() (flush), never while we write it
            pack(ring, offset, TP_STATUS_SEND_REQUEST, length, length)
            index = index + 1 if index + 1 < slots else 0
            sent += 1
            sent_bytes += length
        self._tx_next = index
        self._pending = self._pending or sent > 0
        return sent, sent_bytes, errors

    def flush(self, wait: bool = False) -> None:
        """Hand every queued frame to the kernel; with `wait`, until it has sent them."""
        if self._pending or wait:
            self._pending = False
            self._socket.send(b"", 0 if wait else socket.MSG_DONTWAIT)

    def receive_drops(self) -> int:
        self._drops += _kernel_drops(self._socket)
        return self._drops

    def close(self) -> None:
        self._map.close()
        self._socket.close()


def ring_leg(open_socket: Callable[[], socket.socket], ifname: str) -> Leg:
    """A RingLeg on a socket from `open_socket`, or, when the kernel refuses the rings, a
    SocketLeg on a fresh one (a socket with half its rings set up would not see frames) that
    says why in `io`."""
    sock = open_socket()
    try:
        return RingLeg(sock, ifname)
    except OSError as error:
        sock.close()
        return SocketLeg(open_socket(), why=f"no PACKET_MMAP rings on {ifname}: {error}")
