"""The prober's link on real packets: AF_PACKET in, raw IPv4 out, inside a testbed host.

The sockets are made inside the prober's namespace (setns(2) on this thread, then back): a
socket stays in the namespace it was created in, so the rest of the process needs no
namespace of its own. An nft table in that namespace drops, before the kernel's IP input,
TCP to the prober's ports, so the kernel never answers the target with RSTs for
connections only the prober knows (the same guard the python stack uses).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import time
from collections import deque
from collections.abc import Iterator

from testbed.mptcp.driver.guard import KernelGuard
from testbed.mptcp.driver.packet_io import PacketIO, PortFilter
from testbed.probe.session import PROBER_PORTS
from testbed.wire import WireError, decode_packet
from testbed.wire.types import Packet

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


@contextlib.contextmanager
def inside_netns(name: str) -> Iterator[None]:
    """Run the block with this thread in the named network namespace."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(target)
    finally:
        os.close(own)


class RawLink:
    """A `Link` for probe scripts: packets to and from the prober's addresses and ports."""

    def __init__(self, netns: str, addresses: list[str]) -> None:
        self.netns = netns
        self.guard = KernelGuard(addresses, [PROBER_PORTS], table="tb_probe")
        with inside_netns(netns):
            self.io = PacketIO(addresses, PortFilter([PROBER_PORTS]))
            try:
                self.guard.install()
            except BaseException:
                self.io.close()
                raise
        self.waiting: deque[bytes] = deque()
        self.undecodable = 0

    def now(self) -> float:
        return time.monotonic()

    def send(self, packet: Packet) -> None:
        self.io.send_packet(packet)

    def receive(self, timeout_s: float) -> Packet | None:
        end = time.monotonic() + timeout_s
        while True:
            while self.waiting:
                try:
                    return decode_packet(self.waiting.popleft())
                except WireError:
                    self.undecodable += 1
            self.waiting.extend(self.io.receive(64))
            if self.waiting:
                continue
            left = end - time.monotonic()
            if left <= 0:
                return None
            select.select([self.io.rx], [], [], left)

    def drain(self) -> None:
        """Forget what is queued (the previous probe's late packets)."""
        self.waiting.clear()
        while self.io.receive(256):
            pass

    def close(self) -> None:
        with contextlib.suppress(Exception), inside_netns(self.netns):
            self.guard.remove()
        self.io.close()
