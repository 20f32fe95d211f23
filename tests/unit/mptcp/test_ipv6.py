"""The stack over IPv6 and dual stack, in the in-memory pair (every packet through the codec of
its family): IPv6 subflows, the IPv6 MSS, ADD_ADDR of either family on a subflow of the other,
joins only within a family."""

from __future__ import annotations

import hashlib

import pytest

from testbed.mptcp.config import StackConfig
from testbed.mptcp.driver.stack_codec import decode_stack_packet, encode_stack_packet
from testbed.mptcp.errors import LocalProtocolError
from testbed.wire.crypto import add_addr_hmac
from testbed.wire.types import AddAddr, MaximumSegmentSize, MpJoinSyn

from .harness import Pair
from .test_transfer import _open, _payload, transfer

CLIENT_DUAL = ["10.0.0.1", "fd00:a::1"]
SERVER_DUAL = ["10.0.1.1", "fd00:b::1"]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _data_bytes_by_subflow(pair: Pair, direction: str) -> dict[tuple[str, str], int]:
    carried: dict[tuple[str, str], int] = {}
    for _, where, packet in pair.sent:
        if where == direction and packet.tcp.payload:
            key = (packet.src, packet.dst)
            carried[key] = carried.get(key, 0) + len(packet.tcp.payload)
    return carried


def test_ipv6_only_connection_moves_data_with_the_ipv6_mss() -> None:
    pair = Pair(client_addresses=["fd00:a::1"], server_addresses=["fd00:b::1"])
    client, server = _open(pair)
    data = _payload(300_000, 3)
    assert _sha(transfer(pair, client, server, data)) == _sha(data)
    assert client.stats()["outcome"] == "mptcp"
    syn_mss = [o.mss for _, _, p in pair.sent for o in p.tcp.options if type(o) is MaximumSegmentSize]
    assert syn_mss and set(syn_mss) == {StackConfig().mss - 20}  # 1440: 20 bytes more header
    biggest = max(len(p.tcp.payload) for _, _, p in pair.sent)
    assert biggest <= 1440 - 12 - 20  # timestamps (12) and the data segment's DSS (20)
    packet = pair.sent[0][2]
    raw = encode_stack_packet(packet)
    assert raw[0] >> 4 == 6 and int.from_bytes(raw[4:6], "big") == len(raw) - 40
    assert decode_stack_packet(raw).src == "fd00:a::1"


def test_addresses_are_compared_in_one_spelling() -> None:
    pair = Pair(client_addresses=["FD00:A:0:0::1"], server_addresses=["fd00:b:0::1"])
    client, server = _open(pair)
    assert client.local_address == "fd00:a::1" and client.remote_address == "fd00:b::1"
    data = _payload(20_000, 4)
    assert transfer(pair, client, server, data) == data


@pytest.mark.parametrize("initial_v6", [False, True])
def test_dual_stack_announces_the_other_family_and_joins_within_it(initial_v6: bool) -> None:
    server_addresses = SERVER_DUAL[::-1] if initial_v6 else SERVER_DUAL
    pair = Pair(client_addresses=CLIENT_DUAL, server_addresses=server_addresses,
                server_config=StackConfig(path_manager="announce"))
    client, server = _open(pair, warm=True)
    assert (":" in client.local_address) == initial_v6  # the local address of the remote's family
    pair.run(0.5)
    announced = [o for o in pair.sent_options("s2c", AddAddr) if not o.echo]
    other = server_addresses[1]
    assert [o.address for o in announced] == [other]
    option = announced[0]
    assert option.hmac == add_addr_hmac(server.handshake.local_key, client.handshake.local_key,
                                        option.address_id, other, None)
    carriers = [p for _, d, p in pair.sent if d == "s2c" and p.tcp.find(AddAddr) is not None]
    assert all((":" in p.src) == initial_v6 for p in carriers)  # sent on the other family
    echoes = [o for o in pair.sent_options("c2s", AddAddr) if o.echo]
    assert echoes and echoes[0].address == other
    joins = [(p.src, p.dst) for _, d, p in pair.sent if d == "c2s" and p.tcp.find(MpJoinSyn)]
    own = CLIENT_DUAL[0] if ":" not in other else CLIENT_DUAL[1]
    assert joins == [(own, other)]  # no IPv4 -> IPv6 attempt
    data = _payload(600_000, 5)
    assert _sha(transfer(pair, client, server, data)) == _sha(data)
    carried = _data_bytes_by_subflow(pair, "c2s")
    families = {":" in src for (src, _dst), size in carried.items() if size > 100_000}
    assert families == {False, True}, carried
    assert len(client.live_subflows) == 2 and client.stats()["outcome"] == "mptcp"


def test_a_subflow_across_families_is_refused() -> None:
    pair = Pair(client_addresses=CLIENT_DUAL, server_addresses=SERVER_DUAL)
    with pytest.raises(LocalProtocolError, match="not of one family"):
        pair.client.connect("fd00:b::1", 5201, now=0.0, local_address="10.0.0.1")
    client, _ = _open(pair, warm=True)
    with pytest.raises(LocalProtocolError, match="not of one family"):
        client.open_subflow("fd00:a::1", "10.0.1.1", 5201, now=pair.now)


def test_the_driver_decode_of_ipv6_agrees_with_the_full_decoder() -> None:
    import random

    from testbed.wire import WireError, decode_packet_v6, encode_packet_v6
    from testbed.wire.ipv6 import Ipv6Extension, Ipv6Packet
    from testbed.wire.types import ACK, Dss, TcpSegment, Timestamps

    rng = random.Random(17)
    for _ in range(200):
        segment = TcpSegment(rng.randrange(1, 65536), rng.randrange(1, 65536), rng.getrandbits(32),
                             rng.getrandbits(32), ACK, rng.randrange(65536),
                             [Timestamps(rng.getrandbits(32), 1), Dss(data_ack=rng.getrandbits(64))],
                             rng.randbytes(rng.randrange(0, 300)))
        extensions = (Ipv6Extension(60, bytes(8)),) if rng.random() < 0.3 else ()
        raw = encode_packet_v6(Ipv6Packet(f"fd00::{rng.randrange(1, 9)}", "fd00:1::1", segment,
                                          hop_limit=rng.randrange(256), traffic_class=rng.randrange(256),
                                          extensions=extensions))
        fast, full = decode_stack_packet(raw), decode_packet_v6(raw)
        assert (fast.src, fast.dst, fast.ttl, fast.tos, fast.tcp) == (
            full.src, full.dst, full.hop_limit, full.traffic_class, full.tcp)
        with pytest.raises(WireError):
            decode_stack_packet(raw[:-1] if segment.payload else raw[:50])


def test_remove_addr_of_the_ipv6_address_leaves_the_ipv4_subflow_carrying() -> None:
    from testbed.wire.types import RemoveAddr

    pair = Pair(client_addresses=CLIENT_DUAL, server_addresses=SERVER_DUAL,
                server_config=StackConfig(path_manager="announce"))
    client, server = _open(pair, warm=True)
    pair.run(0.5)
    assert sorted(":" in s.tcp.remote_address for s in client.live_subflows if not s.tcp.is_closed) \
        == [False, True]
    server.remove_address("fd00:b::1", now=pair.now)
    pair.run(0.5)
    removes = pair.sent_options("s2c", RemoveAddr)
    assert removes and removes[0].address_ids == (1,)
    open_remotes = [s.tcp.remote_address for s in client.live_subflows if not s.tcp.is_closed]
    assert open_remotes == ["10.0.1.1"]
    data = _payload(200_000, 6)
    assert _sha(transfer(pair, client, server, data)) == _sha(data)
