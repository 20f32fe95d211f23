"""MPTCP v1 options (TCP option kind 30, RFC 8684 section 3) as symmetric decode/encode pairs.

One table, `MPTCP_CODECS`, maps each subtype to its option class(es), its decoder, its encoder
and its length function; `decode_mptcp`, `encode_mptcp` and `encoded_length` only dispatch
through it. Each decoder takes the whole option (kind and length bytes included) as
`(buffer, start, length)` so that the TCP option walker does not have to slice.

Layouts (bytes, after kind and length; "st" is the 4-bit subtype in the high nibble):
  MP_CAPABLE   st|version, flags, [sender key 8, [receiver key 8, [data len 2, [checksum 2]]]]
  MP_JOIN      SYN 12:     st|rsv|B, address id, receiver token 4, sender nonce 4
               SYN/ACK 16: st|rsv|B, address id, truncated HMAC 8, sender nonce 4
               ACK 24:     st|rsv, rsv, HMAC 20
  DSS          st|rsv, rsv|F|m|M|a|A, [data ack 4/8], [DSN 4/8, subflow seq 4, data len 2],
               [checksum 2]
  ADD_ADDR     st|rsv|E, address id, address 4/16, [port 2], [truncated HMAC 8]
  REMOVE_ADDR  st|rsv, address id, address id ...
  MP_PRIO      st|rsv|B, [address id]
  MP_FAIL      st|rsv, rsv, DSN 8
  MP_FASTCLOSE st|rsv, rsv, receiver's key 8
  MP_TCPRST    st|U|V|W|T, reason

Decoding is lenient where Linux is (reserved bits are ignored; a DSS may carry a checksum
without a mapping) and strict where the layout is ambiguous (a length that fits no form is a
WireError naming the option). Encoding writes reserved bits as zero, so a round trip of bytes
is exact for everything Linux and RFC-conforming stacks send. MP_CAPABLE with version 0 (the
incompatible RFC 6824 protocol) decodes as UnknownMptcp, byte-exact, so a v1 stack never
mistakes it for v1.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Callable
from typing import NamedTuple

from testbed.wire.errors import WireError
from testbed.wire.types import (
    TCPOPT_MPTCP,
    AddAddr,
    Dss,
    MpCapable,
    MpFail,
    MpFastclose,
    MpJoinAck,
    MpJoinSyn,
    MpJoinSynAck,
    MpPrio,
    MptcpOption,
    MpTcpRst,
    RemoveAddr,
    UnknownMptcp,
)

MPTCP_SUBTYPE_MP_CAPABLE = 0x0
MPTCP_SUBTYPE_MP_JOIN = 0x1
MPTCP_SUBTYPE_DSS = 0x2
MPTCP_SUBTYPE_ADD_ADDR = 0x3
MPTCP_SUBTYPE_REMOVE_ADDR = 0x4
MPTCP_SUBTYPE_MP_PRIO = 0x5
MPTCP_SUBTYPE_MP_FAIL = 0x6
MPTCP_SUBTYPE_MP_FASTCLOSE = 0x7
MPTCP_SUBTYPE_MP_TCPRST = 0x8

DSS_FLAG_DATA_FIN = 0x10  # F
DSS_FLAG_DSN64 = 0x08  # m
DSS_FLAG_MAPPING = 0x04  # M
DSS_FLAG_ACK64 = 0x02  # a
DSS_FLAG_ACK = 0x01  # A

MPTCPRST_FLAG_TRANSIENT = 0x01  # T
MPTCPRST_FLAGS_OTHER = 0x0E  # U, V, W: carried in MpTcpRst.flags at their bit positions

_KIND = TCPOPT_MPTCP

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
_HEAD = struct.Struct("!BBBB")  # kind, length, subtype byte, fourth byte (flags/id/reserved)

# --- MP_CAPABLE -------------------------------------------------------------------------------
_MPC_SYN = struct.Struct("!BBBB")
_MPC_SYNACK = struct.Struct("!BBBBQ")
_MPC_ACK = struct.Struct("!BBBBQQ")
_MPC_DATA = struct.Struct("!BBBBQQH")
_MPC_DATA_CSUM = struct.Struct("!BBBBQQHH")


def _decode_mp_capable(buf: bytes, start: int, length: int) -> MptcpOption:
    subtype_version = buf[start + 2]
    version = subtype_version & 0x0F
    if version == 0:
        return UnknownMptcp(MPTCP_SUBTYPE_MP_CAPABLE, bytes(buf[start + 2 : start + length]))
    if length == 4:
        return MpCapable(version, buf[start + 3])
    if length == 12:
        _, _, _, flags, sender_key = _MPC_SYNACK.unpack_from(buf, start)
        return MpCapable(version, flags, sender_key)
    if length == 20:
        _, _, _, flags, sender_key, receiver_key = _MPC_ACK.unpack_from(buf, start)
        return MpCapable(version, flags, sender_key, receiver_key)
    if length == 22:
        _, _, _, flags, sender_key, receiver_key, data_len = _MPC_DATA.unpack_from(buf, start)
        return MpCapable(version, flags, sender_key, receiver_key, data_len)
    if length == 24:
        fields = _MPC_DATA_CSUM.unpack_from(buf, start)
        return MpCapable(version, *fields[3:])
    raise WireError("mptcp.mp_capable.length", f"must be 4, 12, 20, 22 or 24, got {length}")


def _mp_capable_length(option: MpCapable) -> int:
    if option.sender_key is None:
        if option.receiver_key is not None or option.data_len is not None:
            raise WireError("mptcp.mp_capable.sender_key", "required with receiver_key/data_len")
        if option.checksum is not None:
            raise WireError("mptcp.mp_capable.checksum", "needs both keys and data_len")
        return 4
    if option.receiver_key is None:
        if option.data_len is not None or option.checksum is not None:
            raise WireError("mptcp.mp_capable.receiver_key", "required with data_len/checksum")
        return 12
    if option.data_len is None:
        if option.checksum is not None:
            raise WireError("mptcp.mp_capable.data_len", "required with checksum")
        return 20
    return 22 if option.checksum is None else 24


def _encode_mp_capable(option: MpCapable) -> bytes:
    length = _mp_capable_length(option)
    if not 0 <= option.version <= 0x0F:
        raise WireError("mptcp.mp_capable.version", f"must be 0..15, got {option.version}")
    head = (MPTCP_SUBTYPE_MP_CAPABLE << 4) | option.version
    if length == 4:
        return _MPC_SYN.pack(_KIND, 4, head, option.flags)
    if length == 12:
        return _MPC_SYNACK.pack(_KIND, 12, head, option.flags, option.sender_key)
    if length == 20:
        return _MPC_ACK.pack(_KIND, 20, head, option.flags, option.sender_key, option.receiver_key)
    if length == 22:
        return _MPC_DATA.pack(
            _KIND, 22, head, option.flags, option.sender_key, option.receiver_key, option.data_len
        )
    return _MPC_DATA_CSUM.pack(
        _KIND, 24, head, option.flags, option.sender_key, option.receiver_key, option.data_len,
        option.checksum,
    )


# --- MP_JOIN ----------------------------------------------------------------------------------
_JOIN_SYN = struct.Struct("!BBBBII")
_JOIN_SYNACK = struct.Struct("!BBBBQI")
_JOIN_ACK = struct.Struct("!BBBB20s")
_JOIN_HEAD = MPTCP_SUBTYPE_MP_JOIN << 4


def _decode_mp_join(buf: bytes, start: int, length: int) -> MptcpOption:
    if length == 12:
        _, _, head, address_id, token, nonce = _JOIN_SYN.unpack_from(buf, start)
        return MpJoinSyn(bool(head & 0x01), address_id, token, nonce)
    if length == 16:
        _, _, head, address_id, truncated_hmac, nonce = _JOIN_SYNACK.unpack_from(buf, start)
        return MpJoinSynAck(bool(head & 0x01), address_id, truncated_hmac, nonce)
    if length == 24:
        return MpJoinAck(_JOIN_ACK.unpack_from(buf, start)[4])
    raise WireError("mptcp.mp_join.length", f"must be 12 (SYN), 16 (SYN/ACK) or 24 (ACK), got {length}")


def _mp_join_length(option: MptcpOption) -> int:
    if type(option) is MpJoinSyn:
        return 12
    if type(option) is MpJoinSynAck:
        return 16
    return 24


def _encode_mp_join(option: MptcpOption) -> bytes:
    if type(option) is MpJoinSyn:
        return _JOIN_SYN.pack(
            _KIND, 12, _JOIN_HEAD | bool(option.backup), option.address_id,
            option.receiver_token, option.sender_nonce,
        )
    if type(option) is MpJoinSynAck:
        return _JOIN_SYNACK.pack(
            _KIND, 16, _JOIN_HEAD | bool(option.backup), option.address_id,
            option.sender_truncated_hmac, option.sender_nonce,
        )
    assert type(option) is MpJoinAck
    if not isinstance(option.sender_hmac, (bytes, bytearray)) or len(option.sender_hmac) != 20:
        raise WireError("mptcp.mp_join.sender_hmac", "must be exactly 20 bytes")
    return _JOIN_ACK.pack(_KIND, 24, _JOIN_HEAD, 0, bytes(option.sender_hmac))


# --- DSS --------------------------------------------------------------------------------------
class _DssLayout(NamedTuple):
    """One wire shape of DSS: which parts are present, and the struct that packs them all."""

    flags: int  # the A/a/M/m bits as sent (F is independent of the shape)
    length: int
    has_ack: bool
    ack64: bool
    has_map: bool
    dsn64: bool
    has_checksum: bool
    shape: struct.Struct


def _build_dss_layouts() -> tuple[dict[tuple[int, int], _DssLayout], dict[tuple[int, bool], _DssLayout]]:
    """Every (flag bits, length) a receiver may see, and the canonical layout per (flags,
    checksum) for encoding. Meaningless bits (a without A, m without M) are accepted on
    decode and never sent."""
    by_wire: dict[tuple[int, int], _DssLayout] = {}
    canonical: dict[tuple[int, bool], _DssLayout] = {}
    for bits in range(16):
        has_ack = bool(bits & DSS_FLAG_ACK)
        ack64 = has_ack and bool(bits & DSS_FLAG_ACK64)
        has_map = bool(bits & DSS_FLAG_MAPPING)
        dsn64 = has_map and bool(bits & DSS_FLAG_DSN64)
        for has_checksum in (False, True):
            fmt = "!BBBB"
            if has_ack:
                fmt += "Q" if ack64 else "I"
            if has_map:
                fmt += ("Q" if dsn64 else "I") + "IH"
            if has_checksum:
                fmt += "H"
            shape = struct.Struct(fmt)
            layout = _DssLayout(
                bits, shape.size, has_ack, ack64, has_map, dsn64, has_checksum, shape
            )
            by_wire[(bits, shape.size)] = layout
            sent_bits = (
                (DSS_FLAG_ACK if has_ack else 0) | (DSS_FLAG_ACK64 if ack64 else 0)
                | (DSS_FLAG_MAPPING if has_map else 0) | (DSS_FLAG_DSN64 if dsn64 else 0)
            )
            if sent_bits == bits:
                canonical[(bits, has_checksum)] = layout
    return by_wire, canonical


_DSS_BY_WIRE, _DSS_CANONICAL = _build_dss_layouts()
_DSS_HEAD = MPTCP_SUBTYPE_DSS << 4


def _decode_dss(buf: bytes, start: int, length: int) -> Dss:
    if length < 4:  # no flags byte: reading it would read past the option
        raise WireError("mptcp.dss.length", f"{length} leaves no room for the flags byte")
    flags = buf[start + 3]
    layout = _DSS_BY_WIRE.get((flags & 0x0F, length))
    if layout is None:
        raise WireError(
            "mptcp.dss.length", f"{length} does not match flags 0x{flags & 0x1F:02x}"
        )
    values = layout.shape.unpack_from(buf, start)
    data_fin = bool(flags & DSS_FLAG_DATA_FIN)
    position = 4
    data_ack = None
    if layout.has_ack:
        data_ack = values[4]
        position = 5
    if layout.has_map:
        dsn, subflow_seq, data_len = values[position : position + 3]
        checksum = values[position + 3] if layout.has_checksum else None
        return Dss(
            data_ack, layout.ack64 or not layout.has_ack, dsn, layout.dsn64, subflow_seq,
            data_len, checksum, data_fin,
        )
    checksum = values[position] if layout.has_checksum else None
    return Dss(data_ack, layout.ack64 or not layout.has_ack, None, True, None, None, checksum, data_fin)


def _dss_layout(option: Dss) -> _DssLayout:
    bits = 0
    if option.data_ack is not None:
        bits = DSS_FLAG_ACK | (DSS_FLAG_ACK64 if option.data_ack_64 else 0)
    mapping = (option.dsn, option.subflow_seq, option.data_len)
    if option.dsn is not None:
        if None in mapping:
            raise WireError("mptcp.dss.mapping", "dsn, subflow_seq and data_len go together")
        bits |= DSS_FLAG_MAPPING | (DSS_FLAG_DSN64 if option.dsn_64 else 0)
    elif option.subflow_seq is not None or option.data_len is not None:
        raise WireError("mptcp.dss.mapping", "dsn, subflow_seq and data_len go together")
    return _DSS_CANONICAL[(bits, option.checksum is not None)]


def dss_wire_layout(option: Dss) -> _DssLayout:
    """The canonical wire shape `option` is encoded with (WireError for a half mapping):
    for encoders that pack a DSS together with other fields (testbed.wire.tcp's fast path)."""
    return _dss_layout(option)


def dss_wire_values(option: Dss, layout: _DssLayout) -> list[int]:
    """The values `layout.shape` packs for `option`, kind and length first."""
    flags = layout.flags | (DSS_FLAG_DATA_FIN if option.data_fin else 0)
    values: list[int] = [_KIND, layout.length, _DSS_HEAD, flags]
    if layout.has_ack:
        values.append(option.data_ack)  # type: ignore[arg-type]
    if layout.has_map:
        values += (option.dsn, option.subflow_seq, option.data_len)  # type: ignore[arg-type]
    if layout.has_checksum:
        values.append(option.checksum)  # type: ignore[arg-type]
    return values


def _dss_length(option: Dss) -> int:
    return _dss_layout(option).length


def _encode_dss(option: Dss) -> bytes:
    layout = _dss_layout(option)
    return layout.shape.pack(*dss_wire_values(option, layout))


# --- ADD_ADDR ---------------------------------------------------------------------------------
# length -> (address bytes, port present, HMAC present); every combination has its own length.
_ADD_ADDR_SHAPES: dict[int, tuple[int, bool, bool]] = {
    4 + address + (2 if port else 0) + (8 if hmac else 0): (address, port, hmac)
    for address in (4, 16)
    for port in (False, True)
    for hmac in (False, True)
}
_ADD_ADDR_FLAG_ECHO = 0x01


def _decode_add_addr(buf: bytes, start: int, length: int) -> AddAddr:
    shape = _ADD_ADDR_SHAPES.get(length)
    if shape is None:
        raise WireError(
            "mptcp.add_addr.length",
            f"must be one of {sorted(_ADD_ADDR_SHAPES)}, got {length}",
        )
    address_size, has_port, has_hmac = shape
    position = start + 4
    raw_address = bytes(buf[position : position + address_size])
    if address_size == 4:
        address = socket.inet_ntop(socket.AF_INET, raw_address)
    else:
        address = ipaddress.IPv6Address(raw_address).compressed
    position += address_size
    port = None
    if has_port:
        port = _U16.unpack_from(buf, position)[0]
        position += 2
    hmac = _U64.unpack_from(buf, position)[0] if has_hmac else None
    echo = bool(buf[start + 2] & _ADD_ADDR_FLAG_ECHO)
    return AddAddr(buf[start + 3], address, port, hmac, echo)


def address_to_bytes(address: str, field: str) -> bytes:
    """The 4- or 16-byte form of an IPv4 or IPv6 address string, or WireError naming `field`."""
    try:
        return ipaddress.ip_address(address).packed
    except (ValueError, TypeError) as error:
        raise WireError(field, f"not an IPv4 or IPv6 address: {address!r}") from error


def _add_addr_length(option: AddAddr) -> int:
    size = 4 if ":" not in option.address else 16
    return 4 + size + (2 if option.port is not None else 0) + (8 if option.hmac is not None else 0)


def _encode_add_addr(option: AddAddr) -> bytes:
    raw_address = address_to_bytes(option.address, "mptcp.add_addr.address")
    parts = [
        _HEAD.pack(
            _KIND,
            4 + len(raw_address) + (2 if option.port is not None else 0)
            + (8 if option.hmac is not None else 0),
            (MPTCP_SUBTYPE_ADD_ADDR << 4) | (_ADD_ADDR_FLAG_ECHO if option.echo else 0),
            option.address_id,
        ),
        raw_address,
    ]
    if option.port is not None:
        parts.append(_U16.pack(option.port))
    if option.hmac is not None:
        parts.append(_U64.pack(option.hmac))
    return b"".join(parts)


# --- REMOVE_ADDR ------------------------------------------------------------------------------
def _decode_remove_addr(buf: bytes, start: int, length: int) -> RemoveAddr:
    if length < 4:
        raise WireError("mptcp.remove_addr.length", f"needs at least one address id, got {length}")
    return RemoveAddr(tuple(buf[start + 3 : start + length]))


def _remove_addr_length(option: RemoveAddr) -> int:
    if not option.address_ids:
        raise WireError("mptcp.remove_addr.address_ids", "needs at least one address id")
    return 3 + len(option.address_ids)


def _encode_remove_addr(option: RemoveAddr) -> bytes:
    length = _remove_addr_length(option)
    try:
        ids = bytes(option.address_ids)
    except (ValueError, TypeError) as error:
        raise WireError("mptcp.remove_addr.address_ids", f"not bytes 0..255: {error}") from error
    return bytes((_KIND, length, MPTCP_SUBTYPE_REMOVE_ADDR << 4)) + ids


# --- MP_PRIO ----------------------------------------------------------------------------------
def _decode_mp_prio(buf: bytes, start: int, length: int) -> MpPrio:
    backup = bool(buf[start + 2] & 0x01)
    if length == 3:
        return MpPrio(backup)
    if length == 4:
        return MpPrio(backup, buf[start + 3])
    raise WireError("mptcp.mp_prio.length", f"must be 3 or 4, got {length}")


def _mp_prio_length(option: MpPrio) -> int:
    return 3 if option.address_id is None else 4


def _encode_mp_prio(option: MpPrio) -> bytes:
    head = (MPTCP_SUBTYPE_MP_PRIO << 4) | (0x01 if option.backup else 0)
    if option.address_id is None:
        return bytes((_KIND, 3, head))
    return _HEAD.pack(_KIND, 4, head, option.address_id)


# --- MP_FAIL and MP_FASTCLOSE (same shape: 4 bytes head, 64-bit value) --------------------------
_HEAD_U64 = struct.Struct("!BBBBQ")


def _decode_mp_fail(buf: bytes, start: int, length: int) -> MpFail:
    if length != 12:
        raise WireError("mptcp.mp_fail.length", f"must be 12, got {length}")
    return MpFail(_U64.unpack_from(buf, start + 4)[0])


def _encode_mp_fail(option: MpFail) -> bytes:
    return _HEAD_U64.pack(_KIND, 12, MPTCP_SUBTYPE_MP_FAIL << 4, 0, option.dsn)


def _decode_mp_fastclose(buf: bytes, start: int, length: int) -> MpFastclose:
    if length != 12:
        raise WireError("mptcp.mp_fastclose.length", f"must be 12, got {length}")
    return MpFastclose(_U64.unpack_from(buf, start + 4)[0])


def _encode_mp_fastclose(option: MpFastclose) -> bytes:
    return _HEAD_U64.pack(_KIND, 12, MPTCP_SUBTYPE_MP_FASTCLOSE << 4, 0, option.receiver_key)


# --- MP_TCPRST --------------------------------------------------------------------------------
def _decode_mp_tcprst(buf: bytes, start: int, length: int) -> MpTcpRst:
    if length != 4:
        raise WireError("mptcp.mp_tcprst.length", f"must be 4, got {length}")
    head = buf[start + 2]
    return MpTcpRst(buf[start + 3], bool(head & MPTCPRST_FLAG_TRANSIENT), head & MPTCPRST_FLAGS_OTHER)


def _encode_mp_tcprst(option: MpTcpRst) -> bytes:
    if option.flags & ~MPTCPRST_FLAGS_OTHER:
        raise WireError(
            "mptcp.mp_tcprst.flags", f"only bits 0x0e (U, V, W) are allowed, got 0x{option.flags:x}"
        )
    head = (MPTCP_SUBTYPE_MP_TCPRST << 4) | option.flags | (1 if option.transient else 0)
    return _HEAD.pack(_KIND, 4, head, option.reason)


# --- unknown subtypes ---------------------------------------------------------------------------
def decode_unknown_mptcp(buf: bytes, start: int, length: int) -> UnknownMptcp:
    return UnknownMptcp(buf[start + 2] >> 4, bytes(buf[start + 2 : start + length]))


def _unknown_length(option: UnknownMptcp) -> int:
    return 2 + len(option.data)


def _encode_unknown(option: UnknownMptcp) -> bytes:
    """UnknownMptcp.data is the option body after kind and length, starting with the subtype
    byte (its high nibble must equal `subtype`), so that the low nibble survives byte-exact."""
    data = option.data
    if not data or data[0] >> 4 != option.subtype:
        raise WireError(
            "mptcp.unknown.data", "must start with the subtype byte (subtype in the high nibble)"
        )
    if len(data) > 253:
        raise WireError("mptcp.unknown.data", f"too long for one option: {len(data)} bytes")
    return bytes((_KIND, 2 + len(data))) + bytes(data)


# --- the table ------------------------------------------------------------------------------------
class MptcpCodec(NamedTuple):
    """The symmetric pair (and length function) for one MPTCP subtype."""

    name: str
    classes: tuple[type, ...]
    decode: Callable[[bytes, int, int], MptcpOption]
    encode: Callable[..., bytes]
    length: Callable[..., int]


def _fixed(length: int) -> Callable[..., int]:
    return lambda _option: length


MPTCP_CODECS: dict[int, MptcpCodec] = {
    MPTCP_SUBTYPE_MP_CAPABLE: MptcpCodec(
        "mp_capable", (MpCapable,), _decode_mp_capable, _encode_mp_capable, _mp_capable_length
    ),
    MPTCP_SUBTYPE_MP_JOIN: MptcpCodec(
        "mp_join", (MpJoinSyn, MpJoinSynAck, MpJoinAck), _decode_mp_join, _encode_mp_join,
        _mp_join_length,
    ),
    MPTCP_SUBTYPE_DSS: MptcpCodec("dss", (Dss,), _decode_dss, _encode_dss, _dss_length),
    MPTCP_SUBTYPE_ADD_ADDR: MptcpCodec(
        "add_addr", (AddAddr,), _decode_add_addr, _encode_add_addr, _add_addr_length
    ),
    MPTCP_SUBTYPE_REMOVE_ADDR: MptcpCodec(
        "remove_addr", (RemoveAddr,), _decode_remove_addr, _encode_remove_addr,
        _remove_addr_length,
    ),
    MPTCP_SUBTYPE_MP_PRIO: MptcpCodec(
        "mp_prio", (MpPrio,), _decode_mp_prio, _encode_mp_prio, _mp_prio_length
    ),
    MPTCP_SUBTYPE_MP_FAIL: MptcpCodec(
        "mp_fail", (MpFail,), _decode_mp_fail, _encode_mp_fail, _fixed(12)
    ),
    MPTCP_SUBTYPE_MP_FASTCLOSE: MptcpCodec(
        "mp_fastclose", (MpFastclose,), _decode_mp_fastclose, _encode_mp_fastclose, _fixed(12)
    ),
    MPTCP_SUBTYPE_MP_TCPRST: MptcpCodec(
        "mp_tcprst", (MpTcpRst,), _decode_mp_tcprst, _encode_mp_tcprst, _fixed(4)
    ),
}
_UNKNOWN_CODEC = MptcpCodec(
    "unknown", (UnknownMptcp,), decode_unknown_mptcp, _encode_unknown, _unknown_length
)

MPTCP_DECODERS: dict[int, Callable[[bytes, int, int], MptcpOption]] = {
    subtype: codec.decode for subtype, codec in MPTCP_CODECS.items()
}
_CODEC_BY_CLASS: dict[type, MptcpCodec] = {
    cls: codec for codec in (*MPTCP_CODECS.values(), _UNKNOWN_CODEC) for cls in codec.classes
}
MPTCP_OPTION_CLASSES: tuple[type, ...] = tuple(_CODEC_BY_CLASS)
MPTCP_ENCODERS: dict[type, Callable[..., bytes]] = {
    cls: codec.encode for cls, codec in _CODEC_BY_CLASS.items()
}
MPTCP_FIELD_NAMES: dict[type, str] = {
    cls: f"mptcp.{codec.name}" for cls, codec in _CODEC_BY_CLASS.items()
}


def decode_mptcp(buf: bytes, start: int = 0, length: int | None = None) -> MptcpOption:
    """Decode the kind-30 option at `buf[start:start+length]` (kind and length bytes included).

    Raises WireError naming the field (e.g. "mptcp.dss.length"); never IndexError.
    """
    if length is None:
        if len(buf) - start < 2:
            raise WireError("mptcp.length", "option shorter than its kind and length bytes")
        length = buf[start + 1]
    if length < 3:
        raise WireError("mptcp.length", f"an MPTCP option has at least 3 bytes, got {length}")
    if start + length > len(buf):
        raise WireError("mptcp.length", f"{length} runs past the end of the buffer")
    decoder = MPTCP_DECODERS.get(buf[start + 2] >> 4, decode_unknown_mptcp)
    try:
        return decoder(buf, start, length)
    except struct.error as error:  # a decoder's length check missed a case: still a WireError
        raise WireError("mptcp.length", f"option too short: {error}") from error


def _codec_for(option: object) -> MptcpCodec:
    codec = _CODEC_BY_CLASS.get(type(option))
    if codec is None:
        raise WireError("mptcp", f"not an MPTCP option: {type(option).__name__}")
    return codec


def encode_mptcp(option: MptcpOption) -> bytes:
    """The option's bytes, kind and length included (not padded)."""
    codec = _codec_for(option)
    try:
        return codec.encode(option)
    except (struct.error, TypeError, OverflowError) as error:
        raise WireError(f"mptcp.{codec.name}", f"field out of range: {error}") from error


def mptcp_encoded_length(option: MptcpOption) -> int:
    """Bytes `encode_mptcp(option)` will produce, without encoding (for option-space budgets)."""
    return _codec_for(option).length(option)
