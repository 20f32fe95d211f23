"""Kernel endpoints' address handling for IPv6 and dual stack: bracketed [ADDR6]:PORT on the
command line, a dual-stack AF_INET6 socket for IPv6 and IPv4-mapped addresses, and reports that
print an IPv4-mapped subflow as the IPv4 address it is on the wire."""

from __future__ import annotations

import argparse
import socket
import struct

import pytest

from testbed.endpoints.kernel import _format_address, _parse_host_port, open_socket, socket_family
from testbed.endpoints.kernel_info import parse_sockaddr


@pytest.mark.parametrize(("text", "expected"), [
    ("10.0.100.2:5201", ("10.0.100.2", 5201)),
    ("[fd00:10:0:100::2]:5201", ("fd00:10:0:100::2", 5201)),
    ("[::]:5201", ("::", 5201)),
    ("[::ffff:10.0.1.1]:80", ("::ffff:10.0.1.1", 80)),
])
def test_host_port_of_both_families(text: str, expected: tuple[str, int]) -> None:
    assert _parse_host_port(text, "--connect") == expected


def test_a_bind_address_may_omit_the_port() -> None:
    assert _parse_host_port("[fd00::1]", "--bind", port_required=False) == ("fd00::1", 0)
    assert _parse_host_port("10.0.1.1", "--bind", port_required=False) == ("10.0.1.1", 0)


@pytest.mark.parametrize(("text", "message"), [
    ("fd00::1:5201", "in brackets"),
    ("[fd00::1]5201", r"\[ADDR6\]:PORT"),
    ("[fd00::1]", r"\[ADDR6\]:PORT"),
    ("host:5201", "not an IP address"),
    ("[fd00::1]:70000", "not in 0..65535"),
])
def test_bad_addresses_are_named(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        _parse_host_port(text, "--connect")


def test_ipv6_and_mapped_addresses_open_a_dual_stack_socket() -> None:
    assert socket_family("::ffff:10.0.1.1") == socket.AF_INET6
    assert socket_family("10.0.1.1") == socket.AF_INET
    with open_socket("tcp", socket.AF_INET6) as sock:
        assert sock.family == socket.AF_INET6
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0


def test_addresses_print_unambiguously() -> None:
    assert _format_address(("fd00::1", 5201, 0, 0)) == "[fd00::1]:5201"
    assert _format_address(("::ffff:10.0.1.1", 5201, 0, 0)) == "10.0.1.1:5201"
    assert _format_address(("10.0.1.1", 5201)) == "10.0.1.1:5201"


def test_a_mapped_subflow_address_reads_as_ipv4() -> None:
    def sockaddr_in6(address: str, port: int) -> bytes:
        return struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", port, 0) + \
            socket.inet_pton(socket.AF_INET6, address) + struct.pack("=I", 0)

    assert parse_sockaddr(sockaddr_in6("::ffff:192.168.1.1", 40000)) == "192.168.1.1:40000"
    assert parse_sockaddr(sockaddr_in6("fd00:10:0:2::1", 40000)) == "[fd00:10:0:2::1]:40000"
