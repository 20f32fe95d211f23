"""IPv6 packets Linux put on the wire (tests/unit/wire/vectors/ipv6_linux.json, recorded by
scripts/capture_ipv6_vectors.py): each decodes, re-encodes to the same bytes, carries a TCP
checksum our IPv6 pseudo-header reproduces, and the MPTCP values in them (ADD_ADDR HMAC over a
16-byte address, with and without port; join token; DSS checksum) are what our crypto computes
from the keys of the same connection's MP_CAPABLE handshake.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from testbed.wire import (
    AddAddr,
    Dss,
    MpCapable,
    MpJoinSyn,
    RemoveAddr,
    WireError,
    add_addr_hmac,
    checksum_adjust,
    decode_packet,
    dss_checksum,
    key_to_token,
    tcp_checksum,
)
from testbed.wire.ipv6 import (
    NEXT_HEADER_DESTINATION_OPTIONS,
    NEXT_HEADER_FRAGMENT,
    NEXT_HEADER_HOP_BY_HOP,
    NEXT_HEADER_ROUTING,
    Ipv6Packet,
    decode_ip_packet,
    decode_ipv6,
    decode_packet_v6,
    encode_packet_v6,
    fragment_fields,
    verify_checksums_v6,
)
from testbed.wire.peek import keep_ipv4_tcp_to, plain_tcp_frame, pure_ack_number

FIXTURE = json.loads((Path(__file__).parent / "vectors" / "ipv6_linux.json").read_text())
VECTORS = {vector["name"]: bytes.fromhex(vector["hex"]) for vector in FIXTURE["vectors"]}
TCP_VECTORS = sorted(name for name in VECTORS if not name.startswith("fragment"))
ICMPV6 = 58


def _packet(name: str) -> Ipv6Packet:
    return decode_packet_v6(VECTORS[name])


def _option(name: str, option_type: type) -> object:
    option = _packet(name).tcp.find(option_type)
    assert option is not None, f"{name} has no {option_type.__name__}"
    return option


def _keys() -> tuple[int, int]:
    """(client key, server key) from the MP_CAPABLE third ACK, which carries both."""
    ack = _option("mp_capable_ack", MpCapable)
    assert isinstance(ack, MpCapable) and ack.receiver_key is not None
    synack = _option("mp_capable_synack", MpCapable)
    assert isinstance(synack, MpCapable)
    assert synack.sender_key == ack.receiver_key  # the server's key, as it sent it
    return ack.sender_key, ack.receiver_key  # type: ignore[return-value]


def test_fixture_has_every_vector() -> None:
    assert set(VECTORS) >= {
        "mp_capable_syn", "mp_capable_synack", "mp_capable_ack", "add_addr_v6",
        "add_addr_v6_port", "add_addr_v6_echo", "remove_addr", "dss_checksum", "mp_join_syn",
        "hop_by_hop_syn", "destination_options_syn", "routing_syn", "fragment_first",
        "fragment_non_first",
    }


@pytest.mark.parametrize("name", TCP_VECTORS)
def test_linux_packet_reencodes_byte_exact(name: str) -> None:
    raw = VECTORS[name]
    packet = decode_packet_v6(raw)
    assert encode_packet_v6(packet) == raw
    assert decode_ip_packet(raw) == packet


@pytest.mark.parametrize("name", TCP_VECTORS)
def test_linux_tcp_checksum_matches_our_ipv6_pseudo_header(name: str) -> None:
    raw = VECTORS[name]
    assert verify_checksums_v6(raw)
    header, tcp_bytes = decode_ipv6(raw)
    # the generic function, given the IPv6 addresses, gives 0 over a segment with its checksum
    assert tcp_checksum(header.src, header.dst, tcp_bytes) == 0
    damaged = bytearray(raw)
    damaged[-1] ^= 0x01
    assert not verify_checksums_v6(bytes(damaged))
    # the IPv4 form of the pseudo-header (same words, other addresses) does not fit
    assert tcp_checksum("10.0.0.1", "10.0.0.2", tcp_bytes) != 0


def test_mp_capable_keys_and_checksum_flag() -> None:
    syn = _option("mp_capable_syn", MpCapable)
    assert isinstance(syn, MpCapable) and syn.version == 1 and syn.flags & 0x80  # checksums on
    client_key, server_key = _keys()
    assert client_key != server_key


def test_add_addr_ipv6_hmac_without_port() -> None:
    client_key, server_key = _keys()
    option = _option("add_addr_v6", AddAddr)
    assert isinstance(option, AddAddr)
    assert option.address == FIXTURE["addresses"]["server"][1] and option.port is None
    assert option.hmac == add_addr_hmac(server_key, client_key, option.address_id,
                                        option.address, None)
    # keys in the other order (the receiver's first) give another value: the check can fail
    assert option.hmac != add_addr_hmac(client_key, server_key, option.address_id,
                                        option.address, None)


def test_add_addr_ipv6_hmac_with_port() -> None:
    client_key, server_key = _keys()
    option = _option("add_addr_v6_port", AddAddr)
    assert isinstance(option, AddAddr)
    assert option.address == FIXTURE["addresses"]["server"][2] and option.port == 10100
    assert option.hmac == add_addr_hmac(server_key, client_key, option.address_id,
                                        option.address, option.port)
    assert option.hmac != add_addr_hmac(server_key, client_key, option.address_id,
                                        option.address, None)


def test_add_addr_ipv6_option_lengths() -> None:
    """ADD_ADDR with an IPv6 address: 28 bytes with HMAC, 30 with port and HMAC (Linux sent the
    latter with two NOPs after it), 20 for the echo (no HMAC)."""
    raw_lengths = {}
    for name in ("add_addr_v6", "add_addr_v6_port", "add_addr_v6_echo"):
        _, tcp_bytes = decode_ipv6(VECTORS[name])
        options = tcp_bytes[20:(tcp_bytes[12] >> 4) * 4]
        start = options.index(bytes((30,)))  # kind 30: the first MPTCP option
        while options[start + 2] >> 4 != 3:
            start += options[start + 1]
        raw_lengths[name] = options[start + 1]
    assert raw_lengths == {"add_addr_v6": 28, "add_addr_v6_port": 30, "add_addr_v6_echo": 20}
    echo = _option("add_addr_v6_echo", AddAddr)
    assert isinstance(echo, AddAddr) and echo.echo and echo.hmac is None


def test_mp_join_token_over_ipv6() -> None:
    _, server_key = _keys()
    join = _option("mp_join_syn", MpJoinSyn)
    assert isinstance(join, MpJoinSyn) and join.receiver_token == key_to_token(server_key)
    assert _packet("mp_join_syn").src == FIXTURE["addresses"]["client"][1]


def test_dss_checksum_does_not_depend_on_the_ip_family() -> None:
    """RFC 8684 3.3.1: the DSS checksum's pseudo-header is data-level (DSN, subflow sequence,
    length), so the same function that matches Linux over IPv4 matches it over IPv6."""
    packet = _packet("dss_checksum")
    dss = packet.tcp.find(Dss)
    assert isinstance(dss, Dss) and dss.checksum is not None
    assert dss.data_len == len(packet.tcp.payload)
    assert dss.checksum == dss_checksum(dss.dsn, dss.subflow_seq, dss.data_len,  # type: ignore[arg-type]
                                        packet.tcp.payload)
    assert dss.checksum != dss_checksum(dss.dsn, dss.subflow_seq, dss.data_len,  # type: ignore[arg-type]
                                        packet.tcp.payload[:-1] + b"\x00")


def test_remove_addr_unchanged() -> None:
    option = _option("remove_addr", RemoveAddr)
    assert option == RemoveAddr((2,))


@pytest.mark.parametrize(("name", "kind"), [
    ("hop_by_hop_syn", NEXT_HEADER_HOP_BY_HOP),
    ("destination_options_syn", NEXT_HEADER_DESTINATION_OPTIONS),
    ("routing_syn", NEXT_HEADER_ROUTING),
])
def test_linux_extension_header_is_walked(name: str, kind: int) -> None:
    raw = VECTORS[name]
    header, tcp_bytes = decode_ipv6(raw)
    assert raw[6] == kind  # the fixed header's next header announces the extension
    assert [extension.kind for extension in header.extensions] == [kind]
    assert header.extensions[0].data[0] == 6  # which announces TCP
    assert header.stop_reason is None and header.upper_protocol == 6
    assert header.upper_offset == 40 + len(header.extensions[0].data)
    packet = decode_packet_v6(raw)
    assert packet.tcp.dst_port == 5202 and packet.tcp.flags & 0x02
    assert len(tcp_bytes) == (tcp_bytes[12] >> 4) * 4  # a SYN: header only


def test_linux_routing_header_is_a_segment_routing_header_with_no_segments_left() -> None:
    extension = decode_ipv6(VECTORS["routing_syn"])[0].extensions[0]
    assert extension.data[2] == 4 and extension.data[3] == 0  # type 4 (SRH), segments left 0


def test_linux_first_fragment_is_walked_to_its_upper_header() -> None:
    header, upper = decode_ipv6(VECTORS["fragment_first"])
    fields = fragment_fields(header.extensions[0])
    assert header.extensions[0].kind == NEXT_HEADER_FRAGMENT
    assert fields.offset == 0 and fields.more_fragments
    assert header.stop_reason is None and header.upper_protocol == ICMPV6
    assert upper[0] == 128  # ICMPv6 echo request
    with pytest.raises(WireError, match="not TCP"):
        decode_packet_v6(VECTORS["fragment_first"])


def test_linux_non_first_fragment_has_no_upper_header() -> None:
    header, upper = decode_ipv6(VECTORS["fragment_non_first"])
    fields = fragment_fields(header.extensions[0])
    assert fields.offset > 0 and not fields.more_fragments
    assert fields.identification == fragment_fields(
        decode_ipv6(VECTORS["fragment_first"])[0].extensions[0]).identification
    assert upper == b"" and header.stop_reason is not None
    assert "non-first fragment" in header.stop_reason
    with pytest.raises(WireError, match="no TCP header") as error:
        decode_packet_v6(VECTORS["fragment_non_first"])
    assert error.value.field == "ip6.next_header"


@pytest.mark.parametrize("name", TCP_VECTORS)
def test_ipv4_fast_path_peeks_leave_ipv6_to_the_decoder(name: str) -> None:
    """The IPv4-only peeks answer "not the simple case" for an IPv6 packet (never misread it),
    so their callers fall back to the decoder."""
    raw = VECTORS[name]
    frame = bytes(12) + b"\x86\xdd" + raw
    assert pure_ack_number(raw) is None
    assert plain_tcp_frame(frame) is None
    assert keep_ipv4_tcp_to([raw], {raw[8:24], raw[24:40]}, range(65536)) == []
    with pytest.raises(WireError, match="expected 4"):
        decode_packet(raw)


def test_incremental_checksum_update_over_an_ipv6_address() -> None:
    """RFC 1624 over 16 bytes: rewriting a source address (as an NPTv6 box would) and adjusting
    Linux's checksum gives the checksum a full recomputation gives."""
    packet = _packet("dss_checksum")
    new_source = "fd00:99:2::1"
    old_raw = VECTORS["dss_checksum"]
    _, tcp_bytes = decode_ipv6(old_raw)
    received = int.from_bytes(tcp_bytes[16:18], "big")
    adjusted = checksum_adjust(received, socket.inet_pton(socket.AF_INET6, packet.src),
                               socket.inet_pton(socket.AF_INET6, new_source))
    packet.src = new_source
    rewritten = encode_packet_v6(packet)
    assert int.from_bytes(decode_ipv6(rewritten)[1][16:18], "big") == adjusted
    assert verify_checksums_v6(rewritten)
