"""ARP and neighbour-discovery answers for addresses a middlebox owns (a NAT's public
address), sans-IO.

A NAT on an L2 bump rewrites client sources to its public address; the server-side neighbour
then ARPs for that address, and nobody on the link has it. The bump answers, on the leg the
request arrived on, with the MAC of the host on the *other* leg (learned from the source MACs
of frames arriving there), so that the replies are addressed to a MAC that host accepts and the
frames cross the bump unchanged at L2. Until a frame from the other side has been seen the
request is left unanswered (and forwarded as usual), which costs nothing: a NAT's public
address is only used after a client has sent something.

IPv6 addresses are resolved by neighbour solicitation instead of ARP (testbed.inline.ndp); the
answer is built the same way, from the same learned MACs.

Which boxes own addresses is read from their optional `owned_addresses()` method (part of the
middlebox catalogue's base class, not of the Middlebox protocol).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from middleboxes.contract import Direction
from testbed.inline.ndp import neighbour_advertisement_frame, neighbour_solicitation
from testbed.wire.ethernet import (
    ETHERTYPE_IPV6,
    arp_reply_frame,
    arp_request,
    is_unicast_mac,
    source_mac,
)


def owned_addresses(boxes: Iterable[object]) -> frozenset[str]:
    """Every address the boxes say they own, validated as IPv4 or IPv6 (compressed text)."""
    addresses: set[str] = set()
    for box in boxes:
        method = getattr(box, "owned_addresses", None)
        for address in (method() if callable(method) else []):
            addresses.add(str(ipaddress.ip_address(address)))
    return frozenset(addresses)


class ArpResponder:
    """Answers ARP requests for owned IPv4 addresses and neighbour solicitations for owned
    IPv6 ones."""

    def __init__(self, addresses: Iterable[str]) -> None:
        self._addresses = {ipaddress.ip_address(a).packed for a in addresses}
        self._host_mac: dict[Direction, bytes] = {}  # source MAC of frames arriving that way
        self.answered = 0

    def __bool__(self) -> bool:
        return bool(self._addresses)

    def learn(self, frame: bytes, direction: Direction) -> None:
        """Remember the source MAC of unicast-sourced frames arriving in `direction`."""
        source = source_mac(frame)
        if is_unicast_mac(source):
            self._host_mac[direction] = source

    def answer(self, frame: bytes, direction: Direction) -> bytes | None:
        """The ARP reply or neighbour advertisement to send back the way `frame` came, or None
        when it is neither a request nor a solicitation for an owned address."""
        ipv6 = frame[12:14] == ETHERTYPE_IPV6
        request = neighbour_solicitation(frame) if ipv6 else arp_request(frame)
        if request is None:
            return None
        sender_mac, sender_ip, target_ip = request
        if target_ip not in self._addresses:
            return None
        owner_mac = self._host_mac.get(direction.reverse())
        if owner_mac is None:
            return None
        self.answered += 1
        build = neighbour_advertisement_frame if ipv6 else arp_reply_frame
        return build(owner_mac, target_ip, sender_mac, sender_ip)
