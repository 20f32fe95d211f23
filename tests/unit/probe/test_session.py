"""The prober's session bookkeeping: data ACKs count the target's data once by DSN."""

from __future__ import annotations

import random

from testbed.probe.memory import MemoryLink
from testbed.probe.session import U64, Session, describe_option
from testbed.wire.types import ACK, PSH, Dss, MpCapable, Packet, TcpSegment


def _session() -> Session:
    link = MemoryLink(["10.0.100.2"], 5201, seed=5)
    session = Session(link, "10.0.1.1", "10.0.100.2", 5201, rng=random.Random(9))
    session.connect()
    return session


def _from_target(session: Session, sub, seq_offset: int, dss: Dss, payload: bytes) -> Packet:
    tcp = TcpSegment(src_port=sub.remote_port, dst_port=sub.local_port,
                     seq=(sub.peer_isn + 1 + seq_offset) & 0xFFFFFFFF, ack=sub.snd_nxt,
                     flags=ACK | PSH, window=1000, options=[dss], payload=payload)
    return Packet(src=sub.remote, dst=sub.local, tcp=tcp)


def test_same_dsn_on_two_subflows_is_counted_once():
    session = _session()
    sub = session.initial
    second = session.new_subflow("10.0.2.1")
    second.peer_isn, second.rcv_nxt = 1000, 1001
    base = (session.remote_idsn + 1) & U64
    session._take(sub, _from_target(session, sub, 0, Dss(dsn=base, subflow_seq=1, data_len=10), b"x" * 10))
    session._take(second, Packet(src=second.remote, dst=second.local, tcp=TcpSegment(
        src_port=second.remote_port, dst_port=second.local_port, seq=1001, ack=0, flags=ACK | PSH,
        window=1000, options=[Dss(dsn=base, subflow_seq=1, data_len=10)], payload=b"x" * 10)))
    assert session.data_ack_value() == (base + 10) & U64


def test_32_bit_dsn_and_bare_data_fin_advance_the_data_ack():
    session = _session()
    sub = session.initial
    base = (session.remote_idsn + 1) & U64
    session._take(sub, _from_target(session, sub, 0, Dss(dsn=base & 0xFFFFFFFF, dsn_64=False,
                                                           subflow_seq=1, data_len=4), b"abcd"))
    assert session.data_ack_value() == (base + 4) & U64
    fin = _from_target(session, sub, 4, Dss(dsn=(base + 4) & U64, subflow_seq=0, data_len=1,
                                            data_fin=True), b"")
    session._take(sub, fin)
    assert session.data_ack_value() == (base + 5) & U64


def test_trace_lines_are_relative_and_name_the_options():
    session = _session()
    assert session.trace[0].split()[1:4] == [">", "sf0", "S"]
    assert "seq=0 ack=1" in session.trace[1]
    assert describe_option(MpCapable(flags=0x81)) == "mpc v1 flags=0x81"
