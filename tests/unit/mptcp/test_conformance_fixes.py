"""Fixes the conformance prober found in the stack, each checked on the stack's own state.

- MP_CAPABLE with B (extensibility) set is ignored on a SYN (RFC 8684 3.1);
- the first data with MP_CAPABLE and a data-level length completes the handshake when the
  third ACK was lost (3.1): it is a mapping, not data without one;
- an infinite mapping with subflow sequence 0 (the form Linux sends) maps from the segment
  that carries it;
- a mapping without the negotiated checksum closes the subflow with a RST (3.3.1).
"""

from __future__ import annotations

import random

from testbed.probe.memory import MemoryLink
from testbed.probe.session import Session
from testbed.wire.types import (
    ACK,
    MPCAPABLE_FLAG_CHECKSUM,
    MPCAPABLE_FLAG_EXTENSIBILITY,
    PSH,
    RST,
    Dss,
    MpCapable,
)

H = 0x01


def _pair() -> tuple[MemoryLink, Session]:
    link = MemoryLink(["10.0.100.2"], 5201, seed=3)
    return link, Session(link, "10.0.1.1", "10.0.100.2", 5201, rng=random.Random(4))


def _connection(link: MemoryLink):
    (connection,) = link.host.connections
    return connection


def test_b_flag_syn_gets_plain_synack():
    link, session = _pair()
    answer = session.mp_capable_syn(H | MPCAPABLE_FLAG_EXTENSIBILITY)
    assert answer is not None and answer.tcp.find(MpCapable) is None
    assert _connection(link).counters["MPCapableSYNRX"] == 0


def test_first_data_without_third_ack_is_a_mapping():
    link, session = _pair()
    session.connect(third_ack=False)
    session.first_data(b"hello")
    assert session.data_acked(session.initial, session.dsn()) is not None
    connection = _connection(link)
    assert connection.fallback.mode == "mptcp" and connection.bytes_delivered == 5


def test_infinite_mapping_with_subflow_seq_zero_delivers_the_segment():
    link, session = _pair()
    session.connect()
    session.first_data(b"first")
    session.data_acked(session.initial, session.dsn())
    session.segment(session.initial, ACK | PSH,
                    [Dss(dsn=session.dsn(), subflow_seq=0, data_len=0)], b"after")
    session.collect(0.1)
    connection = _connection(link)
    assert connection.counters["InfiniteMapRx"] == 1
    assert connection.bytes_delivered == 10


def test_mapping_without_negotiated_checksum_is_reset():
    link, session = _pair()
    session.connect(flags=H | MPCAPABLE_FLAG_CHECKSUM)
    session.first_data(b"first", flags=H | MPCAPABLE_FLAG_CHECKSUM)
    session.data_acked(session.initial, session.dsn())
    connection = _connection(link)
    dss = session.mapping(session.initial, 4, payload=b"bare")
    session.segment(session.initial, ACK | PSH, [Dss(data_ack=dss.data_ack, dsn=dss.dsn,
                                                     subflow_seq=dss.subflow_seq, data_len=4)], b"bare")
    assert session.expect(session.initial, lambda p: bool(p.tcp.flags & RST), 0.5) is not None
    assert connection.counters["DSSNoChecksum"] == 1
