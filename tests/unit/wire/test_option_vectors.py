"""Byte-exact vectors for every TCP and MPTCP option form, written by hand from the layouts in
RFC 8684 section 3 (MPTCP), RFC 9293 / 7323 / 2018 (TCP), and checked in both directions.

Each vector is (hex as on the wire, the option object). The hex is written field by field so
that it can be checked against the RFC figures by eye; none of it is produced by the encoder.
"""

from __future__ import annotations

import pytest

from testbed.wire import (
    AddAddr,
    Dss,
    EndOfOptions,
    MaximumSegmentSize,
    MpCapable,
    MpFail,
    MpFastclose,
    MpJoinAck,
    MpJoinSyn,
    MpJoinSynAck,
    MpPrio,
    MpTcpRst,
    NoOperation,
    RemoveAddr,
    Sack,
    SackPermitted,
    Timestamps,
    UnknownMptcp,
    UnknownOption,
    WindowScale,
    decode_mptcp,
    decode_options,
    encode_mptcp,
    encode_options,
    encoded_length,
)

KEY_A = "0102030405060708"
KEY_B = "f1e2d3c4b5a69788"
HMAC20 = "000102030405060708090a0b0c0d0e0f10111213"
V6 = "20010db8000000000000000000000001"  # 2001:db8::1

