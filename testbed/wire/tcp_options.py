"""The TCP option list: a walk over at most 40 bytes that never returns a partial answer.

Plain options (RFC 9293, 7323, 2018) are decoded here; kind 30 goes to the MPTCP table in
`mptcp_options`. A malformed option raises WireError with a field such as
"tcp.option[3].length" or "tcp.option[2].mptcp.dss.length" (the index counts options from 0,
NOPs included): never an IndexError, never a None inside the list.

EOL is reported as an EndOfOptions entry and ends the walk (what follows it is padding). The
encoder pads to a multiple of 4 with zero bytes, which are EOLs, so an option list whose length
is not a multiple of 4 gains a trailing EndOfOptions on a round trip; Linux's aligned lists
(NOP, NOP, TS, DSS ...) round-trip exactly.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable

from testbed.wire.errors import WireError
from testbed.wire.mptcp_options import (
    MPTCP_DECODERS,
    MPTCP_ENCODERS,
    MPTCP_FIELD_NAMES,
    MPTCP_OPTION_CLASSES,
    decode_mptcp,
    decode_unknown_mptcp,
    mptcp_encoded_length,
)
from testbed.wire.types import (
    TCPOPT_MPTCP,
    EndOfOptions,
    MaximumSegmentSize,
    NoOperation,
    Sack,
    SackPermitted,
    TcpOption,
    Timestamps,
    UnknownOption,
    WindowScale,
)

MAX_OPTIONS_LENGTH = 40

TCPOPT_EOL = 0
TCPOPT_NOP = 1
TCPOPT_MSS = 2
TCPOPT_WINDOW_SCALE = 3
TCPOPT_SACK_PERMITTED = 4
TCPOPT_SACK = 5
TCPOPT_TIMESTAMPS = 8

_EOL = EndOfOptions()
_NOP = NoOperation()
_SACK_PERMITTED = SackPermitted()

_MSS = struct.Struct("!BBH")
_TIMESTAMPS = struct.Struct("!BBII")
_U32 = struct.Struct("!I")
_U16 = struct.Struct("!H")
_MAX_SACK_BLOCKS = 4
_NOP_NOP_TIMESTAMPS = b"\x01\x01\x08\x0a"
_TIMESTAMP_VALUES = struct.Struct("!II")


# --- decoders: (buffer, start, length) -> option; raise WireError with a field relative to the option
def _decode_mss(buf: bytes, start: int, length: int) -> TcpOption:
    if length != 4:
        raise WireError("length", f"MSS must be 4 bytes, got {length}")
    return MaximumSegmentSize(_U16.unpack_from(buf, start + 2)[0])


def _decode_window_scale(buf: bytes, start: int, length: int) -> TcpOption:
    if length != 3:
        raise WireError("length", f"window scale must be 3 bytes, got {length}")
    return WindowScale(buf[start + 2])


def _decode_sack_permitted(buf: bytes, start: int, length: int) -> TcpOption:
    if length != 2:
        raise WireError("length", f"SACK-permitted must be 2 bytes, got {length}")
    return _SACK_PERMITTED


def _decode_sack(buf: bytes, start: int, length: int) -> TcpOption:
    count, remainder = divmod(length - 2, 8)
    if remainder or not 1 <= count <= _MAX_SACK_BLOCKS:
        raise WireError("length", f"SACK must be 2 + 8n bytes with n in 1..4, got {length}")
    edges = struct.unpack_from(f"!{2 * count}I", buf, start + 2)
    return Sack(tuple(zip(edges[0::2], edges[1::2], strict=True)))


def _decode_timestamps(buf: bytes, start: int, length: int) -> TcpOption:
    if length != 10:
        raise WireError("length", f"timestamps must be 10 bytes, got {length}")
    _, _, tsval, tsecr = _TIMESTAMPS.unpack_from(buf, start)
    return Timestamps(tsval, tsecr)


def _decode_mptcp(buf: bytes, start: int, length: int) -> TcpOption:
    return decode_mptcp(buf, start, length)


_DECODERS: dict[int, Callable[[bytes, int, int], TcpOption]] = {
    TCPOPT_MSS: _decode_mss,
    TCPOPT_WINDOW_SCALE: _decode_window_scale,
    TCPOPT_SACK_PERMITTED: _decode_sack_permitted,
    TCPOPT_SACK: _decode_sack,
    TCPOPT_TIMESTAMPS: _decode_timestamps,
    TCPOPT_MPTCP: _decode_mptcp,
}


def decode_options_at(buf: bytes, start: int, end: int) -> list[TcpOption]:
    """Decode the options in `buf[start:end]` without slicing (used by the TCP decoder)."""
    if end - start > MAX_OPTIONS_LENGTH:
        raise WireError("tcp.options.length", f"at most 40 bytes, got {end - start}")
    options: list[TcpOption] = []
    append = options.append
    decoders = _DECODERS
    mptcp_decoders = MPTCP_DECODERS
    position = start
    index = 0
    if end - start >= 12 and buf[start : start + 4] == _NOP_NOP_TIMESTAMPS:
        # Fast path: Linux starts every non-SYN segment's options with NOP, NOP, timestamps.
        options += (_NOP, _NOP, Timestamps(*_TIMESTAMP_VALUES.unpack_from(buf, start + 4)))
        position += 12
        index = 3
    while position < end:
        kind = buf[position]
        if kind == TCPOPT_NOP:
            append(_NOP)
            position += 1
            index += 1
            continue
        if kind == TCPOPT_EOL:
            append(_EOL)
            break
        if position + 1 >= end:
            raise WireError(f"tcp.option[{index}].length", f"kind {kind} has no length byte")
        length = buf[position + 1]
        if length < 2:
            raise WireError(f"tcp.option[{index}].length", f"kind {kind}: {length} is below 2")
        option_end = position + length
        if option_end > end:
            raise WireError(
                f"tcp.option[{index}].length",
                f"kind {kind}: {length} runs past the end of the options",
            )
        if kind == TCPOPT_MPTCP and length > 2:
            # Straight to the subtype's decoder: MPTCP options are on every data segment.
            decoder = mptcp_decoders.get(buf[position + 2] >> 4, decode_unknown_mptcp)
        else:
            decoder = decoders.get(kind)
            if decoder is None:
                append(UnknownOption(kind, bytes(buf[position + 2 : option_end])))
                position = option_end
                index += 1
                continue
        try:
            append(decoder(buf, position, length))
        except WireError as error:
            raise WireError(f"tcp.option[{index}].{error.field}", error.message) from None
        position = option_end
        index += 1
    return options


def decode_options(raw: bytes) -> list[TcpOption]:
    """Decode a TCP option area (at most 40 bytes) into a list of option values."""
    return decode_options_at(raw, 0, len(raw))


# --- encoders: option -> bytes (kind and length included) ---------------------------------------
def _encode_sack(option: Sack) -> bytes:
    blocks = option.blocks
    if not 1 <= len(blocks) <= _MAX_SACK_BLOCKS:
        raise WireError("sack.blocks", f"1..4 blocks, got {len(blocks)}")
    edges = [edge for block in blocks for edge in block]
    if len(edges) != 2 * len(blocks):
        raise WireError("sack.blocks", "each block is a (left, right) pair")
    return struct.pack(f"!BB{len(edges)}I", TCPOPT_SACK, 2 + 8 * len(blocks), *edges)


def _encode_unknown(option: UnknownOption) -> bytes:
    if option.kind in (TCPOPT_EOL, TCPOPT_NOP):
        raise WireError("unknown.kind", "kinds 0 and 1 have no length byte; use EOL/NOP")
    if len(option.data) > MAX_OPTIONS_LENGTH - 2:
        raise WireError("unknown.data", f"too long for the option space: {len(option.data)}")
    return bytes((option.kind, 2 + len(option.data))) + bytes(option.data)


_ENCODERS: dict[type, Callable[..., bytes]] = {
    EndOfOptions: lambda _option: b"\x00",
    NoOperation: lambda _option: b"\x01",
    MaximumSegmentSize: lambda option: _MSS.pack(TCPOPT_MSS, 4, option.mss),
    WindowScale: lambda option: bytes((TCPOPT_WINDOW_SCALE, 3, option.shift)),
    SackPermitted: lambda _option: b"\x04\x02",
    Sack: _encode_sack,
    Timestamps: lambda option: _TIMESTAMPS.pack(TCPOPT_TIMESTAMPS, 10, option.tsval, option.tsecr),
    UnknownOption: _encode_unknown,
}
# MPTCP classes go straight to their codec's encoder (one call less on every data segment);
# encode_options turns a struct.error into a WireError just as encode_mptcp would.
for _mptcp_class in MPTCP_OPTION_CLASSES:
    _ENCODERS[_mptcp_class] = MPTCP_ENCODERS[_mptcp_class]

_FIXED_LENGTHS: dict[type, int] = {
    EndOfOptions: 1,
    NoOperation: 1,
    MaximumSegmentSize: 4,
    WindowScale: 3,
    SackPermitted: 2,
    Timestamps: 10,
}


def encode_options(options: Iterable[TcpOption]) -> bytes:
    """The option area for `options`, zero-padded to a multiple of 4; WireError beyond 40."""
    parts = []
    encoders = _ENCODERS
    for index, option in enumerate(options):
        cls = type(option)
        if cls is NoOperation:  # fast path: NOP runs (padding, options overwritten in place)
            parts.append(b"\x01")
            continue
        if cls is Timestamps:  # fast path: on every segment of a timestamped connection
            try:
                parts.append(_TIMESTAMPS.pack(TCPOPT_TIMESTAMPS, 10, option.tsval, option.tsecr))
                continue
            except struct.error:
                pass  # the general path below names the option in the error
        encoder = encoders.get(cls)
        if encoder is None:
            raise WireError(f"tcp.option[{index}]", f"not a TCP option: {type(option).__name__}")
        try:
            parts.append(encoder(option))
        except WireError as error:
            raise WireError(f"tcp.option[{index}].{error.field}", error.message) from None
        except (struct.error, TypeError, ValueError, OverflowError) as error:
            name = MPTCP_FIELD_NAMES.get(type(option))
            raise WireError(
                f"tcp.option[{index}].{name}" if name else f"tcp.option[{index}]",
                f"{type(option).__name__} field out of range: {error}",
            ) from None
    raw = b"".join(parts)
    padding = -len(raw) % 4
    if padding:
        raw += bytes(padding)
    if len(raw) > MAX_OPTIONS_LENGTH:
        raise WireError("tcp.options.length", f"{len(raw)} bytes exceed the 40-byte option space")
    return raw


def encoded_length(option: TcpOption) -> int:
    """Bytes one option takes on the wire, without encoding it (unpadded)."""
    fixed = _FIXED_LENGTHS.get(type(option))
    if fixed is not None:
        return fixed
    if type(option) is Sack:
        return 2 + 8 * len(option.blocks)
    if type(option) is UnknownOption:
        return 2 + len(option.data)
    return mptcp_encoded_length(option)  # type: ignore[arg-type]


def options_length(options: Iterable[TcpOption]) -> int:
    """Padded bytes a whole option list takes (what counts against the 40-byte budget)."""
    total = sum(encoded_length(option) for option in options)
    return total + (-total % 4)
