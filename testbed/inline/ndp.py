"""IPv6 neighbour discovery (RFC 4861) frames for the bump: the IPv6 counterpart of ARP.

A box that owns an IPv6 address (an NPTv6 or NAT64 box's public side) needs the neighbours on
the link to resolve it, as a NAT44 needs ARP answered (testbed.inline.arp). Only what that takes
is here: recognising a neighbour solicitation for some target and building the solicited
neighbour advertisement with the target link-layer address option. Peeks never raise on a
short or odd frame: they answer None.
"""

from __future__ import annotations

import struct

from testbed.wire.checksum import ones_complement_sum
from testbed.wire.ethernet import ETHERNET_HEADER_LENGTH, ETHERTYPE_IPV6, ethernet_header

ICMPV6 = 58
NEIGHBOUR_SOLICITATION = 135
NEIGHBOUR_ADVERTISEMENT = 136
NDP_HOP_LIMIT = 255  # RFC 4861 7.1.1: anything else was forwarded by a router, not on-link
_IPV6_START = ETHERNET_HEADER_LENGTH
_ICMP_START = _IPV6_START + 40
_SOLICITATION_LENGTH = 24  # type, code, checksum, reserved, target
_FLAGS_SOLICITED_OVERRIDE = 0x60000000
_OPTION_TARGET_LINK_LAYER = 2
_UNSPECIFIED = bytes(16)
_IPV6_FIXED = struct.Struct("!IHBB16s16s")


def neighbour_solicitation(frame: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(sender MAC, sender IPv6, target IPv6) of a neighbour solicitation, as bytes; None for
    any other frame and for duplicate address detection (unspecified source: nobody to tell)."""
    if (len(frame) < _ICMP_START + _SOLICITATION_LENGTH or frame[12:14] != ETHERTYPE_IPV6
            or frame[_IPV6_START] >> 4 != 6 or frame[_IPV6_START + 6] != ICMPV6
            or frame[_IPV6_START + 7] != NDP_HOP_LIMIT
            or frame[_ICMP_START] != NEIGHBOUR_SOLICITATION or frame[_ICMP_START + 1] != 0):
        return None
    source = frame[_IPV6_START + 8:_IPV6_START + 24]
    if source == _UNSPECIFIED:
        return None
    return frame[6:12], source, frame[_ICMP_START + 8:_ICMP_START + 24]


def neighbour_advertisement_frame(owner_mac: bytes, owner_ip: bytes, asker_mac: bytes,
                                  asker_ip: bytes) -> bytes:
    """The solicited advertisement telling `asker` that `owner_ip` is at `owner_mac`."""
    body = bytearray(struct.pack("!BBHI", NEIGHBOUR_ADVERTISEMENT, 0, 0, _FLAGS_SOLICITED_OVERRIDE)
                     + owner_ip + bytes((_OPTION_TARGET_LINK_LAYER, 1)) + owner_mac)
    pseudo = ones_complement_sum(owner_ip + asker_ip + struct.pack("!IxxxB", len(body), ICMPV6))
    checksum = 0xFFFF - ones_complement_sum(body, pseudo)
    struct.pack_into("!H", body, 2, checksum or 0xFFFF)
    header = _IPV6_FIXED.pack(6 << 28, len(body), ICMPV6, NDP_HOP_LIMIT, owner_ip, asker_ip)
    return ethernet_header(asker_mac, owner_mac, ETHERTYPE_IPV6) + header + bytes(body)
