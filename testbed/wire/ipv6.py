"""IPv6 (RFC 8200) around TCP: `decode_ipv6` walks the extension headers, `decode_packet_v6` /
`encode_packet_v6` are the IPv6 counterparts of the IPv4 pair, `decode_ip_packet` picks one.

The walk follows the header chain through hop-by-hop options (0, only right after the fixed
header), routing (43), fragment (44) and destination options (60), keeping each header's bytes
so a packet re-encodes byte-exact. It stops, with `stop_reason` saying why, where nothing after
can be read: a non-first fragment (its payload is the middle of the upper-layer data, there is
no TCP header in it), ESP (50, encrypted), AH (51, not walked) and no-next-header (59). Any
other next-header value is the upper-layer protocol; only TCP (6) makes a packet.

The TCP checksum's pseudo-header (RFC 8200 8.1) uses the final destination: the destination
field, unless a routing header still has segments left, in which case the final address is
in that header (the last address for types 0 and 2, segment list[0] for the SRH, type 4).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field
from typing import NamedTuple

from testbed.wire.checksum import ones_complement_sum, pseudo_header_sum
from testbed.wire.errors import WireError
from testbed.wire.ipv4 import decode_packet as decode_packet_v4
from testbed.wire.ipv4 import encode_packet as encode_packet_v4
from testbed.wire.tcp import (
    TCP_CHECKSUM_OFFSET,
    decode_tcp_at,
    encode_tcp_header,
    tcp_checksum_update,
    tcp_header_and_checksum,
)
from testbed.wire.types import IPPROTO_TCP, Packet, TcpSegment

IPV6_HEADER = struct.Struct("!IHBB16s16s")  # version|class|flow, payload length, next, hops
IPV6_HEADER_LENGTH = 40
IPV6_MAX_PAYLOAD_LENGTH = 0xFFFF

NEXT_HEADER_HOP_BY_HOP = 0
NEXT_HEADER_ROUTING = 43
NEXT_HEADER_FRAGMENT = 44
NEXT_HEADER_ESP = 50
NEXT_HEADER_AH = 51
NEXT_HEADER_NONE = 59
NEXT_HEADER_DESTINATION_OPTIONS = 60
EXTENSION_KINDS = frozenset({NEXT_HEADER_HOP_BY_HOP, NEXT_HEADER_ROUTING, NEXT_HEADER_FRAGMENT,
                             NEXT_HEADER_DESTINATION_OPTIONS})
FRAGMENT_HEADER_LENGTH = 8
_EXTENSION_NAMES = {NEXT_HEADER_HOP_BY_HOP: "hop_by_hop", NEXT_HEADER_ROUTING: "routing",
                    NEXT_HEADER_FRAGMENT: "fragment",
                    NEXT_HEADER_DESTINATION_OPTIONS: "destination_options"}
# Where the walk must stop, and why (the non-first fragment's reason is built with its offset).
_STOPPERS = {
    NEXT_HEADER_ESP: "ESP (50): the rest of the packet is encrypted",
    NEXT_HEADER_AH: "AH (51): authentication header, not walked",
    NEXT_HEADER_NONE: "no next header (59): nothing follows",
}
_ROUTING_TYPE_SRH = 4
_U16 = struct.Struct("!H")


class Ipv6Extension(NamedTuple):
    """One extension header as received: `kind` is the next-header value that announced it,
    `data` its whole bytes (the first byte, its own next-header field, is rewritten by the
    encoder to chain the headers)."""

    kind: int
    data: bytes

    @property
    def name(self) -> str:
        return _EXTENSION_NAMES.get(self.kind, str(self.kind))


class FragmentFields(NamedTuple):
    offset: int  # in bytes (the field counts 8-byte units)
    more_fragments: bool
    identification: int


class Ipv6Header(NamedTuple):
    """The fixed header, the extension headers walked, and where the walk ended.

    `upper_protocol` is the next-header value the walk stopped at and `upper_offset` where its
    header would begin; `stop_reason` is None when that header is really there to read.
    """

    traffic_class: int
    flow_label: int
    payload_length: int
    hop_limit: int
    src: str
    dst: str
    extensions: tuple[Ipv6Extension, ...]
    upper_protocol: int
    upper_offset: int
    stop_reason: str | None

    @property
    def end(self) -> int:
        """Offset just past the packet (bytes beyond it are link-layer padding)."""
        return IPV6_HEADER_LENGTH + self.payload_length


@dataclass(slots=True)
class Ipv6Packet:
    """An IPv6 packet carrying one whole TCP segment; `src`, `dst` and `tcp` as in Packet."""

    src: str
    dst: str
    tcp: TcpSegment
    hop_limit: int = 64
    traffic_class: int = 0
    flow_label: int = 0
    extensions: tuple[Ipv6Extension, ...] = field(default=())


def is_ipv6_text(text: object) -> bool:
    """True for an IPv6 address or network in text form ("fd00::1", "[fd00::1]", "fd00::/64"):
    for the one-line refusals of places that support IPv4 only."""
    if not isinstance(text, str):
        return False
    candidate = text.strip().removeprefix("[").split("]")[0].split("/")[0].split("%")[0]
    try:
        socket.inet_pton(socket.AF_INET6, candidate)
    except OSError:
        return False
    return True


IPV4_ONLY_REASON = "the testbed is IPv4-only so far (IPv6 is disabled in every namespace)"


def fragment_fields(extension: Ipv6Extension) -> FragmentFields:
    """Offset, M flag and identification of a fragment header."""
    if extension.kind != NEXT_HEADER_FRAGMENT or len(extension.data) != FRAGMENT_HEADER_LENGTH:
        raise WireError("ip6.fragment", "not an 8-byte fragment header")
    offset_flags = _U16.unpack_from(extension.data, 2)[0]
    return FragmentFields(offset_flags & 0xFFF8, bool(offset_flags & 1),
                          int.from_bytes(extension.data[4:8], "big"))


def _extension_length(buf: bytes | bytearray | memoryview, position: int, kind: int,
                      end: int) -> int:
    if kind == NEXT_HEADER_FRAGMENT:
        length = FRAGMENT_HEADER_LENGTH
    else:
        if position + 2 > end:
            raise WireError(f"ip6.{_EXTENSION_NAMES[kind]}.length",
                            f"header at offset {position} runs past the payload length")
        length = (buf[position + 1] + 1) * 8
    if position + length > end:
        raise WireError(f"ip6.{_EXTENSION_NAMES[kind]}.length",
                        f"{length} bytes at offset {position} run past the payload length")
    return length


def decode_ipv6(data: bytes | bytearray | memoryview) -> tuple[Ipv6Header, bytes]:
    """The IPv6 header with its extension headers walked, and the upper-layer bytes (empty
    when the walk stopped). Any upper protocol, any fragment; malformed chains raise."""
    if len(data) < IPV6_HEADER_LENGTH:
        raise WireError("ip6.length", f"an IPv6 header has 40 bytes, got {len(data)}")
    first_word, payload_length, next_header, hop_limit, src, dst = IPV6_HEADER.unpack_from(data, 0)
    if first_word >> 28 != 6:
        raise WireError("ip6.version", f"expected 6, got {first_word >> 28}")
    end = IPV6_HEADER_LENGTH + payload_length
    if end > len(data):
        raise WireError("ip6.payload_length",
                        f"{payload_length} exceeds the {len(data) - IPV6_HEADER_LENGTH} bytes received")
    if payload_length == 0 and next_header == NEXT_HEADER_HOP_BY_HOP:
        raise WireError("ip6.payload_length", "0 with a hop-by-hop header: a jumbogram "
                        "(RFC 2675), not supported")
    extensions: list[Ipv6Extension] = []
    position = IPV6_HEADER_LENGTH
    stop_reason: str | None = None
    while next_header in EXTENSION_KINDS:
        if next_header == NEXT_HEADER_HOP_BY_HOP and extensions:
            raise WireError("ip6.hop_by_hop", "only allowed right after the IPv6 header "
                            f"(found after {extensions[-1].name})")
        length = _extension_length(data, position, next_header, end)
        extension = Ipv6Extension(next_header, bytes(data[position:position + length]))
        extensions.append(extension)
        position += length
        next_header = extension.data[0]
        if extension.kind == NEXT_HEADER_FRAGMENT:
            fields = fragment_fields(extension)
            if fields.offset:
                stop_reason = (f"non-first fragment (offset {fields.offset}): no upper-layer "
                               "header in it, only the middle of its data")
                break
    if stop_reason is None:
        stop_reason = _STOPPERS.get(next_header)
    header = Ipv6Header(
        (first_word >> 20) & 0xFF, first_word & 0xFFFFF, payload_length, hop_limit,
        socket.inet_ntop(socket.AF_INET6, src), socket.inet_ntop(socket.AF_INET6, dst),
        tuple(extensions), next_header, position, stop_reason,
    )
    upper = b"" if stop_reason is not None else bytes(data[position:end])
    return header, upper


def final_destination(dst: str, extensions: tuple[Ipv6Extension, ...]) -> str:
    """The destination the TCP pseudo-header uses (RFC 8200 8.1): `dst`, or the routing
    header's final address while it has segments left."""
    for extension in extensions:
        if extension.kind != NEXT_HEADER_ROUTING or len(extension.data) < 8:
            continue
        routing_type, segments_left = extension.data[2], extension.data[3]
        addresses = (len(extension.data) - 8) // 16
        if segments_left == 0 or addresses == 0:
            continue
        index = 0 if routing_type == _ROUTING_TYPE_SRH else addresses - 1
        raw = extension.data[8 + 16 * index:24 + 16 * index]
        return socket.inet_ntop(socket.AF_INET6, raw)
    return dst


