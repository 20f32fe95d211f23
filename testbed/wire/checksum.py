"""Internet checksums (RFC 1071) for IPv4, TCP and the MPTCP DSS option (RFC 8684 3.3.1).

Speed matters: every forwarded or generated segment is checksummed. In Python, the one's-complement sum of
16-bit big-endian words equals the value of the whole buffer as one big integer modulo 0xFFFF
(because 2**16 == 1 mod 0xFFFF), and `int.from_bytes` does that in C: about 3 us for 1480
bytes in CPython, 15x faster than a Python loop over words.

The sum runs in C (testbed/wire/_checksum.c, about 0.1 us for 1480 bytes) when the extension
was built, as `make setup` does; without it the Python version below runs, and
`CHECKSUM_IMPLEMENTATION` says which (`testbed doctor` and the benchmarks print it).

Conventions: `ones_complement_sum` returns the folded, NOT inverted, 16-bit sum, in which a
non-zero input never sums to 0 (it gives 0xFFFF, "negative zero", as real end-around-carry
adders do). `internet_checksum` is the inverted sum: the value that goes into a checksum field.
A buffer that already contains its correct checksum has an internet_checksum of 0.
"""

from __future__ import annotations

import socket
import struct

from testbed.wire.errors import WireError

_DSS_PSEUDO = struct.Struct("!QIHH")  # DSN, relative subflow seq, data-level length, zero csum
_IPPROTO_TCP = 6
_FOLD_BITS = 5120  # 640 bytes: about half of a full-sized segment
_FOLD_MASK = (1 << _FOLD_BITS) - 1
_FOLD_THRESHOLD = 1024


def python_ones_complement_sum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """16-bit one's-complement sum of `data` (odd length padded with a zero byte) plus `initial`.

    `initial` is a previous (folded) sum, so sums over pieces can be chained; a piece other
    than the last must have even length for the chaining to be word-aligned.
    """
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8  # pad the odd byte on the right, without copying the buffer
    if len(data) >= _FOLD_THRESHOLD:
        # One fold at a 16-bit boundary halves the number the slow `%` has to divide.
        value = (value >> _FOLD_BITS) + (value & _FOLD_MASK)
    value += initial
    folded = value % 0xFFFF
    if folded == 0 and value:
        return 0xFFFF
    return folded


try:
    from testbed.wire._checksum import ones_complement_sum
    CHECKSUM_IMPLEMENTATION = "c"
except ImportError:  # not built (a checkout without `make setup`, another interpreter)
    ones_complement_sum = python_ones_complement_sum
    CHECKSUM_IMPLEMENTATION = "python"


