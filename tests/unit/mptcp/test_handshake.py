"""MP_CAPABLE and MP_JOIN handshakes, both roles, and the handshake fallbacks."""

from __future__ import annotations

import dataclasses

from testbed.mptcp.config import StackConfig
from testbed.mptcp.tcp_state import TcpState
from testbed.wire.tcp_options import options_length
from testbed.wire.types import (
    ACK,
    RST,
    SYN,
    MpCapable,
    MpJoinAck,
    MpJoinSyn,
    MpJoinSynAck,
    MpTcpRst,
    Packet,
)

from .harness import Pair
from .test_transfer import _open


def _strip(option_type: type, *, direction: str | None = None, flags: int | None = None):
    """A tamper function removing one option type from matching packets."""

    def tamper(packet: Packet, where: str) -> list[Packet]:
        if (direction is None or where == direction) and (
                flags is None or packet.tcp.flags == flags):
            packet.tcp.options = [o for o in packet.tcp.options if type(o) is not option_type]
        return [packet]

    return tamper


def _established(pair: Pair) -> bool:
    return "ConnectionAccepted" in pair.event_types("server")


def test_mp_capable_handshake_both_roles() -> None:
    pair = Pair()
    client = pair.connect()
    pair.run_until(lambda: _established(pair), 1.0)
    server = pair.server_connection()
    syn, synack, third = (p for _, _, p in pair.sent[:3])
    assert syn.tcp.flags == SYN and syn.tcp.find(MpCapable) == MpCapable(version=1, flags=0x01)
    assert synack.tcp.flags == SYN | ACK
    assert synack.tcp.find(MpCapable).sender_key == server.local_key
    mpc3 = third.tcp.find(MpCapable)
    assert (mpc3.sender_key, mpc3.receiver_key) == (client.local_key, server.local_key)
    assert client.mode == server.mode == "mptcp"
    assert client.remote_token == server.local_token
    assert client.counters["MPCapableSYNACKRX"] == 1
    assert server.counters["MPCapableSYNRX"] == 1 and server.counters["MPCapableACKRX"] == 1
    assert pair.event_types("client") == ["ConnectionEstablished"]
    assert pair.event_types("server") == ["ConnectionAccepted", "ConnectionEstablished"]
    for _, _, packet in pair.sent:
        assert options_length(packet.tcp.options) <= 40


def test_client_keeps_mp_capable_on_acks_until_server_dss() -> None:
    pair = Pair()
    client = pair.connect()
    pair.run_until(lambda: _established(pair), 1.0)
    client_subflow = client.live_subflows[0]
    assert not client_subflow.fully_established
    server = pair.server_connection()
    server.send(b"hello")
    pair.run(0.1)
    assert client_subflow.fully_established
    assert client.receive() == b"hello"


def test_first_data_carries_mp_capable_with_data_level_length() -> None:
    pair = Pair()
    client = pair.connect()
    pair.run_until(lambda: _established(pair), 1.0)
    client.send(b"x" * 100)
    pair.run(0.2)
    first_data = next(p for _, d, p in pair.sent if d == "c2s" and p.tcp.payload)
    option = first_data.tcp.find(MpCapable)
    assert option.data_len == 100 and option.receiver_key is not None
    assert pair.server_connection().receive() == b"x" * 100


def test_synack_without_mp_capable_falls_back_to_tcp() -> None:
    pair = Pair(tamper=_strip(MpCapable, direction="s2c"))
    client = pair.connect()
    pair.run_until(lambda: _established(pair), 1.0)
    assert client.mode == "fallback"
    assert client.counters["MPCapableFallbackSYNACK"] == 1
    assert "FallbackOccurred" in pair.event_types("client")
    client.send(b"plain tcp")
    pair.run(0.5)
    server = pair.server_connection()
    assert server.receive() == b"plain tcp"
    assert client.stats()["outcome"] == "fallback-syn"
    # once fallen back, no MPTCP option is ever sent again
    assert not pair.sent_options("c2s", MpCapable)[1:]


