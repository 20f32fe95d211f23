"""Random IPv4 and IPv6 packets through nptv6 and nat64, both directions: the boxes never raise,
and whatever they emit encodes with a valid checksum and decodes back to the same header."""

from __future__ import annotations

import ipaddress
import random

import pytest

from middleboxes.contract import Direction
from testbed.wire import decode_packet, encode_packet, verify_checksums
from testbed.wire.ipv6 import (
    Ipv6Extension,
    Ipv6Packet,
    decode_packet_v6,
    encode_packet_v6,
    verify_checksums_v6,
)
from testbed.wire.types import AddAddr, Dss, MpCapable, MpJoinSyn, Packet, TcpSegment
from tests.unit.middleboxes.packets import build

PREFIXES = ["fd00:10::/48", "fd00:99::/48", "64:ff9b::/96", "fd00:10:0:1::/64", "::/0"]
V4 = ["10.0.1.100", "10.0.100.2", "192.0.2.1"]


def _address(rng: random.Random, version: int) -> str:
    if version == 4:
        return rng.choice(V4) if rng.random() < 0.7 else str(ipaddress.IPv4Address(rng.getrandbits(32)))
    network = ipaddress.IPv6Network(rng.choice(PREFIXES))
    host = rng.choice([0, 1, (1 << (128 - network.prefixlen)) - 1, rng.getrandbits(128 - network.prefixlen)])
    return str(network.network_address + host)


def _segment(rng: random.Random) -> TcpSegment:
    options = rng.sample([MpCapable(version=1, flags=0x81), Dss(data_ack=7, data_ack_64=False),
                          AddAddr(1, "10.0.0.1", hmac=3), AddAddr(2, "fd00::2", hmac=4),
                          MpJoinSyn(False, 1, 2, 3)], rng.randint(0, 1))
    return TcpSegment(rng.randint(1, 65535), rng.randint(1, 65535), rng.getrandbits(32),
                      rng.getrandbits(32), rng.getrandbits(8), rng.getrandbits(16), options,
                      rng.randbytes(rng.randint(0, 40)))


def _packet(rng: random.Random) -> Packet | Ipv6Packet:
    if rng.random() < 0.3:
        return Packet(_address(rng, 4), _address(rng, 4), _segment(rng), ttl=rng.randint(0, 255))
    extensions = rng.choice([(), (Ipv6Extension(60, bytes((6, 0, 1, 4, 0, 0, 0, 0))),),
                             (Ipv6Extension(43, bytes((6, 2, 0, rng.randint(0, 1), 0, 0, 0, 0))
                                            + bytes(16)),)])
    return Ipv6Packet(_address(rng, 6), _address(rng, 6), _segment(rng), hop_limit=rng.randint(0, 255),
                      traffic_class=rng.getrandbits(8), flow_label=rng.getrandbits(20),
                      extensions=extensions)


@pytest.mark.parametrize(("name", "params"), [
    ("nptv6", {"inside_prefix": "fd00:10::/48", "outside_prefix": "fd00:99::/48"}),
    ("nptv6", {"inside_prefix": "fd00:10:0:1::/64", "outside_prefix": "fd00:99:0:7::/64"}),
    ("nat64", {"pool_address": "10.0.1.100", "filtering": "endpoint_independent"}),
])
def test_random_packets_never_raise_and_emit_valid_packets(name: str, params: dict) -> None:
    rng = random.Random(17)
    box = build(name, **params)
    emitted = 0
    for step in range(3000):
        direction = rng.choice(list(Direction))
        for out in box.process(_packet(rng), direction, step * 0.001):
            emitted += 1
            if isinstance(out, Ipv6Packet):
                wire = encode_packet_v6(out)
                assert verify_checksums_v6(wire)
                back = decode_packet_v6(wire)
            else:
                wire = encode_packet(out)
                assert verify_checksums(wire)
                back = decode_packet(wire)
            assert (back.src, back.dst, back.tcp.src_port, back.tcp.dst_port) == (
                out.src, out.dst, out.tcp.src_port, out.tcp.dst_port)
    assert emitted > 1000
    assert box.counters.changed > 100
