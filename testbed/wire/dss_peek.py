"""The DSS of Linux's usual option layout, read without building option objects.

Almost every segment of an MPTCP connection carries options NOP, NOP, timestamps, then one DSS
(and padding). A capture analysis reads millions of them; `timestamps_then_dss` answers for
exactly that layout, with the DSS shapes of `mptcp_options` (the same table the decoder uses),
and None for anything else, so the caller falls back to `decode_options_at`, which raises
WireError naming what is wrong. tests/unit/analyze/test_dss_peek.py checks both agree.
"""

from __future__ import annotations

from testbed.wire.mptcp_options import _DSS_BY_WIRE

_NOP_NOP_TIMESTAMPS = b"\x01\x01\x08\x0a"
_MPTCP = 30
_DSS_SUBTYPE = 2
_DATA_FIN = 0x10

# (A/a/M/m flags, length) -> (struct, index of the data ACK or -1, index of the DSN or -1,
# index of the checksum or -1, ack64, dsn64)
_SHAPES = {}
for (_flags, _length), _layout in _DSS_BY_WIRE.items():
    _position = 4
    _ack = _dsn = _checksum = -1
    if _layout.has_ack:
        _ack, _position = 4, 5
    if _layout.has_map:
        _dsn = _position
        _position += 3
    if _layout.has_checksum:
        _checksum = _position
    _SHAPES[(_flags, _length)] = (_layout.shape.unpack_from, _ack, _dsn, _checksum,
                                  _layout.ack64 or not _layout.has_ack, _layout.dsn64)

# what a segment with NOP, NOP, timestamps and no DSS gives
NO_DSS = ()


def timestamps_then_dss(buf: bytes, start: int, end: int) -> tuple | None:
    """For options buf[start:end] that are NOP, NOP, timestamps, then at most one DSS and
    NOP/EOL padding: NO_DSS, or (data_ack, data_ack_64, dsn, dsn_64, subflow_seq, data_len,
    checksum, data_fin) with None for absent parts, as `Dss` holds them. None otherwise."""
    if end - start < 12 or end > len(buf) or not buf.startswith(_NOP_NOP_TIMESTAMPS, start):
        return None
    position = start + 12
    if position == end:
        return NO_DSS
    if buf[position] != _MPTCP:
        return None if buf[position] > 1 or buf[position:end].strip(b"\x00\x01") else NO_DSS
    if end - position < 4 or buf[position + 2] >> 4 != _DSS_SUBTYPE:
        return None
    length = buf[position + 1]
    flags = buf[position + 3]
    shape = _SHAPES.get((flags & 0x0F, length))
    if shape is None or position + length > end:
        return None
    for padding in range(position + length, end):  # NOP or EOL only (Linux: two bytes)
        if buf[padding] > 1:
            return None
    unpack, ack, dsn, checksum, ack64, dsn64 = shape
    values = unpack(buf, position)
    if dsn >= 0:
        return (values[ack] if ack >= 0 else None, ack64, values[dsn], dsn64, values[dsn + 1],
                values[dsn + 2], values[checksum] if checksum >= 0 else None,
                bool(flags & _DATA_FIN))
    return (values[ack] if ack >= 0 else None, ack64, None, True, None, None,
            values[checksum] if checksum >= 0 else None, bool(flags & _DATA_FIN))
