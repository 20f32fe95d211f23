"""testbed.wire.ethernet: Ethernet II framing and ARP, byte-exact; short frames never raise."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.wire.ethernet import (
    arp_reply_frame,
    arp_request,
    ethernet_header,
    is_arp_frame,
    is_ipv4_tcp_frame,
    is_unicast_mac,
    source_mac,
    swap_mac_addresses,
)

ASKER_MAC = bytes.fromhex("020000000001")
OWNER_MAC = bytes.fromhex("020000000002")
# who-has 10.99.0.2 tell 10.99.0.1, broadcast (RFC 826 layout, Ethernet/IPv4)
ARP_REQUEST = bytes.fromhex(
    "ffffffffffff" "020000000001" "0806"
    "0001" "0800" "06" "04" "0001" "020000000001" "0a630001" "000000000000" "0a630002")
ARP_REPLY = bytes.fromhex(
    "020000000001" "020000000002" "0806"
    "0001" "0800" "06" "04" "0002" "020000000002" "0a630002" "020000000001" "0a630001")


def test_vector_arp_request_and_reply() -> None:
    assert arp_request(ARP_REQUEST) == (ASKER_MAC, bytes([10, 99, 0, 1]), bytes([10, 99, 0, 2]))
    assert arp_reply_frame(OWNER_MAC, bytes([10, 99, 0, 2]), ASKER_MAC,
                           bytes([10, 99, 0, 1])) == ARP_REPLY
    assert arp_request(ARP_REPLY) is None  # a reply is no request
    assert is_arp_frame(ARP_REQUEST) and not is_ipv4_tcp_frame(ARP_REQUEST)


def test_vector_framing() -> None:
    header = ethernet_header(OWNER_MAC, ASKER_MAC, b"\x08\x00")
    assert header == bytes.fromhex("020000000002020000000001" "0800")
    assert swap_mac_addresses(header) == bytes.fromhex("020000000001020000000002" "0800")
    assert source_mac(header) == ASKER_MAC and is_unicast_mac(ASKER_MAC)
    assert not is_unicast_mac(b"\xff" * 6) and not is_unicast_mac(b"\x02\x00")
    tcp = header + bytes.fromhex("4500002800004000400600000a0000010a000002") + bytes(20)
    assert is_ipv4_tcp_frame(tcp)
    assert not is_ipv4_tcp_frame(tcp[:23] + b"\x11" + tcp[24:])
    with pytest.raises(ValueError):
        ethernet_header(OWNER_MAC[:5], ASKER_MAC, b"\x08\x00")


@settings(max_examples=200)
@given(st.binary(max_size=60))
def test_peeks_never_raise_on_short_or_odd_frames(frame: bytes) -> None:
    arp_request(frame)
    arp_request(ARP_REQUEST[:14] + frame)
    is_arp_frame(frame)
    is_ipv4_tcp_frame(frame)
    is_unicast_mac(source_mac(frame))