def internet_checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The checksum field value: one's complement of the one's-complement sum (RFC 1071).

    As TCP and IPv4 transmit it (RFC 793): 0 is a legal result and is not mapped to 0xFFFF
    (that substitution is UDP's, RFC 768). Verifying a buffer that contains its checksum
    yields 0.
    """
    return ~ones_complement_sum(data, initial) & 0xFFFF


# Address string -> folded 16-bit word sum (plus 0x10000 for IPv6, as a family marker), for the
# pseudo-header. Bounded, so a scan over many addresses cannot grow it without limit.
_ADDRESS_SUMS: dict[str, int] = {}
_ADDRESS_SUMS_LIMIT = 4096


def address_sum(address: str, field: str = "ip.address") -> int:
    """Sum of the 16-bit words of an IPv4/IPv6 address (pseudo-header part), cached."""
    cached = _ADDRESS_SUMS.get(address)
    if cached is not None:
        return cached
    try:
        if ":" in address:
            raw = socket.inet_pton(socket.AF_INET6, address)
        else:
            raw = socket.inet_pton(socket.AF_INET, address)
    except (OSError, TypeError):
        raise WireError(field, f"not an IPv4 or IPv6 address: {address!r}") from None
    total = ones_complement_sum(raw) + (0x10000 if len(raw) == 16 else 0)
    if len(_ADDRESS_SUMS) >= _ADDRESS_SUMS_LIMIT:
        _ADDRESS_SUMS.clear()
    _ADDRESS_SUMS[address] = total
    return total


def pseudo_header_sum(src: str, dst: str, tcp_length: int) -> int:
    """Folded sum of the TCP pseudo-header: IPv4 (RFC 9293 3.1) or IPv6 (RFC 8200 8.1).

    IPv4 has the protocol and the 16-bit TCP length as words; IPv6 the 32-bit length and the
    next-header value in the last word. Word-wise both add up to addresses + 6 + length.
    """
    src_sum = address_sum(src, "ip.src")
    dst_sum = address_sum(dst, "ip.dst")
    if (src_sum >> 16) != (dst_sum >> 16):
        raise WireError("ip.dst", f"address family differs from the source: {src!r} -> {dst!r}")
    total = (
        (src_sum & 0xFFFF) + (dst_sum & 0xFFFF) + _IPPROTO_TCP
        + (tcp_length >> 16) + (tcp_length & 0xFFFF)
    )
    folded = total % 0xFFFF
    return 0xFFFF if folded == 0 else folded


def tcp_checksum(src: str, dst: str, tcp_bytes: bytes | bytearray | memoryview) -> int:
    """The TCP checksum field value for `tcp_bytes` (header with its checksum field zeroed,
    then payload); for a segment that carries a correct checksum this returns 0."""
    return internet_checksum(tcp_bytes, pseudo_header_sum(src, dst, len(tcp_bytes)))


def ipv4_header_checksum(header: bytes | bytearray | memoryview) -> int:
    """The IPv4 header checksum field value (header with its checksum field zeroed)."""
    return internet_checksum(header)


def dss_checksum(dsn: int, subflow_seq: int, data_len: int, payload: bytes | memoryview) -> int:
    """The DSS option checksum (RFC 8684 3.3.1).

    Internet checksum over a pseudo-header of the 64-bit DSN, the 32-bit relative subflow
    sequence number, the 16-bit data-level length and a 16-bit zero checksum field, followed
    by the mapped payload. Pass `data_len` exactly as carried in the option: a DATA_FIN counts
    one in it (a bare DATA_FIN is subflow_seq 0, data_len 1, empty payload).
    """
    try:
        header = _DSS_PSEUDO.pack(dsn, subflow_seq, data_len, 0)
    except struct.error as error:
        raise WireError("mptcp.dss.checksum", f"pseudo-header field out of range: {error}") from error
    return internet_checksum(payload, ones_complement_sum(header))


def checksum_adjust(checksum: int, old: bytes, new: bytes) -> int:
    """Incrementally update a checksum field after `old` bytes were replaced by `new` (RFC 1624
    eqn. 3: HC' = ~(~HC + ~m + m')). `old` and `new` must have the same even length and start
    at an even offset of the checksummed data. Lets a middlebox rewrite an address, port or
    sequence number without re-summing the payload."""
    if len(old) != len(new) or len(old) & 1:
        raise WireError("checksum.adjust", "old and new must be of the same even length")
    total = (~checksum & 0xFFFF) + (~ones_complement_sum(old) & 0xFFFF) + ones_complement_sum(new)
    return ~ones_complement_sum(total.to_bytes(4, "big")) & 0xFFFF


def checksum_adjust_u32(checksum: int, old: int, new: int) -> int:
    """`checksum_adjust` for one 32-bit field (a sequence number or an IPv4 address)."""
    return checksum_adjust(checksum, old.to_bytes(4, "big"), new.to_bytes(4, "big"))


def checksum_adjust_u16(checksum: int, old: int, new: int) -> int:
    """`checksum_adjust` for one 16-bit field (a port)."""
    return checksum_adjust(checksum, old.to_bytes(2, "big"), new.to_bytes(2, "big"))
