"""Byte layouts of the kernel structs the endpoint reads, checked against C's own rules.

``struct mptcp_info`` is rebuilt as a ctypes Structure from the UAPI field list (ctypes
applies the C alignment rules independently of our struct format strings); the
``struct tcp_info`` offsets are compared with ``offsetof`` from the installed UAPI header
compiled by gcc when it is available. No root needed.
"""

from __future__ import annotations

import ctypes
import shutil
import socket
import struct
import subprocess
from pathlib import Path

import pytest

from testbed.endpoints.kernel_info import (
    TCP_INFO_FIELDS,
    KernelInfoError,
    counters_are_void,
    parse_mptcp_info,
    parse_sockaddr,
    parse_subflow_data,
    parse_tcp_info,
)

u8, u32, u64 = ctypes.c_uint8, ctypes.c_uint32, ctypes.c_uint64


class CMptcpInfo(ctypes.Structure):
    """include/uapi/linux/mptcp.h, kernel 6.18, field for field."""

    _fields_ = [
        ("subflows", u8),
        ("add_addr_signal", u8),
        ("add_addr_accepted", u8),
        ("subflows_max", u8),
        ("add_addr_signal_max", u8),
        ("add_addr_accepted_max", u8),
        ("flags", u32),
        ("token", u32),
        ("write_seq", u64),
        ("snd_una", u64),
        ("rcv_nxt", u64),
        ("local_addr_used", u8),
        ("local_addr_max", u8),
        ("csum_enabled", u8),
        ("retransmits", u32),
        ("bytes_retrans", u64),
        ("bytes_sent", u64),
        ("bytes_received", u64),
        ("bytes_acked", u64),
        ("subflows_total", u8),
        ("endp_laminar_max", u8),
        ("endp_fullmesh_max", u8),
        ("reserved", u8),
        ("last_data_sent", u32),
        ("last_data_recv", u32),
        ("last_ack_recv", u32),
    ]


def _sample_info() -> CMptcpInfo:
    info = CMptcpInfo()
    values = {
        "subflows": 1, "add_addr_signal": 2, "add_addr_accepted": 3, "subflows_max": 4,
        "flags": 0x3, "token": 0xDEADBEEF, "write_seq": 1 << 40, "snd_una": (1 << 40) - 5,
        "rcv_nxt": 77, "local_addr_used": 5, "local_addr_max": 6, "csum_enabled": 1,
        "retransmits": 9, "bytes_retrans": 1000, "bytes_sent": 123456789012,
        "bytes_received": 98765, "bytes_acked": 123456789000, "subflows_total": 2,
    }  # fmt: skip
    for name, value in values.items():
        setattr(info, name, value)
    return info


def test_mptcp_info_full_layout_matches_c() -> None:
    raw = bytes(_sample_info())
    assert len(raw) == 96
    info = parse_mptcp_info(raw)
    assert (info.subflows, info.add_addr_signal, info.add_addr_accepted) == (1, 2, 3)
    assert info.subflows_max == 4 and info.token == 0xDEADBEEF
    assert info.write_seq == 1 << 40 and info.snd_una == (1 << 40) - 5 and info.rcv_nxt == 77
    assert (info.local_addr_used, info.local_addr_max, info.csum_enabled) == (5, 6, True)
    assert info.retransmits == 9 and info.bytes_retrans == 1000
    assert info.bytes_sent == 123456789012 and info.bytes_received == 98765
    assert info.bytes_acked == 123456789000 and info.subflows_total == 2
    assert info.fallback and info.remote_key_received


def test_mptcp_info_from_older_kernel_leaves_new_fields_none() -> None:
    raw = bytes(_sample_info())[: CMptcpInfo.retransmits.offset]  # a 5.x-sized struct
    info = parse_mptcp_info(raw)
    assert info.token == 0xDEADBEEF and info.csum_enabled
    assert info.bytes_sent is None and info.bytes_acked is None and info.subflows_total is None


def test_mptcp_info_too_short_names_the_struct() -> None:
    with pytest.raises(KernelInfoError, match="mptcp_info too short: 10 bytes"):
        parse_mptcp_info(bytes(10))


def _offsets_program() -> str:
    """A C program printing offsetof() of every tcp_info field we decode, in TCP_INFO_FIELDS order."""
    prints = "\n".join(f'    printf("%zu\\n", offsetof(struct tcp_info, {name}));'
                       for name in TCP_INFO_FIELDS)
    return ("#include <stdio.h>\n#include <stddef.h>\n#include <linux/tcp.h>\n"
            f"int main(void) {{\n{prints}\n    return 0;\n}}\n")


