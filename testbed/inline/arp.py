"""ARP answers for addresses a middlebox owns (a NAT's public address), sans-IO.

A NAT on an L2 bump rewrites client sources to its public address; the server-side neighbour
then ARPs for that address, and nobody on the link has it. The bump answers, on the leg the
request arrived on, with the MAC of the host on the *other* leg (learned from the source MACs
of frames arriving there), so that the replies are addressed to a MAC that host accepts and the
frames cross the bump unchanged at L2. Until a frame from the other side has been seen the
request is left unanswered (and forwarded as usual), which costs nothing: a NAT's public
address is only used after a client has sent something.

Which boxes own addresses is read from their optional `owned_addresses()` method (part of the
middlebox catalogue's base class, not of the Middlebox protocol).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from middleboxes.contract import Direction
from testbed.wire.ethernet import arp_reply_frame, arp_request, is_unicast_mac, source_mac


def owned_addresses(boxes: Iterable[object]) -> frozenset[str]:
    """Every address the boxes say they own, validated as IPv4."""
    addresses: set[str] = set()
    for box in boxes:
        method = getattr(box, "owned_addresses", None)
        for address in (method() if callable(method) else []):
            addresses.add(str(ipaddress.IPv4Address(address)))
    return frozenset(addresses)


class ArpResponder:
    def __init__(self, addresses: Iterable[str]) -> None:
        self._addresses = {ipaddress.IPv4Address(a).packed for a in addresses}
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
        """The ARP reply to send back the way `frame` came, or None when it is not ours."""
        request = arp_request(frame)
        if request is None:
            return None
        sender_mac, sender_ip, target_ip = request
        if target_ip not in self._addresses:
            return None
        owner_mac = self._host_mac.get(direction.reverse())
        if owner_mac is None:
            return None
        self.answered += 1
        return arp_reply_frame(owner_mac, target_ip, sender_mac, sender_ip)
