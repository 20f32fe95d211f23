"""The token-aware balancer's decisions, on packets built with the project's codec."""

from __future__ import annotations

from testbed.balancer.token_lb import TokenTable, hash_choice
from testbed.wire.crypto import key_to_token
from testbed.wire.ipv4 import encode_packet
from testbed.wire.types import ACK, SYN, MpCapable, MpJoinSyn, Packet, TcpSegment

VIP = "10.0.200.1"
SERVER_KEY = 0x1122334455667788


def syn(src: str, sport: int, options: list) -> bytes:
    return encode_packet(Packet(src, VIP, TcpSegment(sport, 5201, 1000, 0, SYN, 64000, options)))


def synack(dport: int, options: list) -> bytes:
    segment = TcpSegment(5201, dport, 5000, 1001, SYN | ACK, 64000, options)
    return encode_packet(Packet(VIP, "10.0.1.1", segment))


def test_the_same_five_tuple_always_hashes_to_the_same_backend_and_the_hash_spreads() -> None:
    first = hash_choice("10.0.1.1", 40000, VIP, 5201, 3)
    assert all(hash_choice("10.0.1.1", 40000, VIP, 5201, 3) == first for _ in range(5))
    chosen = {hash_choice("10.0.1.1", port, VIP, 5201, 3) for port in range(40000, 40100)}
    assert chosen == {1, 2, 3}


def test_a_join_goes_to_the_backend_whose_synack_carried_the_key_of_its_token() -> None:
    table = TokenTable(3)
    capable_syn = syn("10.0.1.1", 40000, [MpCapable()])
    chosen = table.decide(capable_syn, 0)
    assert chosen == hash_choice("10.0.1.1", 40000, VIP, 5201, 3)
    # the SYN/ACK comes back with its flow's mark (conntrack), and carries the backend's key
    assert table.decide(synack(40000, [MpCapable(sender_key=SERVER_KEY)]), chosen) is None
    assert table.tokens == {key_to_token(SERVER_KEY): chosen}
    # joins from many source ports, which would hash anywhere, all follow the token
    for port in range(41000, 41020):
        join = syn("10.0.2.1", port, [MpJoinSyn(False, 1, key_to_token(SERVER_KEY), 7)])
        assert table.decide(join, 0) == chosen
    assert table.stats.joins_by_token == 20 and table.stats.tokens_learnt == 1


def test_a_join_with_an_unknown_token_is_hashed_like_any_syn() -> None:
    table = TokenTable(3)
    join = syn("10.0.2.1", 41000, [MpJoinSyn(False, 1, 0xDEADBEEF, 7)])
    assert table.decide(join, 0) == hash_choice("10.0.2.1", 41000, VIP, 5201, 3)
    assert table.stats.joins_unknown_token == 1


def test_a_synack_without_a_mark_or_key_teaches_nothing() -> None:
    table = TokenTable(3)
    assert table.decide(synack(40000, [MpCapable(sender_key=SERVER_KEY)]), 0) is None  # no mark
    assert table.decide(synack(40001, []), 2) is None  # plain TCP
    assert table.tokens == {}
    assert table.stats.synacks_without_key == 2


def test_bad_packets_are_counted_and_passed_on_unmarked() -> None:
    table = TokenTable(3)
    good = syn("10.0.1.1", 40000, [MpCapable()])
    for bad in (b"", b"\x45", b"\x60" + bytes(60), good[:30], bytes(40), good[:20] + b"\xff" * 40):
        assert table.decide_safely(bad, 0) is None
    assert table.stats.bad_packets == 6
    assert table.decide_safely(good, 0) in (1, 2, 3)
