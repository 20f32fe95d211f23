"""Ethernet II framing and ARP (RFC 826) for the inline process: the bytes around the codec's
IPv4 packets on an L2 bump.

Frames come from AF_PACKET legs, where veth has already stripped any VLAN tag into metadata,
so the header is always 14 bytes: destination MAC, source MAC, EtherType. Peeks never raise on
a short frame: they answer False or None.
"""

from __future__ import annotations

import struct

ETHERNET_HEADER_LENGTH = 14
MAC_LENGTH = 6
ETHERTYPE_IPV4 = b"\x08\x00"
ETHERTYPE_ARP = b"\x08\x06"
ETHERTYPE_IPV6 = b"\x86\xdd"
BROADCAST_MAC = b"\xff" * MAC_LENGTH
# A header for an IPv4 packet that has no link layer of its own (an NFQUEUE packet handed to
# a frame-level fast path): zero MACs, EtherType IPv4.
PLACEHOLDER_IPV4_HEADER = bytes(2 * MAC_LENGTH) + ETHERTYPE_IPV4

_IPPROTO_TCP = 6
_ARP_ETH_IPV4 = bytes.fromhex("000108000604")  # htype 1, ptype IPv4, hlen 6, plen 4
_ARP_OPERATION = struct.Struct("!H")
_ARP_REQUEST = 1
_ARP_REPLY = 2
ARP_LENGTH = 28


def ethernet_header(destination: bytes, source: bytes, ethertype: bytes) -> bytes:
    """The 14-byte header; MACs are 6 bytes, the EtherType 2 (e.g. ETHERTYPE_IPV4)."""
    if len(destination) != MAC_LENGTH or len(source) != MAC_LENGTH or len(ethertype) != 2:
        raise ValueError("ethernet_header: MACs are 6 bytes and the EtherType 2")
    return destination + source + ethertype


def source_mac(frame: bytes) -> bytes:
    """The source MAC (shorter than 6 bytes when the frame is truncated)."""
    return frame[6:12]


def is_unicast_mac(mac: bytes) -> bool:
    """A whole MAC whose group bit is clear (not broadcast, not multicast)."""
    return len(mac) == MAC_LENGTH and not mac[0] & 1


def swap_mac_addresses(header: bytes) -> bytes:
    """The header of a frame going back the way `header`'s came: MACs swapped."""
    return header[6:12] + header[0:6] + header[12:14]


def is_arp_frame(frame: bytes) -> bool:
    return frame[12:14] == ETHERTYPE_ARP


def is_ipv4_tcp_frame(frame: bytes) -> bool:
    """Ethernet II, IPv4, protocol TCP (with room for the IPv4 header; nothing else checked)."""
    return (len(frame) >= ETHERNET_HEADER_LENGTH + 20 and frame[12:14] == ETHERTYPE_IPV4
            and frame[14] >> 4 == 4 and frame[23] == _IPPROTO_TCP)


def is_ipv6_frame(frame: bytes) -> bool:
    """Ethernet II carrying IPv6 (with room for the fixed header; nothing else checked)."""
    return (len(frame) >= ETHERNET_HEADER_LENGTH + 40 and frame[12:14] == ETHERTYPE_IPV6
            and frame[14] >> 4 == 6)


def arp_request(frame: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(sender MAC, sender IPv4, target IPv4) of an Ethernet/IPv4 ARP request, as bytes;
    None for any other frame."""
    if frame[12:14] != ETHERTYPE_ARP or len(frame) < ETHERNET_HEADER_LENGTH + ARP_LENGTH:
        return None
    arp = frame[ETHERNET_HEADER_LENGTH:ETHERNET_HEADER_LENGTH + ARP_LENGTH]
    if arp[:6] != _ARP_ETH_IPV4 or _ARP_OPERATION.unpack_from(arp, 6)[0] != _ARP_REQUEST:
        return None
    return arp[8:14], arp[14:18], arp[24:28]


def arp_reply_frame(owner_mac: bytes, owner_ip: bytes, asker_mac: bytes, asker_ip: bytes) -> bytes:
    """The frame telling `asker` that `owner_ip` is at `owner_mac`, sent to the asker's MAC."""
    reply = (_ARP_ETH_IPV4 + _ARP_OPERATION.pack(_ARP_REPLY) + owner_mac + owner_ip
             + asker_mac + asker_ip)
    return ethernet_header(asker_mac, owner_mac, ETHERTYPE_ARP) + reply