def test_third_ack_without_mp_capable_makes_server_fall_back() -> None:
    pair = Pair(tamper=_strip(MpCapable, direction="c2s", flags=ACK))
    client = pair.connect()
    pair.run_until(lambda: _established(pair), 1.0)
    server = pair.server_connection()
    assert server.counters["MPCapableFallbackACK"] == 1
    assert server.mode == "fallback" and server.stats()["outcome"] == "fallback-syn"
    server.send(b"from server")
    client.send(b"from client")
    pair.run(1.0)
    assert client.receive() == b"from server"
    assert server.receive() == b"from client"
    assert client.mode == "fallback"


def test_syn_retried_without_mp_capable_after_two_retransmissions() -> None:
    dropped: list[float] = []

    def drop_mpc_syns(packet: Packet, where: str) -> list[Packet]:
        if packet.tcp.flags == SYN and packet.tcp.find(MpCapable) is not None:
            dropped.append(pair.now)
            return []
        return [packet]

    pair = Pair(tamper=drop_mpc_syns)
    client = pair.connect()
    pair.run_until(lambda: _established(pair), 20.0)
    # SYN at 0, retransmissions after 1 s and 2 s more (RFC 6298 backoff), then a plain SYN
    assert dropped == [0.0, 1.0, 3.0]
    assert client.counters["MPCapableSYNTXDrop"] == 1
    assert client.mode == "fallback" and client.stats()["outcome"] == "fallback-syn"
    assert pair.server_connection().mode == "fallback"


def test_plain_tcp_client_against_mptcp_server() -> None:
    pair = Pair(client_config=StackConfig(mptcp_enabled=False))
    client = pair.connect()
    pair.run_until(lambda: _established(pair), 1.0)
    assert client.mode == "fallback" and pair.server_connection().mode == "fallback"
    assert not pair.sent_options("c2s", MpCapable)


def test_packet_to_closed_port_gets_rst() -> None:
    pair = Pair()
    pair.client.connect(pair.server_addresses[0], 9, now=0.0)  # nobody listens on 9
    pair.run(0.05)
    rst = [p for _, d, p in pair.sent if d == "s2c"]
    assert len(rst) == 1 and rst[0].tcp.flags == RST | ACK
    assert pair.event_types("client")[-1] == "ConnectionClosed"
    assert pair.events["client"][-1].reason == "reset"
    # packets for an address the host does not own are ignored
    pair.server.receive_packet(dataclasses.replace(rst[0], dst="192.0.2.9"), pair.now)
    assert pair.server.counters["NotOurAddress"] == 1


def _two_path_pair(**kwargs) -> Pair:
    return Pair(client_addresses=["10.0.0.1", "10.0.0.2"], **kwargs)


def test_mp_join_both_roles_and_fourth_ack() -> None:
    pair = _two_path_pair()
    client, _ = _open(pair, warm=True)
    pair.run_until(lambda: pair.event_types("client").count("SubflowEstablished") == 1, 1.0)
    server = pair.server_connection()
    join_syn = pair.sent_options("c2s", MpJoinSyn)[0]
    assert join_syn.receiver_token == server.local_token and join_syn.address_id == 1
    assert len(pair.sent_options("s2c", MpJoinSynAck)) == 1
    assert len(pair.sent_options("c2s", MpJoinAck)) == 1
    assert server.counters["MPJoinSynRx"] == 1 and server.counters["MPJoinAckRx"] == 1
    assert client.counters["MPJoinSynAckRx"] == 1
    assert [s.tcp.state for s in client.live_subflows] == [TcpState.ESTABLISHED] * 2
    join = client.live_subflows[1]
    assert join.is_join and join.fully_established and join.data_ready
    assert "SubflowEstablished" in pair.event_types("server")


def test_join_not_usable_until_fourth_ack() -> None:
    def drop_fourth_ack(packet: Packet, where: str) -> list[Packet]:
        # the server's first pure ACK on the join subflow (the fourth ACK) is lost
        if (where == "s2c" and packet.dst == "10.0.0.2" and packet.tcp.flags == ACK
                and not dropped):
            dropped.append(packet)
            return []
        return [packet]

    dropped: list[Packet] = []
    pair = _two_path_pair(tamper=drop_fourth_ack)
    client, _ = _open(pair, warm=True)
    pair.run_until(lambda: len(client.live_subflows) == 2 and client.live_subflows[1].tcp.state
                   is TcpState.ESTABLISHED, 1.0)
    join = client.live_subflows[1]
    assert not join.data_ready
    pair.run_until(lambda: join.data_ready, 5.0)
    # the initiator resent its third ACK (with MP_JOIN) on its retransmission timer
    assert len(pair.sent_options("c2s", MpJoinAck)) == 2


