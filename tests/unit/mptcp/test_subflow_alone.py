"""The TCP subflow on its own (issue 11 point 1): no connection behind it. A segment goes in,
a `SegmentReceived` value comes out; replies wait for `send_due`; the only thing the subflow
asks of the layer above is an `OptionProvider` handed to the methods that send."""

from __future__ import annotations

import random

from testbed.mptcp.cc import CouplingGroup, create_congestion_control
from testbed.mptcp.config import StackConfig
from testbed.mptcp.scoreboard import SentSegment
from testbed.mptcp.subflow import OpeningStep, SegmentReceived, Subflow
from testbed.mptcp.tcp_state import TcpState
from testbed.wire.types import ACK, FIN, RST, SYN, Packet, TcpOption, TcpSegment

CONFIG = StackConfig()


class PlainTcp:
    """An OptionProvider with nothing to add; records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def handshake_options(self) -> list[TcpOption]:
        self.asked.append("handshake")
        return []

    def ack_options(self, budget: int) -> list[TcpOption]:
        self.asked.append("ack")
        return []

    def data_options(self, segment: SentSegment, budget: int) -> list[TcpOption]:
        self.asked.append("data")
        return []

    def receive_window(self) -> int:
        return 65535


def _subflow(local: str, remote: str, seed: int) -> Subflow:
    cc = create_congestion_control("reno", mss=CONFIG.mss, initial_window_segments=10,
                                   group=CouplingGroup())
    return Subflow(local_address=local, local_port=40000 if local < remote else 5201,
                   remote_address=remote, remote_port=5201 if local < remote else 40000,
                   config=CONFIG, rng=random.Random(seed), cc=cc, now=0.0, subflow_id=0)


def _only(subflow: Subflow) -> TcpSegment:
    packets: list[Packet] = subflow.take_output()
    assert len(packets) == 1, packets
    return packets[0].tcp


def _open() -> tuple[Subflow, Subflow, PlainTcp]:
    options = PlainTcp()
    client, server = _subflow("10.0.0.1", "10.0.1.1", 1), _subflow("10.0.1.1", "10.0.0.1", 2)
    client.open_active(0.0, options)
    server.open_passive(_only(client), 0.01, options)
    synack = _only(server)
    assert synack.flags == SYN | ACK
    received = client.receive(synack, 0.02)
    assert received.opening_step == OpeningStep.SYNACK and client.state is TcpState.ESTABLISHED
    assert client.take_output() == []  # the third ACK waits for send_due
    client.send_due(0.02, options)
    received = server.receive(_only(client), 0.03)
    assert received.opening_step == OpeningStep.THIRD_ACK
    assert server.state is TcpState.ESTABLISHED
    return client, server, options


def test_a_segment_goes_in_and_what_it_did_comes_out_as_a_value() -> None:
    client, server, options = _open()
    client.send_data(b"hello", None, 0.04, options)
    received = server.receive(_only(client), 0.05)
    assert isinstance(received, SegmentReceived)
    assert (received.data_offset, received.data, received.fin) == (1, b"hello", False)
    assert received.options_apply and received.acked is None
    # one in-order segment: a delayed ACK, armed but not sent
    server.send_due(0.05, options)
    assert server.take_output() == [] and server.delack_deadline is not None
    server.handle_timer(server.delack_deadline, options)
    received = client.receive(_only(server), 0.1)
    assert [(s.start, s.payload) for s in received.acked or []] == [(1, b"hello")]
    assert options.asked.count("handshake") == 2 and "data" in options.asked


def test_out_of_order_data_is_held_and_acknowledged_at_once() -> None:
    client, server, options = _open()
    client.send_data(b"aaaa", None, 0.04, options)
    first = _only(client)
    client.send_data(b"bbbb", None, 0.04, options)
    received = server.receive(_only(client), 0.05)
    assert received.data == b""  # a hole before it
    server.send_due(0.05, options)
    assert _only(server).ack == (server.irs + 1) & 0xFFFFFFFF  # a duplicate ACK at once
    received = server.receive(first, 0.06)
    assert (received.data_offset, received.data) == (1, b"aaaabbbb")


def test_fin_and_rst_are_reported_not_called_back() -> None:
    client, server, options = _open()
    assert client.close(0.04, options) is None  # an open subflow sends its FIN
    fin = _only(client)
    assert fin.flags & FIN
    received = server.receive(fin, 0.05)
    assert received.fin and server.state is TcpState.CLOSE_WAIT
    assert server.reset(options.receive_window(), [], "reset") == "reset"
    rst = _only(server)
    assert rst.flags & RST and server.reset(0) is None  # closed already: nothing to learn
    received = client.receive(rst, 0.06)
    assert received.rst and received.closed_reason == "reset"
    assert client.state is TcpState.CLOSED and client.close_reason == "reset"
