"""nat64: RFC 6146 mapping, RFC 7915 header translation and checksums on codec packets."""

from __future__ import annotations

import random

import pytest

from middleboxes.nat64 import embed, extract
from middleboxes.spec import MiddleboxSpecError
from testbed.wire import decode_packet, encode_packet, verify_checksums
from testbed.wire.ipv6 import (
    Ipv6Extension,
    Ipv6Packet,
    decode_packet_v6,
    encode_packet_v6,
    verify_checksums_v6,
)
from testbed.wire.types import ACK, PSH, SYN, AddAddr, Dss, MpCapable, MpJoinSyn, TcpSegment
from tests.unit.middleboxes.packets import DOWN, UP, build, packet

POOL = "10.0.1.100"
CLIENT = "fd00:10:0:1::1"
SERVER4 = "10.0.100.2"
SERVER6 = "64:ff9b::a00:6402"


def nat64(**params):
    return build("nat64", pool_address=POOL, **params)


def v6(src=CLIENT, dst=SERVER6, options=(), flags=ACK, payload=b"", sport=40000, **kw) -> Ipv6Packet:
    return Ipv6Packet(src, dst, TcpSegment(sport, 5201, 11, 22, flags, 64240, list(options), payload),
                      **kw)


def v4_reply(port: int, src=SERVER4, options=(), flags=ACK, payload=b"", ttl=64):
    p = packet(DOWN, client=POOL, client_port=port, server=src, server_port=5201,
               options=list(options), flags=flags, payload=payload)
    p.ttl = ttl
    return p


def test_well_known_prefix_embeds_the_ipv4_address() -> None:
    import ipaddress

    assert embed(ipaddress.IPv6Network("64:ff9b::/96"), "192.0.2.33") == "64:ff9b::c000:221"  # RFC 6052 §2.4
    assert extract("64:ff9b::c000:221") == "192.0.2.33"


def test_an_mptcp_syn_becomes_ipv4_and_its_reply_ipv6_with_options_and_checksums_right() -> None:
    box = nat64(seed=3)
    expected_port = random.Random(3).randint(1024, 65535)
    options = [MpCapable(version=1, flags=0x81)]
    [out] = box.process(v6(options=options, flags=SYN, traffic_class=0x20, hop_limit=64), UP, 0.0)
    assert type(out).__name__ == "Packet"
    assert (out.src, out.tcp.src_port, out.dst, out.tcp.dst_port) == (POOL, expected_port, SERVER4, 5201)
    assert (out.ttl, out.tos, out.dont_fragment, out.ident) == (63, 0x20, True, 0)
    wire = encode_packet(out)
    assert verify_checksums(wire) and decode_packet(wire).tcp.options == options
    key = 0x0102030405060708
    [back] = box.process(v4_reply(expected_port, options=[MpCapable(version=1, flags=0x81, sender_key=key)],
                                  flags=SYN | ACK, ttl=60), DOWN, 0.0)
    assert isinstance(back, Ipv6Packet)
    assert (back.src, back.dst, back.tcp.src_port, back.tcp.dst_port, back.hop_limit) == (
        SERVER6, CLIENT, 5201, 40000, 59)
    wire6 = encode_packet_v6(back)
    assert verify_checksums_v6(wire6)
    assert decode_packet_v6(wire6).tcp.options == [MpCapable(version=1, flags=0x81, sender_key=key)]
    assert box.owned_addresses() == [POOL]
    assert box.counters.as_dict() == {"seen": 2, "changed": 2, "dropped": 0, "injected": 0}


def test_payload_and_every_mptcp_option_cross_unchanged() -> None:
    box = nat64()
    options = [Dss(data_ack=5, data_ack_64=False, dsn=9, subflow_seq=1, data_len=3),
               AddAddr(2, "fd00:10:0:2::1", hmac=77), MpJoinSyn(False, 1, 2, 3)]
    [out] = box.process(v6(options=options, flags=ACK | PSH, payload=b"abc"), UP, 0.0)
    assert (out.tcp.options, out.tcp.payload, out.tcp.seq, out.tcp.ack) == (options, b"abc", 11, 22)
    port = out.tcp.src_port
    announce = [AddAddr(1, "10.0.100.12", hmac=5)]  # the IPv4 server's other address, as sent
    [back] = box.process(v4_reply(port, options=announce), DOWN, 0.0)
    assert back.tcp.options == announce


def test_one_pool_port_per_client_endpoint_and_the_filter() -> None:
    box = nat64()
    [first] = box.process(v6(), UP, 0.0)
    [again] = box.process(v6(dst="64:ff9b::a00:6403"), UP, 0.0)
    [other] = box.process(v6(sport=40001), UP, 0.0)
    assert first.tcp.src_port == again.tcp.src_port != other.tcp.src_port
    assert box.process(v4_reply(first.tcp.src_port, src="10.0.9.9"), DOWN, 0.0) == []
    assert box.process(v4_reply(12, src=SERVER4), DOWN, 0.0) == []  # no mapping
    open_box = nat64(filtering="endpoint_independent")
    [mapped] = open_box.process(v6(), UP, 0.0)
    assert open_box.process(v4_reply(mapped.tcp.src_port, src="10.0.9.9"), DOWN, 0.0)
    assert box.state_counters() == {"mappings": 2, "expired": 0, "exhausted": 0}


def test_idle_mappings_expire() -> None:
    box = nat64(idle_timeout_s=10)
    [out] = box.process(v6(), UP, 0.0)
    assert box.process(v4_reply(out.tcp.src_port), DOWN, 11.0) == []
    assert box.state_counters()["expired"] == 1


def test_what_is_not_translated() -> None:
    box = nat64()
    native = v6(dst="fd00:10:0:100::2")
    assert box.process(native, UP, 0.0) == [native]  # native IPv6 beside the NAT64
    ipv4 = packet(UP)
    assert box.process(ipv4, UP, 0.0) == [ipv4]
    routed = v6(extensions=(Ipv6Extension(43, bytes((6, 2, 0, 1, 0, 0, 0, 0)) + bytes(16)),))
    assert box.process(routed, UP, 0.0) == []
    assert box.process(v6(hop_limit=1), UP, 0.0) == []
    options = (Ipv6Extension(60, bytes((6, 0, 1, 4, 0, 0, 0, 0))),)
    [out] = box.process(v6(extensions=options), UP, 0.0)  # destination options are dropped
    assert verify_checksums(encode_packet(out))


@pytest.mark.parametrize(("params", "message"), [
    ({"pool_address": "fd00::1"}, "an IPv6 address"),
    ({"pool_address": "nope"}, "expected an IPv4 address"),
    ({"pool_address": POOL, "prefix": "64:ff9b::/64"}, "only an IPv6 /96"),
    ({"pool_address": POOL, "prefix": "10.0.0.0/8"}, "only an IPv6 /96"),
    ({"pool_address": POOL, "port_min": 9, "port_max": 8}, "port_min 9 > port_max 8"),
])
def test_bad_parameters_are_one_line_errors(params: dict, message: str) -> None:
    with pytest.raises(MiddleboxSpecError, match=message) as caught:
        build("nat64", **params)
    assert "\n" not in str(caught.value)
