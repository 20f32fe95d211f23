"""Read what the Linux kernel knows about an MPTCP (or plain TCP) socket.

Three socket options of level SOL_MPTCP (include/uapi/linux/mptcp.h) are used:

- MPTCP_INFO (1): ``struct mptcp_info``, connection-level counters. After a fallback to
  TCP the kernel passes SOL_MPTCP getsockopt calls to the remaining TCP subflow, which
  answers EOPNOTSUPP: that errno is how fallback is detected (verified on 6.18).
- MPTCP_TCPINFO (2) and MPTCP_SUBFLOW_ADDRS (3): a ``struct mptcp_subflow_data`` header
  ``{size_subflow_data, num_subflows, size_kernel, size_user}`` followed by one element per
  subflow (a ``struct tcp_info`` or two ``sockaddr_storage``). The caller must write the
  header into the buffer before the call, which Python's ``socket.getsockopt`` cannot do,
  so these go through libc ``getsockopt`` via ctypes.

Parsing is split from the system calls so that the byte layouts are testable without a
kernel. Offsets follow the UAPI headers; fields the running kernel does not return (a
shorter struct from an older kernel) come back as ``None``.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import struct
from dataclasses import dataclass

IPPROTO_MPTCP = 262
SOL_MPTCP = 284
MPTCP_INFO = 1
MPTCP_TCPINFO = 2
MPTCP_SUBFLOW_ADDRS = 3

MPTCP_INFO_FLAG_FALLBACK = 0x1
MPTCP_INFO_FLAG_REMOTE_KEY_RECEIVED = 0x2

# struct mptcp_info, kernel 6.18 layout (natural alignment, 96 bytes). Older kernels
# return a prefix: 43 bytes (5.x), then the byte counters (6.5+), then the timers (6.10+).
_MPTCP_INFO_BASE = struct.Struct("=6B2xIIQQQ3B")  # up to mptcpi_csum_enabled: 43 bytes
_MPTCP_INFO_BYTES = struct.Struct("=IQQQQ")  # at offset 44: retransmits .. bytes_acked
_MPTCP_INFO_BYTES_OFFSET = 44
_MPTCP_INFO_TOTAL = struct.Struct("=B")  # mptcpi_subflows_total at offset 80
_MPTCP_INFO_TOTAL_OFFSET = 80
MPTCP_INFO_REQUEST_SIZE = 128

# struct tcp_info offsets (include/uapi/linux/tcp.h, checked with offsetof on this machine).
TCP_CLOSE = 7
TCP_INFO_FIELDS: dict[str, tuple[int, str]] = {  # name -> (offset, struct format)
    "tcpi_snd_mss": (16, "=I"),
    "tcpi_unacked": (24, "=I"),
    "tcpi_sacked": (28, "=I"),
    "tcpi_lost": (32, "=I"),
    "tcpi_retrans": (36, "=I"),
    "tcpi_rtt": (68, "=I"),
    "tcpi_snd_cwnd": (80, "=I"),
    "tcpi_total_retrans": (100, "=I"),
    "tcpi_bytes_acked": (120, "=Q"),
    "tcpi_bytes_received": (128, "=Q"),
    "tcpi_delivery_rate": (160, "=Q"),  # bytes per second (4.9+)
    "tcpi_bytes_sent": (200, "=Q"),
    "tcpi_bytes_retrans": (208, "=Q"),
}
TCP_INFO_REQUEST_SIZE = 232  # sizeof(struct tcp_info) in the 6.1 UAPI: covers every field above

_SUBFLOW_DATA_HEADER = struct.Struct("=IIII")  # aligned(8): 16 bytes, no tail padding
SUBFLOW_ADDRS_ELEMENT_SIZE = 256  # two struct __kernel_sockaddr_storage
V4_MAPPED_PREFIX = bytes(10) + b"\xff\xff"  # ::ffff:0:0/96
_SOCKADDR_STORAGE_SIZE = 128
_INITIAL_SLOTS = 8


class KernelInfoError(Exception):
    """A getsockopt call failed for a reason other than fallback, or returned garbage."""


@dataclass(frozen=True)
class MptcpInfo:
    """Connection-level counters of ``struct mptcp_info``; None when the kernel lacks them."""

    subflows: int  # additional subflows (the initial one is not counted)
    add_addr_signal: int
    add_addr_accepted: int
    subflows_max: int
    flags: int
    token: int
    write_seq: int
    snd_una: int
    rcv_nxt: int
    local_addr_used: int
    local_addr_max: int
    csum_enabled: bool
    retransmits: int | None
    bytes_retrans: int | None
    bytes_sent: int | None
    bytes_received: int | None
    bytes_acked: int | None
    subflows_total: int | None  # every subflow including the initial one (6.10+)

    @property
    def fallback(self) -> bool:
        return bool(self.flags & MPTCP_INFO_FLAG_FALLBACK)

    @property
    def remote_key_received(self) -> bool:
        return bool(self.flags & MPTCP_INFO_FLAG_REMOTE_KEY_RECEIVED)


@dataclass(frozen=True)
class TcpCounters:
    """The per-subflow byte counters of ``struct tcp_info`` that a throughput report needs."""

    state: int  # tcpi_state: TCP_ESTABLISHED=1 ... TCP_CLOSE=7
    bytes_sent: int | None  # includes retransmissions
    bytes_acked: int | None
    bytes_received: int | None
    bytes_retrans: int | None
    total_retrans: int
    rtt_us: int  # smoothed RTT
    snd_cwnd: int  # segments
    # telemetry; None when the kernel's struct tcp_info is too short to hold the field
    cwnd_bytes: int | None = None
    in_flight_bytes: int | None = None
    delivery_rate_bps: int | None = None  # bytes per second


def in_flight_segments(unacked: int, sacked: int, lost: int, retrans: int) -> int:
    """Segments in the network as the kernel counts them (tcp_packets_in_flight)."""
    return max(unacked - sacked - lost, 0) + retrans


def counters_are_void(counters: TcpCounters) -> bool:
    """A closed socket whose tcp_info was reset: it says nothing about the transfer.

    Seen on an MPTCP socket that fell back to TCP, once its subflow has closed.
    """
    byte_counters = (counters.bytes_sent, counters.bytes_acked, counters.bytes_received)
    return counters.state == TCP_CLOSE and not any(byte_counters)


@dataclass(frozen=True)
class SubflowSnapshot:
    """One subflow as seen at one instant: its addresses and its counters."""

    local: str  # "ip:port"
    remote: str
    counters: TcpCounters


def parse_mptcp_info(raw: bytes) -> MptcpInfo:
    """Decode ``struct mptcp_info``; ``raw`` is what the kernel returned (maybe a prefix)."""
    if len(raw) < _MPTCP_INFO_BASE.size:
        raise KernelInfoError(
            f"struct mptcp_info too short: {len(raw)} bytes, need at least {_MPTCP_INFO_BASE.size}"
        )
    (
        subflows,
        add_addr_signal,
        add_addr_accepted,
        subflows_max,
        _signal_max,
        _accepted_max,
        flags,
        token,
        write_seq,
        snd_una,
        rcv_nxt,
        local_addr_used,
        local_addr_max,
        csum_enabled,
    ) = _MPTCP_INFO_BASE.unpack_from(raw)
    retransmits = bytes_retrans = bytes_sent = bytes_received = bytes_acked = None
    if len(raw) >= _MPTCP_INFO_BYTES_OFFSET + _MPTCP_INFO_BYTES.size:
        retransmits, bytes_retrans, bytes_sent, bytes_received, bytes_acked = _MPTCP_INFO_BYTES.unpack_from(
            raw, _MPTCP_INFO_BYTES_OFFSET
        )
    subflows_total = None
    if len(raw) > _MPTCP_INFO_TOTAL_OFFSET:
        (subflows_total,) = _MPTCP_INFO_TOTAL.unpack_from(raw, _MPTCP_INFO_TOTAL_OFFSET)
    return MptcpInfo(
        subflows=subflows,
        add_addr_signal=add_addr_signal,
        add_addr_accepted=add_addr_accepted,
        subflows_max=subflows_max,
        flags=flags,
        token=token,
        write_seq=write_seq,
        snd_una=snd_una,
        rcv_nxt=rcv_nxt,
        local_addr_used=local_addr_used,
        local_addr_max=local_addr_max,
        csum_enabled=bool(csum_enabled),
        retransmits=retransmits,
        bytes_retrans=bytes_retrans,
        bytes_sent=bytes_sent,
        bytes_received=bytes_received,
        bytes_acked=bytes_acked,
        subflows_total=subflows_total,
    )


def _field(raw: bytes, name: str) -> int | None:
    offset, fmt = TCP_INFO_FIELDS[name]
    if len(raw) < offset + struct.calcsize(fmt):
        return None
    value: int = struct.unpack_from(fmt, raw, offset)[0]
    return value


def parse_tcp_info(raw: bytes) -> TcpCounters:
    """Decode the fields we report from a ``struct tcp_info`` (maybe a prefix)."""
    if len(raw) < TCP_INFO_FIELDS["tcpi_total_retrans"][0] + 4:
        raise KernelInfoError(f"struct tcp_info too short: {len(raw)} bytes, need at least 104")
    mss = _field(raw, "tcpi_snd_mss") or 0
    cwnd = _field(raw, "tcpi_snd_cwnd") or 0
    unacked, sacked, lost, retrans = (_field(raw, name) or 0 for name in
                                      ("tcpi_unacked", "tcpi_sacked", "tcpi_lost", "tcpi_retrans"))
    return TcpCounters(
        state=raw[0],
        bytes_sent=_field(raw, "tcpi_bytes_sent"),
        bytes_acked=_field(raw, "tcpi_bytes_acked"),
        bytes_received=_field(raw, "tcpi_bytes_received"),
        bytes_retrans=_field(raw, "tcpi_bytes_retrans"),
        total_retrans=_field(raw, "tcpi_total_retrans") or 0,
        rtt_us=_field(raw, "tcpi_rtt") or 0,
        snd_cwnd=cwnd,
        cwnd_bytes=cwnd * mss,
        in_flight_bytes=in_flight_segments(unacked, sacked, lost, retrans) * mss,
        delivery_rate_bps=_field(raw, "tcpi_delivery_rate"),
    )


def parse_sockaddr(raw: bytes) -> str:
    """Render a ``struct sockaddr_in``/``sockaddr_in6`` as "ip:port" / "[ip]:port"; an
    IPv4-mapped IPv6 address (a dual-stack socket's IPv4 subflow) as the IPv4 address it is on
    the wire."""
    if len(raw) < 2:
        raise KernelInfoError(f"sockaddr too short: {len(raw)} bytes")
    (family,) = struct.unpack_from("=H", raw)
    if family == socket.AF_INET and len(raw) >= 8:
        (port,) = struct.unpack_from("!H", raw, 2)
        return f"{socket.inet_ntop(socket.AF_INET, raw[4:8])}:{port}"
    if family == socket.AF_INET6 and len(raw) >= 24:
        (port,) = struct.unpack_from("!H", raw, 2)
        if raw[8:20] == V4_MAPPED_PREFIX:
            return f"{socket.inet_ntop(socket.AF_INET, raw[20:24])}:{port}"
        return f"[{socket.inet_ntop(socket.AF_INET6, raw[8:24])}]:{port}"
    raise KernelInfoError(f"unsupported sockaddr family {family} ({len(raw)} bytes)")


def parse_subflow_data(raw: bytes) -> tuple[int, list[bytes]]:
    """Split a ``struct mptcp_subflow_data`` reply into (num_subflows, element byte strings).

    ``num_subflows`` counts every subflow even when the buffer held fewer elements; the
    caller retries with more room when it exceeds the number of elements returned.
    """
    if len(raw) < _SUBFLOW_DATA_HEADER.size:
        raise KernelInfoError(f"mptcp_subflow_data reply too short: {len(raw)} bytes")
    header_size, num_subflows, _size_kernel, size_user = _SUBFLOW_DATA_HEADER.unpack_from(raw)
    if header_size < _SUBFLOW_DATA_HEADER.size or size_user == 0:
        raise KernelInfoError(
            f"mptcp_subflow_data header invalid: size_subflow_data={header_size} size_user={size_user}"
        )
    body = raw[header_size:]
    count = min(num_subflows, len(body) // size_user)
    elements = [body[i * size_user : (i + 1) * size_user] for i in range(count)]
    return num_subflows, elements


_libc = ctypes.CDLL(None, use_errno=True)
_libc_getsockopt = _libc.getsockopt
_libc_getsockopt.argtypes = [
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_uint32),
]
_libc_getsockopt.restype = ctypes.c_int


def _getsockopt_inout(fd: int, level: int, optname: int, request: bytes) -> bytes:
    """getsockopt whose buffer carries input (the subflow_data header); OSError on failure."""
    buffer = ctypes.create_string_buffer(request, len(request))
    length = ctypes.c_uint32(len(request))
    if _libc_getsockopt(fd, level, optname, buffer, ctypes.byref(length)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"getsockopt(level={level}, optname={optname}): {errno.errorcode.get(err, err)}")
    return buffer.raw[: length.value]


def _subflow_elements(fd: int, optname: int, element_size: int) -> list[bytes]:
    slots = _INITIAL_SLOTS
    while True:
        header = _SUBFLOW_DATA_HEADER.pack(_SUBFLOW_DATA_HEADER.size, 0, 0, element_size)
        raw = _getsockopt_inout(fd, SOL_MPTCP, optname, header + bytes(slots * element_size))
        num_subflows, elements = parse_subflow_data(raw)
        if num_subflows <= len(elements):
            return elements
        slots = num_subflows + 4


def is_fallback_errno(err: int | None) -> bool:
    """True for the errno a SOL_MPTCP getsockopt gives on a socket that is plain TCP."""
    return err in (errno.EOPNOTSUPP, errno.ENOPROTOOPT)


def read_mptcp_info(sock: socket.socket) -> MptcpInfo | None:
    """MPTCP_INFO of a connected socket, or None when it is (or fell back to) plain TCP."""
    try:
        raw = sock.getsockopt(SOL_MPTCP, MPTCP_INFO, MPTCP_INFO_REQUEST_SIZE)
    except OSError as exc:
        if is_fallback_errno(exc.errno):
            return None
        raise
    return parse_mptcp_info(raw)


def read_mptcp_subflows(sock: socket.socket) -> list[SubflowSnapshot] | None:
    """Every live subflow with its tcp_info counters; None if the socket is not MPTCP.

    MPTCP_SUBFLOW_ADDRS and MPTCP_TCPINFO are two calls walking the same subflow list in
    the same order. Addresses are read before and after the counters and must agree, so a
    subflow joining or closing in between cannot pair one subflow's counters with another's
    addresses; on disagreement the read is retried.
    """
    fd = sock.fileno()
    try:
        for _attempt in range(5):
            before = _subflow_elements(fd, MPTCP_SUBFLOW_ADDRS, SUBFLOW_ADDRS_ELEMENT_SIZE)
            infos = _subflow_elements(fd, MPTCP_TCPINFO, TCP_INFO_REQUEST_SIZE)
            after = _subflow_elements(fd, MPTCP_SUBFLOW_ADDRS, SUBFLOW_ADDRS_ELEMENT_SIZE)
            if before == after and len(infos) == len(after):
                return [
                    SubflowSnapshot(
                        local=parse_sockaddr(addrs[:_SOCKADDR_STORAGE_SIZE]),
                        remote=parse_sockaddr(addrs[_SOCKADDR_STORAGE_SIZE:]),
                        counters=parse_tcp_info(info),
                    )
                    for addrs, info in zip(after, infos, strict=True)
                ]
    except OSError as exc:
        if is_fallback_errno(exc.errno):
            return None
        raise
    raise KernelInfoError("subflow list kept changing between MPTCP_SUBFLOW_ADDRS and MPTCP_TCPINFO")


def read_tcp_subflow(sock: socket.socket, local: str, remote: str) -> SubflowSnapshot:
    """The single "subflow" of a plain TCP socket (or of an MPTCP socket that fell back).

    On a fallen-back MPTCP socket the kernel forwards SOL_TCP options to its one subflow.
    The addresses come from the caller because getpeername fails (ENOTCONN) once both
    FINs are through, exactly when the final counters are read.
    """
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_REQUEST_SIZE)
    return SubflowSnapshot(local=local, remote=remote, counters=parse_tcp_info(raw))
