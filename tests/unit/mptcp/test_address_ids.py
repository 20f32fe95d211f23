"""Address ids (RFC 8684 §3.4.1): id 0 is the initial subflow's address and port only. The
same address announced with another port is another address with an id of its own: Linux
ignores an ADD_ADDR with id 0 that is not the initial subflow's address and port (the
python-stack proxy's short-circuit announcement drew no join from Linux for that reason)."""

from __future__ import annotations

from typing import Any

from testbed.mptcp.config import StackConfig
from testbed.wire.types import AddAddr, MpJoinSyn, MpJoinSynAck, RemoveAddr

from .harness import Pair
from .test_transfer import _open

TWO_CLIENT = ["10.0.0.1", "10.0.0.2"]


def _server_connection() -> tuple[Pair, Any, str]:
    """A two-address client connected to a server whose path manager announces nothing by
    itself: (pair, the server's connection, its initial address)."""
    pair = Pair(client_addresses=TWO_CLIENT, server_config=StackConfig(path_manager="none"))
    _, server = _open(pair, warm=True)
    return pair, server, server.live_subflows[0].tcp.local_address


def test_the_initial_address_announced_with_another_port_gets_a_new_id() -> None:
    pair, server, initial = _server_connection()
    announced_id = server.add_address(initial, port=5202)
    pair.run(0.5)
    assert announced_id != 0
    sent = [o for o in pair.sent_options("s2c", AddAddr) if not o.echo]
    assert sent and {(o.address_id, o.address, o.port) for o in sent} == {(announced_id, initial, 5202)}
    joins = [p for _, d, p in pair.sent if d == "c2s" and p.tcp.find(MpJoinSyn) is not None]
    assert {p.tcp.dst_port for p in joins} == {5201, 5202}  # fullmesh: the port too
    # each MP_JOIN SYN/ACK names the address the join arrived at: 0 at the connection's own
    # port, the announced id at 5202
    answers = {p.tcp.src_port: p.tcp.find(MpJoinSynAck).address_id for _, d, p in pair.sent
               if d == "s2c" and p.tcp.find(MpJoinSynAck) is not None}
    assert answers == {5201: 0, 5202: announced_id}
    assert server.counters["MPJoinAckRx"] == len(joins)


def test_announcing_the_same_address_and_port_twice_reuses_its_id() -> None:
    _pair, server, initial = _server_connection()
    assert server.add_address(initial, port=5202) == server.add_address(initial, port=5202)
    assert server.signalling.local_address_id(initial) == 0
    # the connection's own port says nothing new: that is still the initial address, id 0
    own_port = server.live_subflows[0].tcp.local_port
    assert server.signalling.local_address_id(initial, own_port) == 0


def test_removing_an_address_withdraws_it_at_every_port() -> None:
    pair, server, initial = _server_connection()
    announced_id = server.add_address(initial, port=5202)
    pair.run(0.5)
    server.remove_address(initial)
    pair.run(0.5)
    removed = {i for o in pair.sent_options("s2c", RemoveAddr) for i in o.address_ids}
    assert removed == {0, announced_id}
