"""Addresses of either family as the stack keys its subflows by them.

A subflow is found by its four-tuple of address strings, and a decoded packet spells an
address the RFC 5952 way (testbed.wire), so every address handed to the stack is brought to
that one spelling first: "FD00:0::1" and "fd00::1" must be the same subflow. An IPv4-mapped
IPv6 address (what a dual-stack socket API shows for an IPv4 peer) is the IPv4 address it
carries: on the wire that subflow is IPv4.
"""

from __future__ import annotations

import ipaddress

IPV6_EXTRA_HEADER = 20  # an IPv6 header is 40 bytes, an IPv4 one without options 20
IPV6_MIN_MTU_MSS = 1220  # RFC 8200 minimum MTU 1280 less the IPv6 and TCP headers


def canonical_address(address: str) -> str:
    """The RFC 5952 (or dotted-quad) spelling of `address`; ValueError naming it if it is none."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"{address!r} is not an IPv4 or IPv6 address") from None
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


def is_ipv6(address: str) -> bool:
    """True for a (canonical) IPv6 address: the stack's addresses are canonical, so a colon
    tells the family without parsing (this runs per packet in the driver)."""
    return ":" in address


def same_family(first: str, second: str) -> bool:
    """Whether a subflow between these two addresses can exist (no IPv4 to IPv6 packet)."""
    return is_ipv6(first) == is_ipv6(second)