def _tcp_packet_header(data: bytes | bytearray | memoryview) -> Ipv6Header:
    header, _ = decode_ipv6(data)
    if header.stop_reason is not None:
        raise WireError("ip6.next_header", f"no TCP header: {header.stop_reason}")
    if header.upper_protocol != IPPROTO_TCP:
        raise WireError("ip6.next_header", f"not TCP: protocol {header.upper_protocol}")
    for extension in header.extensions:
        if extension.kind == NEXT_HEADER_FRAGMENT and fragment_fields(extension).more_fragments:
            raise WireError("ip6.fragment", "first fragment (M set): the TCP segment is not whole")
    return header


def decode_packet_v6(data: bytes | bytearray | memoryview) -> Ipv6Packet:
    """An IPv6+TCP packet (extension headers kept). Checksums are not verified (see
    `verify_checksums_v6`); the received TCP checksum is kept in `packet.tcp.checksum`."""
    header = _tcp_packet_header(data)
    segment = decode_tcp_at(data, header.upper_offset, header.end)
    return Ipv6Packet(header.src, header.dst, segment, header.hop_limit, header.traffic_class,
                      header.flow_label, header.extensions)


def _chained_extensions(extensions: tuple[Ipv6Extension, ...]) -> bytes:
    """The extension headers' bytes, each one's next-header field pointing at the next."""
    parts = []
    for index, extension in enumerate(extensions):
        name = f"ip6.{extension.name}"
        if extension.kind not in EXTENSION_KINDS:
            raise WireError("ip6.extensions", f"{extension.kind} is not an extension header kind")
        if extension.kind == NEXT_HEADER_HOP_BY_HOP and index:
            raise WireError(name, "only allowed right after the IPv6 header")
        data = extension.data
        expected = (FRAGMENT_HEADER_LENGTH if extension.kind == NEXT_HEADER_FRAGMENT
                    else (data[1] + 1) * 8 if len(data) >= 2 else 8)
        if len(data) != expected:
            raise WireError(f"{name}.length", f"{len(data)} bytes, its length field says {expected}")
        following = extensions[index + 1].kind if index + 1 < len(extensions) else IPPROTO_TCP
        parts.append(bytes((following,)) + data[1:])
    return b"".join(parts)