def test_forged_join_ack_hmac_is_rejected() -> None:
    def forge(packet: Packet, where: str) -> list[Packet]:
        options = packet.tcp.options
        for index, option in enumerate(options):
            if type(option) is MpJoinAck:
                options[index] = MpJoinAck(bytes(20))
        return [packet]

    pair = _two_path_pair(tamper=forge)
    client, _ = _open(pair, warm=True)
    pair.run(1.0)
    server = pair.server_connection()
    assert server.counters["MPJoinAckHMacFailure"] >= 1
    assert server.counters["MPJoinAckRx"] == 0
    resets = [p for _, d, p in pair.sent if d == "s2c" and p.tcp.flags & RST]
    assert resets and resets[0].tcp.find(MpTcpRst).reason == 1
    assert len([s for s in server.live_subflows if not s.tcp.is_closed]) == 1
    assert client.mode == "mptcp" and client.stats()["outcome"] == "subflow-rejected"


def test_forged_synack_hmac_is_rejected_by_initiator() -> None:
    def forge(packet: Packet, where: str) -> list[Packet]:
        options = packet.tcp.options
        for index, option in enumerate(options):
            if type(option) is MpJoinSynAck:
                options[index] = dataclasses.replace(option, sender_truncated_hmac=1234)
        return [packet]

    pair = _two_path_pair(tamper=forge)
    client, _ = _open(pair, warm=True)
    pair.run(1.0)
    assert client.counters["MPJoinSynAckHMacFailure"] == 1
    assert len(client.live_subflows) == 1


def test_join_with_unknown_token_gets_rst_with_reason() -> None:
    def corrupt_token(packet: Packet, where: str) -> list[Packet]:
        options = packet.tcp.options
        for index, option in enumerate(options):
            if type(option) is MpJoinSyn:
                options[index] = dataclasses.replace(option, receiver_token=0xDEADBEEF)
        return [packet]

    pair = _two_path_pair(tamper=corrupt_token)
    _open(pair, warm=True)
    pair.run(1.0)
    assert pair.server.counters["MPJoinNoTokenFound"] == 1
    rst = [p for _, d, p in pair.sent if d == "s2c" and p.tcp.flags & RST]
    assert rst[0].tcp.find(MpTcpRst).reason == 1


def test_join_stripped_leaves_connection_on_initial_subflow() -> None:
    pair = _two_path_pair(tamper=_strip(MpJoinSyn))
    client, _ = _open(pair, warm=True)
    pair.run(1.0)
    server = pair.server_connection()
    assert client.stats()["outcome"] == "subflow-rejected"
    client.send(b"still works")
    pair.run(0.5)
    assert server.receive() == b"still works"


def test_syn_timer_values_and_state_sequence() -> None:
    pair = Pair(tamper=lambda packet, where: [] if where == "c2s" else [packet])
    client = pair.connect()
    subflow = client.live_subflows[0].tcp
    assert subflow.state is TcpState.SYN_SENT
    assert pair.client.get_timer() == 1.0  # RFC 6298 initial RTO
    pair.collect()
    pair.now = 1.0
    pair.client.handle_timer(1.0)
    assert pair.client.get_timer() == 3.0  # backed off to 2 s
    pair.now = 3.0
    pair.client.handle_timer(3.0)
    assert pair.client.get_timer() == 7.0
    assert subflow.syn_transmissions == 3


def test_server_state_sequence_through_handshake() -> None:
    pair = Pair()
    pair.connect()
    pair.step()  # SYN reaches the server
    server_subflow = pair.server.connections[0].live_subflows[0].tcp
    assert server_subflow.state is TcpState.SYN_RECEIVED
    assert pair.server.get_timer() == 0.010 + 1.0  # SYN/ACK retransmission deadline
    pair.run_until(lambda: server_subflow.state is TcpState.ESTABLISHED, 1.0)
    assert pair.now == 0.030  # SYN, SYN/ACK, third ACK: three one-way delays
