"""IPv4 (RFC 791) around TCP: `decode_packet` / `encode_packet`, the pair everyone else uses.

Only what the testbed exchanges is accepted: IPv4 without options, carrying one whole TCP
segment. A fragment, another protocol or IP options raise WireError naming the field, so a
middlebox runtime can count such packets and forward them untouched instead of mangling them.
Bytes after the IPv4 total length (Ethernet minimum-frame padding) are ignored.
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple

from testbed.wire.checksum import ones_complement_sum, pseudo_header_sum
from testbed.wire.errors import WireError
from testbed.wire.tcp import (
    TCP_CHECKSUM_OFFSET,
    decode_tcp_at,
    encode_tcp_header,
    tcp_checksum_update,
    tcp_header_and_checksum,
)
from testbed.wire.types import IPPROTO_TCP, Packet

IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
IPV4_HEADER_LENGTH = 20
_U16 = struct.Struct("!H")
IPV4_MAX_TOTAL_LENGTH = 0xFFFF
FLAG_DONT_FRAGMENT = 0x4000
FLAG_MORE_FRAGMENTS = 0x2000
FRAGMENT_OFFSET_MASK = 0x1FFF

# Address string <-> 4 bytes, validated once (inet_aton would accept "1" as 0.0.0.1).
_ADDRESS_BYTES: dict[str, bytes] = {}
_ADDRESS_CACHE_LIMIT = 4096


class Ipv4Header(NamedTuple):
    """Every IPv4 header field, as received (for analysis; Packet keeps what TCP users need)."""

    version: int
    header_length: int
    tos: int
    total_length: int
    ident: int
    dont_fragment: bool
    more_fragments: bool
    fragment_offset: int  # in 8-byte units
    ttl: int
    protocol: int
    checksum: int
    src: str
    dst: str
    options: bytes


def ipv4_address_bytes(address: str, field: str = "ip.address") -> bytes:
    """4-byte form of a dotted-quad string; WireError naming `field` if it is not one."""
    raw = _ADDRESS_BYTES.get(address)
    if raw is not None:
        return raw
    try:
        raw = socket.inet_pton(socket.AF_INET, address)
    except (OSError, TypeError):
        raise WireError(field, f"not an IPv4 address: {address!r}") from None
    if len(_ADDRESS_BYTES) >= _ADDRESS_CACHE_LIMIT:
        _ADDRESS_BYTES.clear()
    _ADDRESS_BYTES[address] = raw
    return raw


def decode_ipv4(data: bytes) -> tuple[Ipv4Header, bytes]:
    """The IPv4 header and its payload (up to the total length). Any protocol, any fragment."""
    header = _decode_header(data)
    return header, bytes(data[header.header_length : header.total_length])


def _decode_header(data: bytes) -> Ipv4Header:
    if len(data) < IPV4_HEADER_LENGTH:
        raise WireError("ip.length", f"an IPv4 header has at least 20 bytes, got {len(data)}")
    version_ihl, tos, total_length, ident, flags_fragment, ttl, protocol, checksum, src, dst = (
        IPV4_HEADER.unpack_from(data, 0)
    )
    version = version_ihl >> 4
    if version != 4:
        raise WireError("ip.version", f"expected 4, got {version}")
    header_length = (version_ihl & 0x0F) * 4
    if header_length < IPV4_HEADER_LENGTH:
        raise WireError("ip.ihl", f"{header_length // 4} words is below the minimum 5")
    if total_length < header_length:
        raise WireError("ip.total_length", f"{total_length} is shorter than the header")
    if total_length > len(data):
        raise WireError(
            "ip.total_length", f"{total_length} exceeds the {len(data)} bytes received"
        )
    return Ipv4Header(
        version, header_length, tos, total_length, ident,
        bool(flags_fragment & FLAG_DONT_FRAGMENT), bool(flags_fragment & FLAG_MORE_FRAGMENTS),
        flags_fragment & FRAGMENT_OFFSET_MASK, ttl, protocol, checksum,
        socket.inet_ntoa(src), socket.inet_ntoa(dst),
        bytes(data[IPV4_HEADER_LENGTH:header_length]),
    )


def decode_packet(data: bytes) -> Packet:
    """An IPv4+TCP packet as a Packet. Checksums are not verified (see `verify_checksums`);
    the received TCP checksum is kept in `packet.tcp.checksum`."""
    if len(data) < IPV4_HEADER_LENGTH:
        raise WireError("ip.length", f"an IPv4 header has at least 20 bytes, got {len(data)}")
    version_ihl, tos, total_length, ident, flags_fragment, ttl, protocol, _, src, dst = (
        IPV4_HEADER.unpack_from(data, 0)
    )
    if version_ihl != 0x45:
        if version_ihl >> 4 != 4:
            raise WireError("ip.version", f"expected 4, got {version_ihl >> 4}")
        if version_ihl & 0x0F < 5:
            raise WireError("ip.ihl", f"{version_ihl & 0x0F} words is below the minimum 5")
        raise WireError("ip.options", "IPv4 options are not supported (header length > 20)")
    if protocol != IPPROTO_TCP:
        raise WireError("ip.protocol", f"not TCP: protocol {protocol}")
    if flags_fragment & (FLAG_MORE_FRAGMENTS | FRAGMENT_OFFSET_MASK):
        raise WireError("ip.fragment", "fragments are not supported (MF set or offset > 0)")
    if total_length > len(data):
        raise WireError(
            "ip.total_length", f"{total_length} exceeds the {len(data)} bytes received"
        )
    if total_length < IPV4_HEADER_LENGTH:
        raise WireError("ip.total_length", f"{total_length} is shorter than the header")
    segment = decode_tcp_at(data, IPV4_HEADER_LENGTH, total_length)
    return Packet(
        socket.inet_ntoa(src), socket.inet_ntoa(dst), segment, ttl, ident, tos,
        bool(flags_fragment & FLAG_DONT_FRAGMENT),
    )


def encode_ipv4_header(packet: Packet, payload_length: int) -> bytes:
    """The 20-byte IPv4 header for a TCP payload of `payload_length` bytes, checksum filled."""
    total_length = IPV4_HEADER_LENGTH + payload_length
    if total_length > IPV4_MAX_TOTAL_LENGTH:
        raise WireError("ip.total_length", f"{total_length} exceeds 65535")
    src = ipv4_address_bytes(packet.src, "ip.src")
    dst = ipv4_address_bytes(packet.dst, "ip.dst")
    flags = FLAG_DONT_FRAGMENT if packet.dont_fragment else 0
    try:
        header = IPV4_HEADER.pack(
            0x45, packet.tos, total_length, packet.ident, flags, packet.ttl, IPPROTO_TCP, 0,
            src, dst,
        )
    except struct.error as error:
        raise WireError("ip", f"header field out of range: {error}") from None
    checksum = ~ones_complement_sum(header) & 0xFFFF
    return header[:10] + checksum.to_bytes(2, "big") + header[12:]


def encode_headers_for_raw_socket(packet: Packet, src: bytes, dst: bytes) -> bytes:
    """The IPv4 and TCP headers of `packet` for an IP_HDRINCL socket, which always fills in
    the IPv4 total length and header checksum itself (raw(7)): those go out as zero and are
    never computed here. `src` and `dst` are the addresses' 4-byte forms (the caller caches
    them); the TCP checksum is computed. The payload is not copied: send it after these."""
    tcp_header, _ = tcp_header_and_checksum(packet.tcp, packet.src, packet.dst)
    try:
        ip_header = IPV4_HEADER.pack(
            0x45, packet.tos, 0, packet.ident, FLAG_DONT_FRAGMENT if packet.dont_fragment else 0,
            packet.ttl, IPPROTO_TCP, 0, src, dst,
        )
    except struct.error as error:
        raise WireError("ip", f"header field out of range: {error}") from None
    return ip_header + tcp_header


def encode_packet(packet: Packet) -> bytes:
    """The IPv4+TCP bytes of `packet`: total length, IP header checksum and TCP checksum are
    computed (whatever `packet.tcp.checksum` holds)."""
    tcp_header, _ = tcp_header_and_checksum(packet.tcp, packet.src, packet.dst)
    payload = packet.tcp.payload
    ip_header = encode_ipv4_header(packet, len(tcp_header) + len(payload))
    return b"".join((ip_header, tcp_header, payload))


def encode_packet_reusing_payload(packet: Packet, original: bytes | bytearray | memoryview,
                                  offset: int = 0, *, ip_unchanged: bool = False) -> bytes:
    """`encode_packet` for a packet decoded from `original[offset:]` whose TCP payload has not
    changed since (headers, options, addresses may have): the TCP checksum is updated from the
    received one (RFC 1624) instead of re-summing the payload; a wrong received checksum stays
    wrong (see `tcp_checksum_update`). The fast path of middleboxes that edit headers only.

    The caller vouches for the payload being the decoded one, and with `ip_unchanged` for the
    IPv4 fields (addresses, TTL, ident, TOS, DF) being as received: if the TCP header length did
    not change either, the received IPv4 header is reused as it is.
    """
    old_total = (original[offset + 2] << 8) | original[offset + 3]
    tcp_start = offset + IPV4_HEADER_LENGTH
    old_header_end = tcp_start + (original[tcp_start + 12] >> 4) * 4
    old_header = original[tcp_start:old_header_end]
    segment = packet.tcp
    payload = segment.payload
    header = encode_tcp_header(segment)
    tcp_length = len(header) + len(payload)
    if ip_unchanged and len(header) == len(old_header):
        checksum = tcp_checksum_update(old_header, 0, header, 0)  # same pseudo-header
        ip_header = original[offset:tcp_start]
    else:
        old_pseudo = ones_complement_sum(original[offset + 12:tcp_start],
                                         IPPROTO_TCP + old_total - IPV4_HEADER_LENGTH)
        checksum = tcp_checksum_update(old_header, old_pseudo, header,
                                       pseudo_header_sum(packet.src, packet.dst, tcp_length))
        ip_header = encode_ipv4_header(packet, tcp_length)
    return b"".join((ip_header, header[:TCP_CHECKSUM_OFFSET], _U16.pack(checksum), header[18:],
                     payload))


def verify_checksums(data: bytes) -> bool:
    """True when both the IPv4 header checksum and the TCP checksum of an IPv4+TCP packet are
    correct. Raises WireError if `data` is not a well-formed IPv4 packet carrying TCP."""
    if len(data) < IPV4_HEADER_LENGTH or data[0] != 0x45:
        header = _decode_header(data)  # raises for what is malformed; IP options are fine here
        header_length, total_length, protocol = (
            header.header_length, header.total_length, header.protocol
        )
    else:
        header_length = IPV4_HEADER_LENGTH
        total_length = int.from_bytes(data[2:4], "big")
        protocol = data[9]
        if not header_length <= total_length <= len(data):
            _decode_header(data)  # raises with the field at fault
    if protocol != IPPROTO_TCP:
        raise WireError("ip.protocol", f"not TCP: protocol {protocol}")
    if ones_complement_sum(data[:header_length]) != 0xFFFF:
        return False
    tcp_length = total_length - header_length
    # Pseudo-header straight from the address bytes: addresses + protocol + TCP length.
    pseudo = ones_complement_sum(data[12:20], IPPROTO_TCP + tcp_length)
    return ones_complement_sum(data[header_length:total_length], pseudo) == 0xFFFF