MPTCP_VECTORS: list[tuple[str, object]] = [
    # MP_CAPABLE: kind 1e, length, subtype 0 | version 1, flags (A=80 B=40 C=20 H=01), keys...
    ("1e04 01 81", MpCapable(1, 0x81)),
    ("1e04 01 01", MpCapable(1, 0x01)),
    ("1e0c 01 01" + KEY_B, MpCapable(1, 0x01, 0xF1E2D3C4B5A69788)),
    ("1e14 01 21" + KEY_A + KEY_B, MpCapable(1, 0x21, 0x0102030405060708, 0xF1E2D3C4B5A69788)),
    (
        "1e16 01 01" + KEY_A + KEY_B + "05b4",
        MpCapable(1, 0x01, 0x0102030405060708, 0xF1E2D3C4B5A69788, 1460),
    ),
    (
        "1e18 01 81" + KEY_A + KEY_B + "05b4" + "beef",
        MpCapable(1, 0x81, 0x0102030405060708, 0xF1E2D3C4B5A69788, 1460, 0xBEEF),
    ),
    # A version other than 0 is kept (Linux answers a SYN with a higher version with v1).
    ("1e04 02 01", MpCapable(2, 0x01)),
    # Version 0 (RFC 6824) is a different protocol: kept byte-exact as unknown.
    ("1e0c 00 81" + KEY_A, UnknownMptcp(0, bytes.fromhex("0081" + KEY_A))),
    # MP_JOIN SYN: subtype 1 | B, address id, receiver token, sender nonce
    ("1e0c 11 05 0a0b0c0d 11223344", MpJoinSyn(True, 5, 0x0A0B0C0D, 0x11223344)),
    ("1e0c 10 00 ffffffff 00000000", MpJoinSyn(False, 0, 0xFFFFFFFF, 0)),
    # MP_JOIN SYN/ACK: subtype 1 | B, address id, truncated HMAC (64), sender nonce
    (
        "1e10 10 02 8899aabbccddeeff 55667788",
        MpJoinSynAck(False, 2, 0x8899AABBCCDDEEFF, 0x55667788),
    ),
    ("1e10 11 ff 0000000000000001 00000001", MpJoinSynAck(True, 255, 1, 1)),
    # MP_JOIN ACK: subtype 1, reserved, 160-bit HMAC
    ("1e18 10 00" + HMAC20, MpJoinAck(bytes.fromhex(HMAC20))),
    # DSS: subtype 2, flags rsv|F|m|M|a|A, data ACK, DSN, subflow seq, data-level length, csum
    ("1e04 20 00", Dss()),
    ("1e04 20 10", Dss(data_fin=True)),
    ("1e08 20 01 00001000", Dss(data_ack=0x1000, data_ack_64=False)),
    ("1e0c 20 03 0000000100001000", Dss(data_ack=0x100001000)),
    (
        "1e0e 20 04 00000064 00000001 05b4",
        Dss(dsn=100, dsn_64=False, subflow_seq=1, data_len=1460),
    ),
    (
        "1e12 20 0c 0123456789abcdef 00000001 05b4",
        Dss(dsn=0x0123456789ABCDEF, subflow_seq=1, data_len=1460),
    ),
    (
        "1e14 20 0c 0123456789abcdef 00000001 05b4 1234",
        Dss(dsn=0x0123456789ABCDEF, subflow_seq=1, data_len=1460, checksum=0x1234),
    ),
    (
        "1e12 20 05 00000010 00000020 00000030 0040",
        Dss(data_ack=0x10, data_ack_64=False, dsn=0x20, dsn_64=False, subflow_seq=0x30,
            data_len=0x40),
    ),
    (
        "1e16 20 1d 00000010 0000000000000020 00000030 0041",
        Dss(data_ack=0x10, data_ack_64=False, dsn=0x20, subflow_seq=0x30, data_len=0x41,
            data_fin=True),
    ),
    (
        "1e16 20 07 0000000000000010 00000020 00000030 0040",
        Dss(data_ack=0x10, dsn=0x20, dsn_64=False, subflow_seq=0x30, data_len=0x40),
    ),
    # Linux's bare DATA_FIN: 64-bit ack, 64-bit DSN, subflow seq 0, length 1
    (
        "1e1a 20 1f 00000000000003e8 00000000000003e7 00000000 0001",
        Dss(data_ack=1000, dsn=999, subflow_seq=0, data_len=1, data_fin=True),
    ),
    (
        "1e1c 20 1f ffffffffffffffff fffffffffffffffe ffffffff ffff abcd",
        Dss(data_ack=2**64 - 1, dsn=2**64 - 2, subflow_seq=2**32 - 1, data_len=0xFFFF,
            checksum=0xABCD, data_fin=True),
    ),
    # Infinite mapping: data-level length 0
    (
        "1e12 20 0c 0000000000000005 00000000 0000",
        Dss(dsn=5, subflow_seq=0, data_len=0),
    ),
    # Checksum without a mapping: length says a checksum is there (Linux tolerates it).
    ("1e06 20 00 abcd", Dss(checksum=0xABCD)),
    # ADD_ADDR: subtype 3 | E, address id, address, [port], [truncated HMAC]
    ("1e08 31 01 0a000001", AddAddr(1, "10.0.0.1", echo=True)),
    ("1e0a 31 01 0a000001 1f90", AddAddr(1, "10.0.0.1", port=8080, echo=True)),
    ("1e10 30 02 c0a80101 0102030405060708", AddAddr(2, "192.168.1.1", hmac=0x0102030405060708)),
    (
        "1e12 30 02 c0a80101 0050 0102030405060708",
        AddAddr(2, "192.168.1.1", port=80, hmac=0x0102030405060708),
    ),
    ("1e14 31 03" + V6, AddAddr(3, "2001:db8::1", echo=True)),
    ("1e16 31 03" + V6 + "01bb", AddAddr(3, "2001:db8::1", port=443, echo=True)),
    ("1e1c 30 04" + V6 + "ffffffffffffffff", AddAddr(4, "2001:db8::1", hmac=2**64 - 1)),
    (
        "1e1e 30 04" + V6 + "0000 0000000000000001",
        AddAddr(4, "2001:db8::1", port=0, hmac=1),
    ),
    # REMOVE_ADDR: subtype 4, address ids
    ("1e04 40 07", RemoveAddr((7,))),
    ("1e06 40 01 02 ff", RemoveAddr((1, 2, 255))),
    # MP_PRIO: subtype 5 | B, [address id]
    ("1e03 51", MpPrio(True)),
    ("1e03 50", MpPrio(False)),
    ("1e04 51 09", MpPrio(True, 9)),
    # MP_FAIL: subtype 6, reserved, DSN
    ("1e0c 60 00 0000000000001234", MpFail(0x1234)),
    # MP_FASTCLOSE: subtype 7, reserved, receiver's key
    ("1e0c 70 00" + KEY_B, MpFastclose(0xF1E2D3C4B5A69788)),
    # MP_TCPRST: subtype 8 | U V W T, reason
    ("1e04 81 06", MpTcpRst(6, transient=True)),
    ("1e04 80 01", MpTcpRst(1)),
    ("1e04 8e 00", MpTcpRst(0, transient=False, flags=0x0E)),
    # Unknown subtype (0xf = MP_EXPERIMENTAL): kept byte-exact, subtype byte included
    ("1e05 f1 aabb", UnknownMptcp(0xF, bytes.fromhex("f1aabb"))),
    ("1e03 90", UnknownMptcp(0x9, b"\x90")),
]

