"""Malformed input: only WireError escapes, and it names the field at fault."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.wire import (
    ACK,
    AddAddr,
    Dss,
    MaximumSegmentSize,
    MpCapable,
    MpJoinAck,
    MpTcpRst,
    NoOperation,
    Packet,
    RemoveAddr,
    Sack,
    TcpSegment,
    Timestamps,
    UnknownMptcp,
    UnknownOption,
    WindowScale,
    WireError,
    decode_ipv4,
    decode_mptcp,
    decode_options,
    decode_packet,
    decode_tcp,
    encode_options,
    encode_packet,
    encode_tcp,
    verify_checksums,
)
from tests.unit.wire.strategies import packets


def _field_of(call, *args) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(WireError) as error:
        call(*args)
    assert error.value.field, "WireError without a field name"
    assert str(error.value).startswith(error.value.field + ": ")
    return error.value.field


@pytest.mark.parametrize(
    ("raw_hex", "field"),
    [
        ("02", "tcp.option[0].length"),  # kind without a length byte
        ("0204 05", "tcp.option[0].length"),  # runs past the end
        ("0200", "tcp.option[0].length"),  # length 0
        ("0201", "tcp.option[0].length"),  # length 1
        ("0203 05 00", "tcp.option[0].length"),  # MSS of the wrong fixed length
        ("01 0304 0700", "tcp.option[1].length"),  # window scale 4 bytes
        ("01 01 0403", "tcp.option[2].length"),  # SACK-permitted 3 bytes
        ("0502 0000", "tcp.option[0].length"),  # SACK without blocks
        ("050b 0000000100000002 00", "tcp.option[0].length"),  # SACK 2 + 9
        ("0809 0000000100000002 00", "tcp.option[0].length"),  # timestamps 9
        ("1e02 0000", "tcp.option[0].mptcp.length"),  # MPTCP without a subtype byte
        # After the NOP, NOP, timestamps fast path the index still counts from the start.
        ("0101 080a 0000000100000002 1e02 0000", "tcp.option[3].mptcp.length"),
        ("0101 080a 0000000100000002 1e0c 2000", "tcp.option[3].length"),
        ("1e05 0101 0000", "tcp.option[0].mptcp.mp_capable.length"),
        ("1e0d 0101 0000000000000000 00 00 00", "tcp.option[0].mptcp.mp_capable.length"),
        ("1e0d 1100 0000000000000000 00 00 00", "tcp.option[0].mptcp.mp_join.length"),
        ("1e08 2000 00000000", "tcp.option[0].mptcp.dss.length"),  # flags say nothing follows
        ("1e08 2003 00000000", "tcp.option[0].mptcp.dss.length"),  # 64-bit ack in 4 bytes
        ("1e0e 200c 0000000000000000 0000", "tcp.option[0].mptcp.dss.length"),  # map cut short
        ("1e09 3001 0a000001 00 000000", "tcp.option[0].mptcp.add_addr.length"),
        ("1e03 40 00", "tcp.option[0].mptcp.remove_addr.length"),
        ("1e05 51 0102 000000", "tcp.option[0].mptcp.mp_prio.length"),
        ("1e0b 60 00 00000000000000 00", "tcp.option[0].mptcp.mp_fail.length"),
        ("1e0d 70 00 0000000000000000 00 000000", "tcp.option[0].mptcp.mp_fastclose.length"),
        ("1e05 80 01 00 000000", "tcp.option[0].mptcp.mp_tcprst.length"),
    ],
)
def test_malformed_options_name_the_field(raw_hex: str, field: str) -> None:
    assert _field_of(decode_options, bytes.fromhex(raw_hex.replace(" ", ""))) == field


def test_option_area_longer_than_40_bytes() -> None:
    assert _field_of(decode_options, b"\x01" * 44) == "tcp.options.length"


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ([MaximumSegmentSize(70000)], "tcp.option[0]"),
        ([NoOperation(), Timestamps(-1, 0)], "tcp.option[1]"),
        ([WindowScale(256)], "tcp.option[0]"),
        ([Sack(())], "tcp.option[0].sack.blocks"),
        ([Sack(((1, 2),) * 5)], "tcp.option[0].sack.blocks"),
        ([UnknownOption(1, b"")], "tcp.option[0].unknown.kind"),
        ([Timestamps(1, 2)] * 4 + [MaximumSegmentSize(1)], "tcp.options.length"),
        ([Dss(dsn=1)], "tcp.option[0].mptcp.dss.mapping"),
        ([Dss(subflow_seq=1, data_len=1)], "tcp.option[0].mptcp.dss.mapping"),
        ([Dss(dsn=2**32, dsn_64=False, subflow_seq=0, data_len=0)], "tcp.option[0].mptcp.dss"),
        ([MpCapable(receiver_key=1)], "tcp.option[0].mptcp.mp_capable.sender_key"),
        ([MpCapable(sender_key=1, checksum=1)], "tcp.option[0].mptcp.mp_capable.receiver_key"),
        ([MpCapable(version=16)], "tcp.option[0].mptcp.mp_capable.version"),
        ([MpCapable(sender_key=2**64)], "tcp.option[0].mptcp.mp_capable"),
        ([MpJoinAck(b"short")], "tcp.option[0].mptcp.mp_join.sender_hmac"),
        ([AddAddr(1, "10.0.0.256")], "tcp.option[0].mptcp.add_addr.address"),
        ([AddAddr(256, "10.0.0.1")], "tcp.option[0].mptcp.add_addr"),
        ([RemoveAddr(())], "tcp.option[0].mptcp.remove_addr.address_ids"),
        ([RemoveAddr((300,))], "tcp.option[0].mptcp.remove_addr.address_ids"),
        ([MpTcpRst(1, flags=0x01)], "tcp.option[0].mptcp.mp_tcprst.flags"),
        ([UnknownMptcp(9, b"\x10")], "tcp.option[0].mptcp.unknown.data"),
        ([UnknownMptcp(9, b"")], "tcp.option[0].mptcp.unknown.data"),
        (["not an option"], "tcp.option[0]"),
    ],
)
def test_unencodable_options_name_the_field(options: list, field: str) -> None:
    assert _field_of(encode_options, options) == field


def _data_packet() -> Packet:
    return Packet(
        "10.1.0.1", "10.2.0.1",
        TcpSegment(
            40000, 5201, 1000, 2000, ACK, 500,
            [NoOperation(), NoOperation(), Timestamps(7, 8),
             Dss(data_ack=5, dsn=9, subflow_seq=1, data_len=100, checksum=0x1234)],
            bytes(range(100)),
        ),
    )


def test_every_prefix_of_a_packet_is_rejected_with_a_field() -> None:
    raw = encode_packet(_data_packet())
    for cut in range(len(raw)):
        field = _field_of(decode_packet, raw[:cut])
        assert field in ("ip.length", "ip.total_length"), (cut, field)


def test_every_prefix_of_a_segment_header_is_rejected_with_a_field() -> None:
    raw = encode_tcp(_data_packet().tcp, "10.1.0.1", "10.2.0.1")
    header_length = (raw[12] >> 4) * 4
    for cut in range(header_length):
        field = _field_of(decode_tcp, raw[:cut])
        assert field in ("tcp.length", "tcp.data_offset"), (cut, field)
    for cut in range(header_length, len(raw) + 1):
        assert decode_tcp(raw[:cut]).payload == raw[header_length:cut]


def test_every_prefix_of_an_option_area() -> None:
    raw = encode_options(_data_packet().tcp.options)
    for cut in range(len(raw) + 1):
        try:
            decode_options(raw[:cut])
        except WireError as error:
            assert error.field.startswith("tcp.option["), error.field


def test_ip_header_fields() -> None:
    raw = bytearray(encode_packet(_data_packet()))
    cases = {
        "ip.version": lambda b: b.__setitem__(0, 0x65),
        "ip.ihl": lambda b: b.__setitem__(0, 0x44),
        "ip.options": lambda b: b.__setitem__(0, 0x46),
        "ip.protocol": lambda b: b.__setitem__(9, 17),
        "ip.fragment": lambda b: b.__setitem__(6, 0x20),  # MF
        "ip.total_length": lambda b: b.__setitem__(slice(2, 4), (10).to_bytes(2, "big")),
    }
    for field, mutate in cases.items():
        broken = bytearray(raw)
        mutate(broken)
        assert _field_of(decode_packet, bytes(broken)) == field
    fragment = bytearray(raw)
    fragment[7] = 0x01  # offset 1
    assert _field_of(decode_packet, bytes(fragment)) == "ip.fragment"


def test_tcp_data_offset_fields() -> None:
    raw = bytearray(encode_packet(_data_packet()))
    small = bytearray(raw)
    small[32] = 0x40  # data offset 4 words
    assert _field_of(decode_packet, bytes(small)) == "tcp.data_offset"
    short = bytearray(raw[:60])
    short[2:4] = (60).to_bytes(2, "big")
    short[32] = 0xF0  # 60-byte header in a 40-byte segment
    assert _field_of(decode_packet, bytes(short)) == "tcp.data_offset"


def test_encode_packet_rejects_bad_values() -> None:
    packet = _data_packet()
    packet.src = "2001:db8::1"
    packet.dst = "2001:db8::2"
    assert _field_of(encode_packet, packet) == "ip.src"
    packet = _data_packet()
    packet.dst = "10.0.0"
    assert _field_of(encode_packet, packet) == "ip.dst"
    packet = _data_packet()
    packet.ttl = 256
    assert _field_of(encode_packet, packet) == "ip"
    packet = _data_packet()
    packet.tcp.seq = 2**32
    assert _field_of(encode_packet, packet) == "tcp"
    packet = _data_packet()
    packet.tcp.payload = bytes(70000)
    assert _field_of(encode_packet, packet) == "ip.total_length"


def test_verify_checksums_detects_corruption() -> None:
    raw = encode_packet(_data_packet())
    assert verify_checksums(raw)
    for position in (5, 15, 25, 45, len(raw) - 1):  # IP header, addresses, TCP, options, data
        broken = bytearray(raw)
        broken[position] ^= 0x40
        assert not verify_checksums(bytes(broken)), position
    udp = bytearray(raw)
    udp[9] = 17
    assert _field_of(verify_checksums, bytes(udp)) == "ip.protocol"


def test_decode_ipv4_accepts_any_protocol() -> None:
    raw = bytearray(encode_packet(_data_packet()))
    raw[9] = 17
    header, payload = decode_ipv4(bytes(raw))
    assert header.protocol == 17 and header.src == "10.1.0.1" and len(payload) == len(raw) - 20


@settings(max_examples=500)
@given(st.binary(max_size=120))
def test_random_bytes_only_raise_wire_error(raw: bytes) -> None:
    for decoder in (decode_packet, decode_tcp, decode_options, decode_mptcp, decode_ipv4):
        with contextlib.suppress(WireError):
            decoder(raw)


@settings(max_examples=300)
@given(packets, st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6))
def test_mutated_packets_only_raise_wire_error(packet: Packet, edits: list) -> None:
    raw = bytearray(encode_packet(packet))
    header_end = 20 + (raw[32] >> 4) * 4
    for position, value in edits:
        raw[position % header_end] = value  # mutate headers and options, where parsing happens
    try:
        decoded = decode_packet(bytes(raw))
    except WireError:
        return
    encode_packet(decoded)  # whatever decodes must encode again


@settings(max_examples=300)
@given(st.lists(st.integers(0, 255), max_size=40))
def test_option_bytes_with_valid_kinds_only_raise_wire_error(values: list) -> None:
    raw = bytes(values)
    try:
        decode_options(raw)
    except WireError as error:
        assert error.field.startswith("tcp.option")
