"""nptv6: RFC 6296 checksum-neutral prefix translation on codec packets (the kernel comparison
is tests/integration/ipv6_boxes/test_nptv6_kernel.py)."""

from __future__ import annotations

import ipaddress
import random

import pytest

from middleboxes.nptv6 import ones_complement_sum, prefix_adjustment, translate_address
from middleboxes.spec import MiddleboxSpecError
from testbed.wire.ipv6 import Ipv6Packet, decode_packet_v6, encode_packet_v6, verify_checksums_v6
from testbed.wire.types import ACK, SYN, AddAddr, MpCapable, MpJoinSyn, TcpSegment
from tests.unit.middleboxes.packets import DOWN, UP, build, packet

INSIDE, OUTSIDE = "fd00:10:0:1::/64", "fd00:99:0:7::/64"
CLIENT, SERVER = "fd00:10:0:1::1", "fd00:10:0:100::2"


def nptv6(inside: str = INSIDE, outside: str = OUTSIDE):
    return build("nptv6", inside_prefix=inside, outside_prefix=outside)


def v6(src: str, dst: str, options=(), flags=ACK, payload=b"") -> Ipv6Packet:
    return Ipv6Packet(src, dst, TcpSegment(40000, 5201, 1, 2, flags, 64240, list(options), payload))


def _address_sum(address: str) -> int:
    value = int(ipaddress.IPv6Address(address))
    return ones_complement_sum([(value >> (112 - 16 * i)) & 0xFFFF for i in range(8)])


@pytest.mark.parametrize(("inside", "outside"), [(INSIDE, OUTSIDE), ("fd00:10::/48", "2001:db8:5::/48"),
                                                 ("fd00:1:2::/56", "fd00:ab:cd::/56")])
def test_translation_keeps_the_address_sum_and_reverses_exactly(inside: str, outside: str) -> None:
    rng = random.Random(3)
    inner, outer = ipaddress.IPv6Network(inside), ipaddress.IPv6Network(outside)
    there, back = prefix_adjustment(inner, outer), prefix_adjustment(outer, inner)
    for _ in range(300):
        address = str(inner.network_address + rng.getrandbits(128 - inner.prefixlen))
        mapped = translate_address(address, inner, outer, there)
        assert mapped is not None and ipaddress.IPv6Address(mapped) in outer
        assert _address_sum(mapped) % 0xFFFF == _address_sum(address) % 0xFFFF
        assert translate_address(mapped, outer, inner, back) == address


def test_an_mptcp_syn_crosses_with_its_checksum_and_options_untouched() -> None:
    box = nptv6()
    syn = v6(CLIENT, SERVER, [MpCapable(version=1, flags=0x81)], flags=SYN)
    wire = encode_packet_v6(syn)
    [out] = box.process(decode_packet_v6(wire), UP, 0.0)
    assert ipaddress.IPv6Address(out.src) in ipaddress.IPv6Network(OUTSIDE)
    assert (out.dst, out.tcp.src_port, out.tcp.dst_port) == (SERVER, 40000, 5201)
    translated = encode_packet_v6(out)
    assert verify_checksums_v6(translated)
    assert translated[40:] == wire[40:]  # the whole TCP segment, checksum included, is unchanged
    [reply] = box.process(v6(SERVER, out.src, flags=SYN | ACK), DOWN, 0.0)
    assert reply.dst == CLIENT
    assert box.counters.as_dict() == {"seen": 2, "changed": 2, "dropped": 0, "injected": 0}


def test_add_addr_and_mp_join_pass_as_sent() -> None:
    """The inside address inside an ADD_ADDR is not the box's business: RFC 8684's HMAC covers it."""
    box = nptv6()
    options = [AddAddr(2, "fd00:10:0:1::1", hmac=0x1234), MpJoinSyn(False, 2, 7, 9)]
    [out] = box.process(v6(CLIENT, SERVER, options), UP, 0.0)
    assert out.tcp.options == options


def test_other_packets_pass_unchanged() -> None:
    box = nptv6()
    assert box.process(v6("fd00:10:0:2::1", SERVER), UP, 0.0)[0].src == "fd00:10:0:2::1"
    assert box.process(v6(SERVER, CLIENT), DOWN, 0.0)[0].dst == CLIENT  # not the outside prefix
    ipv4 = packet(UP)
    assert box.process(ipv4, UP, 0.0) == [ipv4]
    assert box.counters.changed == 0


def test_an_identifier_of_all_ones_is_dropped_on_a_64() -> None:
    box = nptv6()
    assert box.process(v6("fd00:10:0:1:ffff:ffff:ffff:ffff", SERVER), UP, 0.0) == []
    assert box.state_counters() == {"unmappable": 1}
    assert box.counters.dropped == 1


@pytest.mark.parametrize(("params", "message"), [
    ({"inside_prefix": "10.0.1.0/24", "outside_prefix": OUTSIDE}, "an IPv4 prefix"),
    ({"inside_prefix": "fd00:10::/40", "outside_prefix": "fd00:99::/40"}, "/48 to /64"),
    ({"inside_prefix": INSIDE, "outside_prefix": "fd00:99::/72"}, "/48 to /64"),
    ({"inside_prefix": INSIDE, "outside_prefix": "fd00:99::/48"}, "same length"),
    ({"inside_prefix": INSIDE, "outside_prefix": INSIDE}, "overlaps"),
    ({"inside_prefix": "fd00:10:0:1::1/64", "outside_prefix": OUTSIDE}, "bits set after"),
    ({"inside_prefix": "nonsense", "outside_prefix": OUTSIDE}, "expected an IPv6 prefix"),
])
def test_bad_prefixes_are_one_line_errors(params: dict, message: str) -> None:
    with pytest.raises(MiddleboxSpecError, match=message) as caught:
        build("nptv6", **params)
    assert "\n" not in str(caught.value)
