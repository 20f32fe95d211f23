"""Every catalogue box on IPv6 packets: it does to the TCP segments what it does on IPv4, and
what it emits is IPv6 that encodes with a correct IPv6 pseudo-header checksum and decodes back."""

from __future__ import annotations

import dataclasses

import pytest

from middleboxes.flows import FlowKey
from middleboxes.predicates import parse_subflow_tuple
from testbed.wire import decode_packet_v6, encode_packet_v6, verify_checksums_v6
from testbed.wire.ipv6 import Ipv6Extension, Ipv6Packet
from testbed.wire.types import ACK, PSH, SYN, EndOfOptions, Packet, TcpSegment
from tests.unit.middleboxes.packets import (
    DOWN,
    SYN_OPTIONS,
    UP,
    as_ipv6,
    build,
    ipv6_of,
    mptcp_conversation,
    mptcp_conversation_v6,
    packet,
)
from tests.unit.middleboxes.test_wire_roundtrip import CONFIGS

# nat: NAT44; nptv6 and nat64 translate IPv6 by design (test_nptv6.py, test_nat64.py)
FAMILY_AGNOSTIC = [(name, params) for name, params in CONFIGS if name not in ("nat", "nptv6", "nat64")]


def run(name: str, params: dict, conversation: list) -> tuple[list, dict]:
    box = build(name, **params)
    out: list = []
    for index, (item, direction) in enumerate(conversation):
        now = index * 0.0001
        out += [(p, direction) for p in box.process(item, direction, now)]
        out += box.release(now)
    out += box.release(100.0)
    return out, box.counters.as_dict()


def segment_without_checksum(tcp: TcpSegment) -> TcpSegment:
    return dataclasses.replace(tcp, checksum=None, options=list(tcp.options))


@pytest.mark.parametrize(("name", "params"), FAMILY_AGNOSTIC,
                         ids=[f"{n}-{i}" for i, (n, _) in enumerate(FAMILY_AGNOSTIC)])
def test_a_box_does_on_ipv6_what_it_does_on_ipv4(name: str, params: dict) -> None:
    out_v4, counters_v4 = run(name, params, mptcp_conversation())
    out_v6, counters_v6 = run(name, params, mptcp_conversation_v6())
    assert out_v6, "the configuration emitted nothing: the test would prove nothing"
    assert counters_v6 == counters_v4
    if name == "rewrite_payload":
        # A grown segment is cut to fit mtu_bytes, behind 60 header bytes on IPv6 and 40 on
        # IPv4: the cuts differ, the bytes delivered do not.
        for direction in (UP, DOWN):
            assert (b"".join(p.tcp.payload for p, d in out_v6 if d is direction)
                    == b"".join(p.tcp.payload for p, d in out_v4 if d is direction))
        assert all(type(p) is Ipv6Packet for p, _ in out_v6)
        return
    assert [(segment_without_checksum(p.tcp), d) for p, d in out_v6] == [
        (segment_without_checksum(p.tcp), d) for p, d in out_v4]
    for (v6, _), (v4, _) in zip(out_v6, out_v4, strict=True):
        assert type(v6) is Ipv6Packet and type(v4) is Packet
        assert (v6.src, v6.dst) == (ipv6_of(v4.src), ipv6_of(v4.dst))


@pytest.mark.parametrize(("name", "params"), FAMILY_AGNOSTIC,
                         ids=[f"{n}-{i}" for i, (n, _) in enumerate(FAMILY_AGNOSTIC)])
def test_emitted_ipv6_packets_round_trip_with_valid_checksums(name: str, params: dict) -> None:
    out, _ = run(name, params, mptcp_conversation_v6())
    for emitted, _ in out:
        data = encode_packet_v6(emitted)
        assert verify_checksums_v6(data)
        decoded = decode_packet_v6(data)
        assert encode_packet_v6(decoded) == data
        decoded.tcp.checksum = None
        while decoded.tcp.options and isinstance(decoded.tcp.options[-1], EndOfOptions):
            decoded.tcp.options.pop()
        assert decoded == dataclasses.replace(
            emitted, tcp=dataclasses.replace(emitted.tcp, checksum=None))