def encode_packet_v6(packet: Ipv6Packet) -> bytes:
    """The IPv6+TCP bytes of `packet`: payload length, next-header chain and TCP checksum are
    computed (whatever `packet.tcp.checksum` holds)."""
    try:
        src = socket.inet_pton(socket.AF_INET6, packet.src)
        dst = socket.inet_pton(socket.AF_INET6, packet.dst)
    except (OSError, TypeError):
        raise WireError("ip6.address", f"not IPv6 addresses: {packet.src!r} -> {packet.dst!r}") from None
    pseudo_dst = final_destination(packet.dst, packet.extensions)
    tcp_header, _ = tcp_header_and_checksum(packet.tcp, packet.src, pseudo_dst)
    extensions = _chained_extensions(packet.extensions)
    payload_length = len(extensions) + len(tcp_header) + len(packet.tcp.payload)
    if payload_length > IPV6_MAX_PAYLOAD_LENGTH:
        raise WireError("ip6.payload_length", f"{payload_length} exceeds 65535")
    if not 0 <= packet.flow_label <= 0xFFFFF:
        raise WireError("ip6.flow_label", f"must be 0..0xFFFFF, got {packet.flow_label}")
    if not 0 <= packet.traffic_class <= 0xFF:
        raise WireError("ip6.traffic_class", f"must be 0..255, got {packet.traffic_class}")
    next_header = packet.extensions[0].kind if packet.extensions else IPPROTO_TCP
    try:
        header = IPV6_HEADER.pack((6 << 28) | (packet.traffic_class << 20) | packet.flow_label,
                                  payload_length, next_header, packet.hop_limit, src, dst)
    except struct.error as error:
        raise WireError("ip6", f"header field out of range: {error}") from None
    return b"".join((header, extensions, tcp_header, packet.tcp.payload))


