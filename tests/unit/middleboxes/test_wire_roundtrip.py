"""Everything a middlebox emits must encode, decode back to the same packet, and checksum right."""

from __future__ import annotations

import dataclasses

import pytest

from testbed.wire import decode_packet, encode_packet, verify_checksums
from testbed.wire.types import EndOfOptions, Packet
from tests.unit.middleboxes.packets import build, mptcp_conversation

CONFIGS = [
    ("nat", {"public_address": "198.51.100.1"}),
    # the IPv6 translators on this IPv4 conversation: nptv6 passes it, nat64 passes the
    # client's IPv4 and drops the rest (their IPv6 packets: test_nptv6.py, test_nat64.py)
    ("nptv6", {"inside_prefix": "fd00:10:0:1::/64", "outside_prefix": "fd00:99:0:1::/64"}),
    ("nat64", {"pool_address": "198.51.100.1"}),
    ("strip_options", {}),
    ("strip_options", {"how": "nop"}),
    ("strip_options", {"what": ["unknown"], "packets": ["syn", "synack"], "how": "nop"}),
    ("strip_options", {"what": ["dss"], "packets": ["data", "fin"]}),
    ("rewrite_seq", {"direction": "both", "fix_sack": False}),
    ("coalesce", {"keep_options": "first", "mtu_bytes": 0}),
    ("coalesce", {"keep_options": "first"}),
    ("coalesce", {"keep_options": "last", "max_bytes": 4000}),
    ("split", {"mss_bytes": 300}),
    ("split", {"mss_bytes": 300, "options_on_pieces": "first"}),
    ("split", {"mss_bytes": 300, "options_on_pieces": "first_mptcp"}),
    ("rewrite_payload", {"pattern": "A", "replacement": "AA"}),
    ("rewrite_payload", {"pattern": "BB", "replacement": ""}),
    ("syn_firewall", {"action": "reset"}),
    ("drop", {"match": ["subflow"], "subflow_index": 2}),
    ("delay", {"match": ["any"], "delay_ms": 5, "jitter_ms": 5}),
]


def emitted(name: str, params: dict) -> list[Packet]:
    box = build(name, **params)
    out: list[Packet] = []
    for index, (packet, direction) in enumerate(mptcp_conversation()):
        now = index * 0.0001
        out += box.process(packet, direction, now)
        out += [p for p, _ in box.release(now)]
    out += [p for p, _ in box.release(100.0)]
    return out


@pytest.mark.parametrize(("name", "params"), CONFIGS,
                         ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
def test_emitted_packets_round_trip_with_valid_checksums(name: str, params: dict) -> None:
    packets = emitted(name, params)
    assert packets, "the configuration emitted nothing: the test would prove nothing"
    for packet in packets:
        data = encode_packet(packet)
        assert verify_checksums(data)
        decoded = decode_packet(data)
        assert encode_packet(decoded) == data
        decoded.tcp.checksum = None
        while decoded.tcp.options and isinstance(decoded.tcp.options[-1], EndOfOptions):
            decoded.tcp.options.pop()  # the encoder's zero padding decodes as EOL
        expected = dataclasses.replace(packet, tcp=dataclasses.replace(packet.tcp, checksum=None))
        assert decoded == expected


def test_every_middlebox_is_exercised() -> None:
    from middleboxes.registry import MIDDLEBOXES

    assert {name for name, _ in CONFIGS} == set(MIDDLEBOXES)


@pytest.mark.parametrize(("name", "params"), CONFIGS,
                         ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
def test_counters_add_up_and_change_log_describes_each_change(name: str, params: dict) -> None:
    box = build(name, **params, log_changes=True, log_limit=1000)
    conversation = mptcp_conversation()
    emitted_count = 0
    for index, (packet, direction) in enumerate(conversation):
        emitted_count += len(box.process(packet, direction, index * 0.0001))
    emitted_count += len(box.release(100.0))
    counters = box.counters
    assert counters.seen == len(conversation)
    if name != "coalesce":  # coalesce absorbs merged segments (counted as changed)
        assert emitted_count == counters.seen - counters.dropped + counters.injected
    entries = box.change_log.entries
    assert len(entries) >= (1 if counters.changed or counters.dropped else 0)
    for entry in entries:
        assert set(entry) >= {"time", "direction", "flow", "change"}
        assert entry["direction"] in ("upstream", "downstream") and entry["change"]