def test_rewrite_seq_on_ipv6_bytes_checksum_verified_by_the_codec() -> None:
    box = build("rewrite_seq", direction="both", fix_sack=False)
    original = encode_packet_v6(as_ipv6(packet(UP, seq=5000, flags=ACK | PSH, payload=b"x" * 100)))
    [out] = box.process(decode_packet_v6(original), UP, 0.0)
    data = encode_packet_v6(out)
    assert data[:40] == original[:40]  # the IPv6 header is untouched
    assert data[44:48] != original[44:48] and verify_checksums_v6(data)


def test_syn_firewall_resets_an_ipv6_syn_with_an_ipv6_rst() -> None:
    box = build("syn_firewall", action="reset")
    syn = as_ipv6(packet(UP, flags=SYN, options=[*SYN_OPTIONS, *mptcp_conversation()[0][0].tcp.options[-1:]]))
    syn.traffic_class = 0x20
    assert box.process(syn, UP, 0.0) == []
    [(reset, direction)] = box.release(0.0)
    assert direction is DOWN and type(reset) is Ipv6Packet
    assert (reset.src, reset.dst, reset.traffic_class) == (syn.dst, syn.src, 0x20)
    assert verify_checksums_v6(encode_packet_v6(reset))


def test_split_pieces_of_an_ipv6_packet_keep_its_extension_headers() -> None:
    extension = Ipv6Extension(60, bytes((6, 0, 1, 4, 0, 0, 0, 0)))
    big = dataclasses.replace(as_ipv6(packet(UP, flags=ACK, payload=b"y" * 1000)),
                              extensions=(extension,), flow_label=7)
    pieces = build("split", mss_bytes=300).process(big, UP, 0.0)
    assert [len(p.tcp.payload) for p in pieces] == [300, 300, 300, 100]
    assert all(p.extensions == (extension,) and p.flow_label == 7 for p in pieces)


def test_coalesce_and_rewrite_payload_size_ipv6_packets_to_the_mtu_with_60_header_bytes() -> None:
    box = build("coalesce", mtu_bytes=1500, hold_ms=10.0)
    options = packet(UP).tcp.options
    assert box.capacity(options, 60) == box.capacity(options) - 20
    grower = build("rewrite_payload", pattern="A", replacement="AA", mtu_bytes=1500)
    segment = as_ipv6(packet(UP, flags=ACK, payload=b"A" * 800))
    pieces = grower.process(segment, UP, 0.0)
    assert sum(len(p.tcp.payload) for p in pieces) == 1600
    assert all(len(encode_packet_v6(p)) <= 1500 for p in pieces)
    assert max(len(encode_packet_v6(p)) for p in pieces) > 1480  # filled up to the IPv6 MTU


def test_subflow_tuple_matches_an_ipv6_flow_in_either_order() -> None:
    client, server = ipv6_of("10.0.0.1"), ipv6_of("10.0.1.1")
    assert parse_subflow_tuple(f"[{server}]:5201-[{client}]:40000") == FlowKey(
        server, 5201, client, 40000)
    box = build("drop", match=["subflow"], subflow_tuple=f"[{server}]:5201-[{client}]:40000")
    assert box.process(as_ipv6(packet(UP)), UP, 0.0) == []
    assert box.process(as_ipv6(packet(DOWN)), DOWN, 0.0) == []
    other = as_ipv6(packet(UP, client_port=40001))
    assert box.process(other, UP, 0.0) == [other]


def test_change_log_writes_ipv6_flows_with_brackets() -> None:
    box = build("rewrite_seq", direction="both", log_changes=True, log_limit=10)
    box.process(as_ipv6(packet(UP, flags=ACK, payload=b"z")), UP, 0.0)
    [entry] = box.change_log.entries
    assert entry["flow"].startswith(f"[{ipv6_of('10.0.0.1')}]:40000>")