def test_tcp_info_offsets_match_the_uapi_header(tmp_path: Path) -> None:
    if shutil.which("gcc") is None or not Path("/usr/include/linux/tcp.h").exists():
        pytest.skip("needs gcc and the Linux UAPI headers")
    source = tmp_path / "offsets.c"
    source.write_text(_offsets_program())
    binary = tmp_path / "offsets"
    subprocess.run(["gcc", "-o", str(binary), str(source)], check=True, timeout=60)
    output = subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout
    ours = [offset for offset, _fmt in TCP_INFO_FIELDS.values()]
    assert [int(field) for field in output.split()] == ours


def _tcp_info_bytes(size: int = 232, **fields: int) -> bytes:
    raw = bytearray(size)
    layout = {"state": (0, "=B"), **{name.removeprefix("tcpi_"): v for name, v in TCP_INFO_FIELDS.items()}}
    for name, value in fields.items():
        offset, fmt = layout[name]
        if offset + struct.calcsize(fmt) <= size:
            struct.pack_into(fmt, raw, offset, value)
    return bytes(raw)


def test_tcp_info_fields() -> None:
    counters = parse_tcp_info(
        _tcp_info_bytes(
            state=1, rtt=1500, snd_cwnd=10, total_retrans=3, bytes_acked=5000,
            bytes_received=7, bytes_sent=5100, bytes_retrans=100,
        )
    )  # fmt: skip
    assert counters.state == 1 and counters.rtt_us == 1500 and counters.snd_cwnd == 10
    assert counters.total_retrans == 3 and counters.bytes_acked == 5000
    assert counters.bytes_received == 7
    assert counters.bytes_sent == 5100 and counters.bytes_retrans == 100
    assert not counters_are_void(counters)


def test_tcp_info_prefix_from_old_kernel() -> None:
    counters = parse_tcp_info(_tcp_info_bytes(size=192, bytes_acked=10, bytes_sent=99))
    assert counters.bytes_acked == 10 and counters.bytes_sent is None


def test_tcp_info_telemetry_fields() -> None:
    counters = parse_tcp_info(_tcp_info_bytes(
        state=1, snd_mss=1448, snd_cwnd=10, unacked=8, sacked=2, lost=1, retrans=1,
        delivery_rate=1_250_000))
    assert counters.cwnd_bytes == 14480
    assert counters.in_flight_bytes == (8 - 2 - 1 + 1) * 1448  # tcp_packets_in_flight
    assert counters.delivery_rate_bps == 1_250_000


def test_tcp_info_without_delivery_rate_is_none_not_zero() -> None:
    counters = parse_tcp_info(_tcp_info_bytes(size=160, snd_mss=1448, snd_cwnd=4))
    assert counters.delivery_rate_bps is None and counters.cwnd_bytes == 4 * 1448


def test_closed_zeroed_tcp_info_is_void() -> None:
    assert counters_are_void(parse_tcp_info(_tcp_info_bytes(state=7, snd_cwnd=10)))
    assert not counters_are_void(parse_tcp_info(_tcp_info_bytes(state=7, bytes_acked=1)))


def _sockaddr_in(address: str, port: int) -> bytes:
    raw = struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(address)
    return raw.ljust(128, b"\0")


def test_sockaddr_v4_and_v6() -> None:
    assert parse_sockaddr(_sockaddr_in("10.98.2.1", 40763)) == "10.98.2.1:40763"
    v6 = struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", 80, 0)
    v6 += socket.inet_pton(socket.AF_INET6, "fd00::1")
    assert parse_sockaddr(v6.ljust(128, b"\0")) == "[fd00::1]:80"
    with pytest.raises(KernelInfoError, match="unsupported sockaddr family 0"):
        parse_sockaddr(bytes(128))


def test_subflow_data_elements_use_the_returned_stride() -> None:
    elements = [_sockaddr_in("10.98.1.1", 1) * 2, _sockaddr_in("10.98.2.1", 2) * 2]
    raw = struct.pack("=IIII", 16, 2, 256, 256) + b"".join(elements)
    total, parsed = parse_subflow_data(raw)
    assert total == 2 and parsed == elements


def test_subflow_data_reports_subflows_that_did_not_fit() -> None:
    raw = struct.pack("=IIII", 16, 3, 280, 232) + bytes(232)
    total, parsed = parse_subflow_data(raw)
    assert total == 3 and len(parsed) == 1


def test_subflow_data_bad_header_is_named() -> None:
    with pytest.raises(KernelInfoError, match="size_user=0"):
        parse_subflow_data(struct.pack("=IIII", 16, 1, 280, 0))
    with pytest.raises(KernelInfoError, match="too short"):
        parse_subflow_data(b"\0" * 8)
