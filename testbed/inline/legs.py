"""The two legs of a bump node: AF_PACKET sockets, and the offload settings they need.

A bump node is an L2-transparent box: frames arriving on one leg leave, possibly changed or
delayed, on the other. Userspace can only do that correctly with wire-sized frames carrying
complete checksums, which veth does not give by default:

* TSO/GSO on the *sending* interface hands the peer (our leg) one super-frame of up to 64 KB;
  AF_PACKET delivers it whole and re-sending it fails with EMSGSIZE (it exceeds the MTU).
* TX checksum offload on the sending interface leaves the TCP checksum *partial* (pseudo-header
  only, CHECKSUM_PARTIAL). The frame we re-send through AF_PACKET is CHECKSUM_NONE, so the
  receiver verifies it in software and drops it as corrupt.
* GRO on our leg would merge arriving frames into super-frames again (veth has it off by
  default, but enabling XDP or a user setting turns it on).

So `prepare_leg` turns tso, gso, gro and tx checksumming off. It must be applied to every
interface of the topology that can send into a bump (the endpoints' and routers' interfaces) and
to the bump legs themselves; see `OFFLOADS_OFF` and the measurements in the package docstring.
It also disables IPv6 on the interface when asked, so that a bump's legs (which carry no
addresses) do not emit their own router solicitations and neighbour discovery into the link.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Sequence

from testbed.command import CommandFailed, run_command

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_IGNORE_OUTGOING = 23

# ethtool -K feature names turned off by prepare_leg (the short aliases ethtool accepts).
OFFLOADS_OFF: tuple[str, ...] = ("tso", "gso", "gro", "tx")
# The long names `ethtool -k` prints for them, read back to verify the change took effect.
_FEATURE_NAMES: dict[str, str] = {
    "tso": "tcp-segmentation-offload",
    "gso": "generic-segmentation-offload",
    "gro": "generic-receive-offload",
    "tx": "tx-checksumming",
}

DEFAULT_SOCKET_BUFFER_BYTES = 16 * 1024 * 1024


class LegError(RuntimeError):
    """A leg could not be opened or prepared; the message names the interface and the step."""


def _run(command: list[str]) -> str:
    """A leg command's stdout; a failure is a LegError (the inline process reports those)."""
    try:
        return run_command(command, what="preparing a leg").stdout
    except CommandFailed as exc:
        raise LegError(str(exc)) from exc


def read_offloads(ifname: str, command_prefix: Sequence[str] = ()) -> dict[str, bool]:
    """The current state of the features in OFFLOADS_OFF, as `ethtool -k` reports them."""
    output = _run([*command_prefix, "ethtool", "-k", ifname])
    states: dict[str, bool] = {}
    for line in output.splitlines():
        name, _, value = line.strip().partition(":")
        for short, long_name in _FEATURE_NAMES.items():
            if name == long_name:
                states[short] = value.strip().startswith("on")
    missing = [short for short in OFFLOADS_OFF if short not in states]
    if missing:
        raise LegError(f"{ifname}: ethtool -k did not report features {missing}")
    return states


def prepare_leg(
    ifname: str, command_prefix: Sequence[str] = (), *, disable_ipv6: bool = False
) -> None:
    """Turn off the offloads that break userspace forwarding on `ifname`, and verify it.

    `command_prefix` runs the commands inside the interface's namespace, e.g.
    ``["ip", "netns", "exec", "ns1"]`` or ``["mnexec", "-a", "1234"]``; empty means the
    current namespace. Raises LegError naming the interface when a feature stays on.
    """
    _run([*command_prefix, "ethtool", "-K", ifname, *(f for name in OFFLOADS_OFF
                                                       for f in (name, "off"))])
    still_on = [name for name, on in read_offloads(ifname, command_prefix).items() if on]
    if still_on:
        raise LegError(f"{ifname}: offloads {still_on} are still on after ethtool -K")
    if disable_ipv6 and (command_prefix or os.path.isdir(f"/proc/sys/net/ipv6/conf/{ifname}")):
        _run([*command_prefix, "sysctl", "-q", "-w", f"net.ipv6.conf.{ifname}.disable_ipv6=1"])


def open_leg(ifname: str, buffer_bytes: int = DEFAULT_SOCKET_BUFFER_BYTES) -> socket.socket:
    """An AF_PACKET raw socket bound to `ifname` that sees every frame arriving on it.

    Promiscuous mode is requested through a socket membership, so the kernel drops it again
    when the socket closes (no interface state left behind). PACKET_IGNORE_OUTGOING keeps our
    own transmissions on this leg out of the receive queue. The socket stays blocking for
    sends; receives use MSG_DONTWAIT so the event loop can drain a leg until it is empty.
    """
    try:
        leg = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    except OSError as error:
        raise LegError(f"{ifname}: cannot open an AF_PACKET socket: {error}") from error
    try:
        leg.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        _set_buffer(leg, socket.SO_RCVBUF, buffer_bytes)
        _set_buffer(leg, socket.SO_SNDBUF, buffer_bytes)
        leg.bind((ifname, ETH_P_ALL))
        ifindex = socket.if_nametoindex(ifname)
        # struct packet_mreq { int mr_ifindex; unsigned short mr_type, mr_alen; u8 mr_address[8]; }
        membership = struct.pack("iHH8s", ifindex, PACKET_MR_PROMISC, 0, b"")
        leg.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, membership)
    except OSError as error:
        leg.close()
        raise LegError(f"{ifname}: cannot set up the AF_PACKET socket: {error}") from error
    return leg


SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32


def _set_buffer(leg: socket.socket, option: int, size: int) -> None:
    """Large buffers absorb bursts while the loop is busy; FORCE beats rmem_max as root."""
    force = SO_RCVBUFFORCE if option == socket.SO_RCVBUF else SO_SNDBUFFORCE
    try:
        leg.setsockopt(socket.SOL_SOCKET, force, size)
    except PermissionError:
        leg.setsockopt(socket.SOL_SOCKET, option, size)