# Non-canonical forms a receiver must accept; re-encoding gives the canonical bytes.
LENIENT_VECTORS: list[tuple[str, object, str]] = [
    ("1e04 20 02", Dss(), "1e04 20 00"),  # a without A: meaningless, dropped
    ("1e04 2f e0", Dss(), "1e04 20 00"),  # reserved bits ignored
    ("1e0c 1f 05 0a0b0c0d 11223344", MpJoinSyn(True, 5, 0x0A0B0C0D, 0x11223344),
     "1e0c 11 05 0a0b0c0d 11223344"),
    ("1e18 1f ff" + HMAC20, MpJoinAck(bytes.fromhex(HMAC20)), "1e18 10 00" + HMAC20),
    ("1e03 5f", MpPrio(True), "1e03 51"),
    ("1e0c 6f ff 0000000000001234", MpFail(0x1234), "1e0c 60 00 0000000000001234"),
    ("1e08 3f 01 0a000001", AddAddr(1, "10.0.0.1", echo=True), "1e08 31 01 0a000001"),
]

PLAIN_VECTORS: list[tuple[str, object]] = [
    ("00", EndOfOptions()),
    ("01", NoOperation()),
    ("0204 05b4", MaximumSegmentSize(1460)),
    ("0303 07", WindowScale(7)),
    ("0402", SackPermitted()),
    ("050a 00000001 00000005", Sack(((1, 5),))),
    (
        "0522 00000001 00000002 00000003 00000004 00000005 00000006 ffffffff 00000000",
        Sack(((1, 2), (3, 4), (5, 6), (0xFFFFFFFF, 0))),
    ),
    ("080a 12345678 9abcdef0", Timestamps(0x12345678, 0x9ABCDEF0)),
    ("fd04 1234", UnknownOption(0xFD, bytes.fromhex("1234"))),
    ("1302", UnknownOption(0x13, b"")),
]


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def _ids(vectors: list) -> list[str]:
    return [f"{type(vector[1]).__name__}-{vector[0].replace(' ', '')[:20]}" for vector in vectors]


@pytest.mark.parametrize(("wire", "option"), MPTCP_VECTORS, ids=_ids(MPTCP_VECTORS))
def test_mptcp_vector_decodes(wire: str, option: object) -> None:
    raw = _hex(wire)
    assert raw[1] == len(raw), "vector's own length byte is wrong"
    assert decode_mptcp(raw) == option
    assert decode_options(raw + bytes(-len(raw) % 4))[0] == option


@pytest.mark.parametrize(("wire", "option"), MPTCP_VECTORS, ids=_ids(MPTCP_VECTORS))
def test_mptcp_vector_encodes(wire: str, option: object) -> None:
    raw = _hex(wire)
    assert encode_mptcp(option) == raw
    assert encoded_length(option) == len(raw)
    assert encode_options([option]) == raw + bytes(-len(raw) % 4)


