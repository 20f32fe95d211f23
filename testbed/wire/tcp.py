"""The TCP header (RFC 9293): decode into a TcpSegment, encode with data offset and checksum.

Only header byte 13 is kept as `flags`; the NS/AE bit and the reserved bits of byte 12 are
dropped on decode and sent as zero. The received checksum is kept in `TcpSegment.checksum` and
not verified here (see `verify_tcp_checksum`): a middlebox must be able to look at, and count,
a segment whose checksum a previous box broke.
"""

from __future__ import annotations

import struct

from testbed.wire.checksum import ones_complement_sum, pseudo_header_sum
from testbed.wire.errors import WireError
from testbed.wire.mptcp_options import dss_wire_layout, dss_wire_values
from testbed.wire.tcp_options import TCPOPT_TIMESTAMPS, decode_options_at, encode_options
from testbed.wire.types import Dss, TcpSegment, Timestamps

TCP_HEADER = struct.Struct("!HHIIBBHHH")
TCP_MIN_HEADER_LENGTH = 20
TCP_CHECKSUM_OFFSET = 16
_U16 = struct.Struct("!H")

def decode_tcp_at(buf: bytes, start: int, end: int) -> TcpSegment:
    """Decode the TCP segment in `buf[start:end]` (no intermediate copies)."""
    available = end - start
    if available < TCP_MIN_HEADER_LENGTH:
        raise WireError("tcp.length", f"a TCP header has at least 20 bytes, got {available}")
    src_port, dst_port, seq, ack, offset_byte, flags, window, checksum, urgent = (
        TCP_HEADER.unpack_from(buf, start)
    )
    header_length = (offset_byte >> 4) * 4
    if header_length < TCP_MIN_HEADER_LENGTH:
        raise WireError("tcp.data_offset", f"{offset_byte >> 4} words is below the minimum 5")
    if header_length > available:
        raise WireError(
            "tcp.data_offset", f"header of {header_length} bytes exceeds the {available} available"
        )
    options = (
        decode_options_at(buf, start + TCP_MIN_HEADER_LENGTH, start + header_length)
        if header_length > TCP_MIN_HEADER_LENGTH
        else []
    )
    return TcpSegment(
        src_port, dst_port, seq, ack, flags, window, options,
        bytes(buf[start + header_length : end]), urgent, checksum,
    )


def decode_tcp(data: bytes) -> TcpSegment:
    """Decode a TCP segment (header, options, payload); keeps the received checksum."""
    return decode_tcp_at(data, 0, len(data))


