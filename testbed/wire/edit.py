"""Option edits on raw IPv4/TCP bytes: the forwarding fast path of option-stripping boxes.

A box that only removes options (or overwrites them with NOPs) does not need the packet
rebuilt: the payload keeps its bytes, the TCP checksum is updated from the received one
(RFC 1624, `tcp_checksum_update`) and, when the header shrinks, the IPv4 total length and
header checksum follow. Options are still told apart by this codec only: `option_spans` walks
the option area exactly as `decode_options_at` splits it, so the n-th span is the n-th decoded
option. The output is byte-identical to decoding, editing the option list and encoding with
`encode_packet_reusing_payload` (a property the tests check), except that a wrong received
TCP checksum stays wrong instead of being recomputed.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from testbed.wire.checksum import ipv4_header_checksum, ones_complement_sum
from testbed.wire.errors import WireError
from testbed.wire.tcp import tcp_checksum_update
from testbed.wire.types import IPPROTO_TCP, NoOperation, Timestamps

_U16 = struct.Struct("!H")
_TCPOPT_EOL = 0
_TCPOPT_NOP = 1
_NOP_NOP_TIMESTAMPS = b"\x01\x01\x08\x0a"


# The option area of every non-SYN segment of a Linux connection with timestamps: NOP, NOP,
# timestamps -- 12 bytes, decoded by decode_options_at's fast path without any check that could
# fail. A fast path that meets exactly these bytes knows the options without decoding them.
LINUX_TIMESTAMPS_PREFIX = _NOP_NOP_TIMESTAMPS
LINUX_TIMESTAMPS_LAYOUT: tuple[tuple[type, int, int], ...] = (
    (NoOperation, 0, 1), (NoOperation, 1, 1), (Timestamps, 2, 10))  # (class, offset, length)


def is_linux_timestamps_area(buf: bytes | bytearray | memoryview, start: int, end: int) -> bool:
    """Whether `buf[start:end]` is exactly NOP, NOP, timestamps (LINUX_TIMESTAMPS_LAYOUT)."""
    return end - start == 12 and buf[start:start + 4] == _NOP_NOP_TIMESTAMPS


def option_spans(buf: bytes | bytearray | memoryview, start: int, end: int) -> list[tuple[int, int]]:
    """(offset, length) of each option in `buf[start:end]`, one per option `decode_options_at`
    returns (an EOL ends the walk; what follows it is padding). Lengths are checked as the
    decoder checks them."""
    spans: list[tuple[int, int]] = []
    position = start
    if end - start >= 12 and buf[start:start + 4] == _NOP_NOP_TIMESTAMPS:
        # Linux starts every non-SYN segment's options so (as decode_options_at's fast path).
        spans += ((start, 1), (start + 1, 1), (start + 2, 10))
        position += 12
    while position < end:
        kind = buf[position]
        if kind == _TCPOPT_NOP:
            spans.append((position, 1))
            position += 1
            continue
        if kind == _TCPOPT_EOL:
            spans.append((position, 1))
            break
        if position + 1 >= end:
            raise WireError(f"tcp.option[{len(spans)}].length", f"kind {kind} has no length byte")
        length = buf[position + 1]
        if length < 2 or position + length > end:
            raise WireError(f"tcp.option[{len(spans)}].length", f"kind {kind}: bad length {length}")
        spans.append((position, length))
        position += length
    return spans


def strip_option_spans(frame: bytes, ip_offset: int, spans: Sequence[tuple[int, int]],
                       drop: Sequence[int], *, nop: bool) -> bytes:
    """`frame` with the options `spans[i]` for i in `drop` overwritten with NOPs (`nop`) or
    removed (the rest kept in order, zero-padded to a multiple of 4, header shortened).

    `frame[ip_offset:]` must be an IPv4 packet without options carrying TCP whose header's
    reserved bits are zero and whose IPv4 flags are DF or nothing, and `spans` must cover its
    whole option area without an EOL (what re-encoding reproduces byte for byte); bytes after
    the IPv4 total length are dropped, as re-encoding drops them.
    """
    tcp = ip_offset + 20
    old_header_length = (frame[tcp + 12] >> 4) * 4
    options_start = tcp + 20
    options_end = tcp + old_header_length
    total = (frame[ip_offset + 2] << 8) | frame[ip_offset + 3]
    end = ip_offset + total
    if nop:
        old_options = frame[options_start:options_end]
        options = bytearray(old_options)
        for index in drop:
            offset, length = spans[index]
            options[offset - options_start:offset - options_start + length] = b"\x01" * length
        # RFC 1624 eqn. 3 on the option words only (they start at an even offset): as big
        # integers, a buffer's value modulo 0xFFFF is its one's-complement sum.
        old_checksum = (frame[tcp + 16] << 8) | frame[tcp + 17]
        total = ((~old_checksum & 0xFFFF) + int.from_bytes(options, "big")
                 - int.from_bytes(old_options, "big")) % 0xFFFF
        checksum = ~(total or 0xFFFF) & 0xFFFF
        view = memoryview(frame)
        return b"".join((view[:tcp + 16], _U16.pack(checksum), view[tcp + 18:options_start],
                         options, view[options_end:end]))
    dropped = set(drop)
    kept = b"".join(frame[offset:offset + length] for index, (offset, length) in enumerate(spans)
                    if index not in dropped)
    kept += bytes(-len(kept) % 4)
    header_length = 20 + len(kept)
    tcp_length = total - 20 - old_header_length + header_length
    fixed = frame[tcp:tcp + 12] + bytes(((header_length // 4) << 4,)) + frame[tcp + 13:tcp + 16]
    new_zero = b"".join((fixed, b"\x00\x00", frame[tcp + 18:tcp + 20], kept))
    addresses = frame[ip_offset + 12:ip_offset + 20]
    checksum = tcp_checksum_update(
        frame[tcp:options_end], ones_complement_sum(addresses, IPPROTO_TCP + total - 20),
        new_zero, ones_complement_sum(addresses, IPPROTO_TCP + tcp_length))
    ip_zero = b"".join((frame[ip_offset:ip_offset + 2], _U16.pack(20 + tcp_length),
                        frame[ip_offset + 4:ip_offset + 10], b"\x00\x00", addresses))
    ip_header = ip_zero[:10] + _U16.pack(ipv4_header_checksum(ip_zero)) + ip_zero[12:]
    view = memoryview(frame)
    return b"".join((view[:ip_offset], ip_header, fixed, _U16.pack(checksum),
                     view[tcp + 18:tcp + 20], kept, view[options_end:end]))


def replace_option_area(frame: bytes, ip_offset: int, options: bytes,
                        options_value: int | None = None) -> bytes:
    """`frame` with its whole TCP option area replaced by `options` of the same length (e.g. the
    NOPs a strip leaves), the TCP checksum updated for those words only (RFC 1624 eqn. 3; as big
    integers a buffer's value modulo 0xFFFF is its one's-complement sum). `options_value`, if
    given, is `int.from_bytes(options, "big")` computed once by a caller that reuses `options`.
    Same preconditions as `strip_option_spans`."""
    tcp = ip_offset + 20
    start = tcp + 20
    end = start + len(options)
    total = (frame[ip_offset + 2] << 8) | frame[ip_offset + 3]
    old_checksum = (frame[tcp + 16] << 8) | frame[tcp + 17]
    if options_value is None:
        options_value = int.from_bytes(options, "big")
    folded = ((~old_checksum & 0xFFFF) + options_value
              - int.from_bytes(frame[start:end], "big")) % 0xFFFF
    view = memoryview(frame)
    return b"".join((view[:tcp + 16], _U16.pack(~(folded or 0xFFFF) & 0xFFFF),
                     view[tcp + 18:start], options, view[end:ip_offset + total]))