@pytest.mark.parametrize(("wire", "option", "canonical"), LENIENT_VECTORS)
def test_lenient_forms_decode_and_reencode_canonically(
    wire: str, option: object, canonical: str
) -> None:
    assert decode_mptcp(_hex(wire)) == option
    assert encode_mptcp(option) == _hex(canonical)


@pytest.mark.parametrize(("wire", "option"), PLAIN_VECTORS, ids=_ids(PLAIN_VECTORS))
def test_plain_option_vectors(wire: str, option: object) -> None:
    raw = _hex(wire)
    assert encoded_length(option) == len(raw)
    padded = raw + bytes(-len(raw) % 4)
    decoded = decode_options(padded)
    assert decoded[0] == option
    assert encode_options([option]) == padded


def test_every_mptcp_subtype_and_form_has_a_vector() -> None:
    """Guards the vector table itself: a new form without a vector fails here."""
    forms = {(type(option).__name__, len(_hex(wire))) for wire, option in MPTCP_VECTORS}
    expected = {
        ("MpCapable", 4), ("MpCapable", 12), ("MpCapable", 20), ("MpCapable", 22),
        ("MpCapable", 24), ("MpJoinSyn", 12), ("MpJoinSynAck", 16), ("MpJoinAck", 24),
        ("Dss", 4), ("Dss", 8), ("Dss", 12), ("Dss", 14), ("Dss", 18), ("Dss", 20), ("Dss", 22),
        ("Dss", 26), ("Dss", 28), ("AddAddr", 8), ("AddAddr", 10), ("AddAddr", 16),
        ("AddAddr", 18), ("AddAddr", 20), ("AddAddr", 22), ("AddAddr", 28), ("AddAddr", 30),
        ("RemoveAddr", 4), ("MpPrio", 3), ("MpPrio", 4), ("MpFail", 12), ("MpFastclose", 12),
        ("MpTcpRst", 4), ("UnknownMptcp", 5),
    }
    assert expected <= forms, expected - forms


def test_linux_syn_option_list() -> None:
    """The option area of a Linux MPTCP SYN: MSS, SACK-permitted, TS, NOP, WS, MP_CAPABLE."""
    raw = _hex("0204 05b4  0402  080a 0001e240 00000000  01  0303 07  1e04 0181")
    options = [
        MaximumSegmentSize(1460), SackPermitted(), Timestamps(123456, 0), NoOperation(),
        WindowScale(7), MpCapable(1, 0x81),
    ]
    assert decode_options(raw) == options
    assert encode_options(options) == raw


def test_linux_data_option_list() -> None:
    """NOP, NOP, TS, DSS with 64-bit ack and mapping: 40 bytes exactly, no padding."""
    raw = _hex(
        "01 01 080a 00000001 00000002"
        " 1e1c 200f 1111111111111111 2222222222222222 00000001 05a8 0000"
    )
    options = [
        NoOperation(), NoOperation(), Timestamps(1, 2),
        Dss(data_ack=0x1111111111111111, dsn=0x2222222222222222, subflow_seq=1,
            data_len=1448, checksum=0),
    ]
    assert len(raw) == 40
    assert decode_options(raw) == options
    assert encode_options(options) == raw


def test_eol_ends_the_list_and_padding_is_ignored() -> None:
    raw = _hex("0204 05b4 0303 07 00 ffff ffff")
    assert decode_options(raw) == [MaximumSegmentSize(1460), WindowScale(7), EndOfOptions()]


def test_unaligned_list_is_padded_with_eol() -> None:
    raw = encode_options([MaximumSegmentSize(1460), WindowScale(7)])
    assert raw == _hex("0204 05b4 0303 07 00")
    assert decode_options(raw) == [MaximumSegmentSize(1460), WindowScale(7), EndOfOptions()]
