"""The MP_CAPABLE C flag (RFC 8684 3.1): set by a server asked not to be joined at its
initial address/port, honoured by a client, which joins announced addresses only."""

from __future__ import annotations

from testbed.mptcp.config import StackConfig
from testbed.wire.types import MPCAPABLE_FLAG_NO_MORE_SUBFLOWS, MpCapable, MpJoinSyn

from .harness import Pair
from .test_transfer import _open, _payload, transfer

TWO_CLIENT = ["10.0.0.1", "10.0.0.2"]
TWO_SERVER = ["10.0.1.1", "10.0.1.2"]
NO_JOIN_ID0 = {"allow_join_initial_addr_port": False}


def _join_targets(pair: Pair) -> list[tuple[str, str]]:
    return [(p.src, p.dst) for _, d, p in pair.sent
            if d == "c2s" and p.tcp.find(MpJoinSyn) is not None]


def _capable_flags(pair: Pair, direction: str) -> list[int]:
    return [o.flags for o in pair.sent_options(direction, MpCapable)]


def test_server_sets_c_and_client_joins_only_the_announced_address() -> None:
    pair = Pair(client_addresses=TWO_CLIENT, server_addresses=TWO_SERVER,
                server_config=StackConfig(**NO_JOIN_ID0))
    client, server = _open(pair, warm=True)
    data = _payload(300_000)
    assert transfer(pair, client, server, data) == data
    server_flags = _capable_flags(pair, "s2c")
    assert server_flags and all(f & MPCAPABLE_FLAG_NO_MORE_SUBFLOWS for f in server_flags)
    assert not any(f & MPCAPABLE_FLAG_NO_MORE_SUBFLOWS for f in _capable_flags(pair, "c2s"))
    assert client.handshake.remote_denies_initial_join and not server.handshake.remote_denies_initial_join
    joins = _join_targets(pair)
    assert sorted(joins) == [("10.0.0.1", "10.0.1.2"), ("10.0.0.2", "10.0.1.2")]
    assert server.counters["MPJoinAckRx"] == 2


def test_without_c_the_client_also_joins_the_initial_address() -> None:
    pair = Pair(client_addresses=TWO_CLIENT, server_addresses=TWO_SERVER)
    client, _ = _open(pair, warm=True)
    pair.run(0.5)
    assert not any(f & MPCAPABLE_FLAG_NO_MORE_SUBFLOWS for f in _capable_flags(pair, "s2c"))
    assert ("10.0.0.2", "10.0.1.1") in _join_targets(pair)
    assert not client.handshake.remote_denies_initial_join


def test_c_with_nothing_announced_leaves_one_subflow() -> None:
    for path_manager in ("fullmesh", "ndiffports"):
        pair = Pair(client_addresses=TWO_CLIENT,
                    client_config=StackConfig(path_manager=path_manager),
                    server_config=StackConfig(**NO_JOIN_ID0))
        client, server = _open(pair, warm=True)
        data = _payload(100_000)
        assert transfer(pair, client, server, data) == data
        assert _join_targets(pair) == [], path_manager
        assert len(client.live_subflows) == 1


def test_client_sets_c_on_its_syn_and_third_ack() -> None:
    pair = Pair(client_config=StackConfig(**NO_JOIN_ID0))
    client, server = _open(pair, warm=True)
    flags = _capable_flags(pair, "c2s")
    assert len(flags) >= 2 and all(f & MPCAPABLE_FLAG_NO_MORE_SUBFLOWS for f in flags)
    assert server.handshake.remote_denies_initial_join and client.mode == server.mode == "mptcp"


def test_c_flag_and_an_address_announced_with_a_port() -> None:
    pair = Pair(client_addresses=TWO_CLIENT, server_addresses=TWO_SERVER,
                server_config=StackConfig(path_manager="none", **NO_JOIN_ID0))
    _, server = _open(pair, warm=True)
    server.add_address("10.0.1.2", port=5202)
    pair.run(0.5)
    joins = [(p.src, p.dst, p.tcp.dst_port) for _, d, p in pair.sent
             if d == "c2s" and p.tcp.find(MpJoinSyn) is not None]
    assert sorted(joins) == [("10.0.0.1", "10.0.1.2", 5202), ("10.0.0.2", "10.0.1.2", 5202)]
    assert server.counters["MPJoinAckRx"] == 2