def encode_packet_v6_reusing_payload(packet: Ipv6Packet, original: bytes | bytearray | memoryview,
                                     offset: int = 0, *, ip_unchanged: bool = False) -> bytes:
    """`encode_packet_v6` for a packet decoded from `original[offset:]` whose TCP payload has not
    changed since: the TCP checksum is updated from the received one (RFC 1624) instead of
    re-summing the payload (a wrong received checksum stays wrong), as
    testbed.wire.ipv4.encode_packet_reusing_payload does for IPv4. With `ip_unchanged` the
    caller vouches for the IPv6 fields being as received. A packet with extension headers, then
    or now, is encoded in full (the pseudo-header may come from a routing header)."""
    if packet.extensions or original[offset + 6] != IPPROTO_TCP:
        return encode_packet_v6(packet)
    tcp_start = offset + IPV6_HEADER_LENGTH
    old_payload_length = _U16.unpack_from(original, offset + 4)[0]
    old_header = original[tcp_start:tcp_start + (original[tcp_start + 12] >> 4) * 4]
    segment = packet.tcp
    header = encode_tcp_header(segment)
    tcp_length = len(header) + len(segment.payload)
    if ip_unchanged and len(header) == len(old_header):
        checksum = tcp_checksum_update(old_header, 0, header, 0)  # same pseudo-header
        ip_header = bytes(original[offset:tcp_start])
    else:
        if (tcp_length > IPV6_MAX_PAYLOAD_LENGTH or not 0 <= packet.traffic_class <= 0xFF
                or not 0 <= packet.flow_label <= 0xFFFFF):
            return encode_packet_v6(packet)  # it names the field at fault
        old_pseudo = ones_complement_sum(original[offset + 8:tcp_start],
                                         IPPROTO_TCP + old_payload_length)
        checksum = tcp_checksum_update(old_header, old_pseudo, header,
                                       pseudo_header_sum(packet.src, packet.dst, tcp_length))
        try:
            ip_header = IPV6_HEADER.pack(
                (6 << 28) | (packet.traffic_class << 20) | packet.flow_label, tcp_length,
                IPPROTO_TCP, packet.hop_limit, socket.inet_pton(socket.AF_INET6, packet.src),
                socket.inet_pton(socket.AF_INET6, packet.dst))
        except (OSError, TypeError, struct.error):
            return encode_packet_v6(packet)  # it names the field at fault
    return b"".join((ip_header, header[:TCP_CHECKSUM_OFFSET], _U16.pack(checksum),
                     header[TCP_CHECKSUM_OFFSET + 2:], segment.payload))


def verify_checksums_v6(data: bytes | bytearray | memoryview) -> bool:
    """True when the TCP checksum of an IPv6+TCP packet is correct (IPv6 has no header
    checksum). Raises WireError if `data` is not a well-formed IPv6 packet carrying TCP."""
    header = _tcp_packet_header(data)
    tcp_length = header.end - header.upper_offset
    pseudo = pseudo_header_sum(header.src, final_destination(header.dst, header.extensions),
                               tcp_length)
    return ones_complement_sum(data[header.upper_offset:header.end], pseudo) == 0xFFFF


def decode_ip_packet(data: bytes | bytearray | memoryview) -> Packet | Ipv6Packet:
    """An IPv4 or IPv6 packet carrying TCP, by the version nibble."""
    if not data:
        raise WireError("ip.version", "empty packet")
    version = data[0] >> 4
    if version == 4:
        return decode_packet_v4(bytes(data))
    if version == 6:
        return decode_packet_v6(data)
    raise WireError("ip.version", f"expected 4 or 6, got {version}")


def encode_ip_packet(packet: Packet | Ipv6Packet) -> bytes:
    """`encode_packet` or `encode_packet_v6`, by the packet's class."""
    if type(packet) is Ipv6Packet:
        return encode_packet_v6(packet)
    return encode_packet_v4(packet)  # type: ignore[arg-type]
