"""The addresses of this network namespace's interfaces, read with one rtnetlink dump.

Why not pyroute2: the python stack's endpoint needs this list once, at start, and importing
pyroute2 costs its process about 14 MB of resident memory for the rest of its life (163
modules), a quarter of the stack's whole budget. A RTM_GETADDR dump is a few dozen lines of
`socket` and `struct`.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct

NETLINK_ROUTE = 0
RTM_NEWADDR = 20
RTM_GETADDR = 22
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
IFA_ADDRESS = 1

_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, interface index
_RTATTR = struct.Struct("=HH")  # length, type


class AddressDumpError(OSError):
    """The kernel refused the address dump or answered something unreadable."""


def _align(length: int) -> int:
    return (length + 3) & ~3


def _parse_address_message(body: bytes) -> tuple[int, str] | None:
    """(interface index, address) of one RTM_NEWADDR body, or None without IFA_ADDRESS."""
    family, _prefix, _flags, _scope, index = _IFADDRMSG.unpack_from(body)
    offset = _align(_IFADDRMSG.size)
    while offset + _RTATTR.size <= len(body):
        length, kind = _RTATTR.unpack_from(body, offset)
        if length < _RTATTR.size or offset + length > len(body):
            raise AddressDumpError(f"rtnetlink: malformed attribute (length {length}) "
                                   f"in an address message")
        if kind == IFA_ADDRESS:
            value = body[offset + _RTATTR.size:offset + length]
            if family == socket.AF_INET and len(value) == 4:
                return index, str(ipaddress.IPv4Address(value))
            if family == socket.AF_INET6 and len(value) == 16:
                return index, str(ipaddress.IPv6Address(value))
        offset += _align(length)
    return None


def interface_addresses(family: int) -> list[tuple[int, str]]:
    """(interface index, address) of every address of `family` (socket.AF_INET or AF_INET6)
    in this namespace, in the kernel's order. Raises AddressDumpError if the dump fails."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as nl:
        nl.bind((0, 0))
        sequence = 1
        request_body = _IFADDRMSG.pack(family, 0, 0, 0, 0)
        nl.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(request_body), RTM_GETADDR,
                               NLM_F_REQUEST | NLM_F_DUMP, sequence, 0) + request_body)
        found: list[tuple[int, str]] = []
        while True:
            data = nl.recv(65536)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, kind, _flags, seq, _port = _NLMSGHDR.unpack_from(data, offset)
                if length < _NLMSGHDR.size or offset + length > len(data):
                    raise AddressDumpError(f"rtnetlink: malformed message (length {length})")
                body = data[offset + _NLMSGHDR.size:offset + length]
                offset += _align(length)
                if seq != sequence:
                    continue
                if kind == NLMSG_DONE:
                    return found
                if kind == NLMSG_ERROR:
                    error = -struct.unpack_from("=i", body)[0]
                    if error:
                        raise AddressDumpError(error, f"rtnetlink address dump: "
                                                      f"{os.strerror(error)}")
                    continue
                if kind == RTM_NEWADDR:
                    parsed = _parse_address_message(body)
                    if parsed is not None:
                        found.append(parsed)
            if not data:
                raise AddressDumpError("rtnetlink: the address dump ended without NLMSG_DONE")