def encode_tcp_header(segment: TcpSegment, checksum: int = 0) -> bytes:
    """Header and options of `segment` with the given checksum field value."""
    options = encode_options(segment.options) if segment.options else b""
    header_length = TCP_MIN_HEADER_LENGTH + len(options)
    try:
        header = TCP_HEADER.pack(
            segment.src_port, segment.dst_port, segment.seq, segment.ack,
            (header_length // 4) << 4, segment.flags, segment.window, checksum, segment.urgent,
        )
    except struct.error as error:
        raise WireError("tcp", f"header field out of range: {error}") from None
    return header + options if options else header


# Header + Timestamps + DSS packed by one struct, per DSS wire layout: the options of almost
# every segment an MPTCP sender emits (data with a mapping and a data ACK, or a pure data ACK).
_TIMESTAMPED_DSS_SHAPES: dict[object, struct.Struct] = {}
_CHECKSUM_INDEX = 7  # of the checksum field among TCP_HEADER's values


def _timestamped_dss_with_checksum(segment: TcpSegment, timestamps: Timestamps, dss: Dss,
                                   src: str, dst: str) -> tuple[bytes, int]:
    """Byte-for-byte what the general path gives for options [Timestamps, Dss], packed by one
    struct (twice: with a zero checksum to sum it, then with the checksum)."""
    layout = dss_wire_layout(dss)
    shape = _TIMESTAMPED_DSS_SHAPES.get(layout)
    if shape is None:
        options_length = 10 + layout.length
        padding = -options_length % 4
        shape = struct.Struct(TCP_HEADER.format + "BBII" + layout.shape.format.lstrip("!") + "x" * padding)
        _TIMESTAMPED_DSS_SHAPES[layout] = shape
    values = [segment.src_port, segment.dst_port, segment.seq, segment.ack, (shape.size // 4) << 4,
              segment.flags, segment.window, 0, segment.urgent,
              TCPOPT_TIMESTAMPS, 10, timestamps.tsval, timestamps.tsecr,
              *dss_wire_values(dss, layout)]
    header = shape.pack(*values)
    payload = segment.payload
    # the header is a multiple of 4 bytes: header and payload summed as one buffer stay aligned
    initial = pseudo_header_sum(src, dst, len(header) + len(payload))
    checksum = ~ones_complement_sum(header + payload, initial) & 0xFFFF
    values[_CHECKSUM_INDEX] = checksum
    return shape.pack(*values), checksum


def tcp_header_and_checksum(segment: TcpSegment, src: str, dst: str) -> tuple[bytes, int]:
    """The encoded header with its checksum filled in, and that checksum."""
    options = segment.options
    if len(options) == 2 and type(options[0]) is Timestamps and type(options[1]) is Dss:
        try:
            return _timestamped_dss_with_checksum(segment, options[0], options[1], src, dst)  # type: ignore[arg-type]
        except (struct.error, WireError):
            pass  # out-of-range field: the general path below raises the precise WireError
    header = encode_tcp_header(segment)
    payload = segment.payload
    initial = pseudo_header_sum(src, dst, len(header) + len(payload))
    # The header is a multiple of 4 bytes, so summing it and the payload apart stays aligned.
    total = ones_complement_sum(payload, ones_complement_sum(header, initial))
    checksum = ~total & 0xFFFF
    return header[:TCP_CHECKSUM_OFFSET] + _U16.pack(checksum) + header[18:], checksum


def encode_tcp(segment: TcpSegment, src: str, dst: str, *, checksum: int | None = None) -> bytes:
    """Bytes of `segment` between `src` and `dst`, with data offset and checksum filled in.

    `checksum`, when given, is written instead of the correct value (to test how receivers and
    middleboxes treat a broken checksum); `segment.checksum` is ignored either way.
    """
    if checksum is not None:
        return encode_tcp_header(segment, checksum) + segment.payload
    header, _ = tcp_header_and_checksum(segment, src, dst)
    return header + segment.payload


def verify_tcp_checksum(src: str, dst: str, tcp_bytes: bytes) -> bool:
    """True when the checksum carried in `tcp_bytes` is correct for src -> dst."""
    return ones_complement_sum(tcp_bytes, pseudo_header_sum(src, dst, len(tcp_bytes))) == 0xFFFF



def tcp_checksum_update(old_header: bytes | bytearray | memoryview, old_pseudo_sum: int,
                        new_header: bytes | bytearray | memoryview, new_pseudo_sum: int) -> int:
    """The TCP checksum of a segment whose header (and pseudo-header) changed but whose payload
    did not, from its received header `old_header` (checksum field as received) and `new_header`
    (checksum field zero), as in RFC 1624: the payload is never re-summed. Pass 0 for both pseudo
    sums when the pseudo-header is unchanged (same addresses and TCP length): it cancels.

    The payload's share is derived from the received checksum, so a segment that arrived with a
    wrong checksum leaves with one wrong by the same amount: a middlebox editing headers must not
    launder corruption. Both headers are multiples of 4 bytes, so the payload's 16-bit words
    line up the same way.
    """
    old_sum = ones_complement_sum(old_header, old_pseudo_sum)
    new_sum = ones_complement_sum(new_header, new_pseudo_sum)
    total = (new_sum + 0xFFFF - old_sum) % 0xFFFF  # 0xFFFF is one's-complement zero
    return ~(total or 0xFFFF) & 0xFFFF


def encode_tcp_header_incremental(segment: TcpSegment, src: str, dst: str, payload_length: int,
                                  old_header: bytes | bytearray | memoryview,
                                  old_pseudo_sum: int) -> bytes:
    """The encoded header of `segment`, whose payload (`payload_length` bytes) is unchanged
    since it arrived with header `old_header` and pseudo-header sum `old_pseudo_sum`; see
    `tcp_checksum_update`."""
    header = encode_tcp_header(segment)
    checksum = tcp_checksum_update(old_header, old_pseudo_sum, header,
                                   pseudo_header_sum(src, dst, len(header) + payload_length))
    return header[:TCP_CHECKSUM_OFFSET] + _U16.pack(checksum) + header[18:]
