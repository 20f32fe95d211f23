"""The python target's echo application survives what a probe does to it."""

from __future__ import annotations

import random

from testbed.probe.memory import MemoryLink
from testbed.probe.session import Session
from testbed.wire import decode_packet, encode_packet
from testbed.wire.types import ACK, RST


def test_data_and_reset_in_one_batch_do_not_end_the_server():
    """The driver hands the app a batch's events after all its packets: data followed by a
    RST leaves a DataReceived for a connection that is already closed."""
    link = MemoryLink(["10.0.100.2"], 5201, seed=3)
    session = Session(link, "10.0.1.1", "10.0.100.2", 5201, rng=random.Random(4))
    session.connect()
    session.first_data(b"x")
    session.collect(0.2)
    batch = []
    link.send = batch.append  # type: ignore[method-assign]
    session.send_data(session.initial, b"hello")
    session.segment(session.initial, RST | ACK)
    for packet in batch:
        link.host.receive_packet(decode_packet(encode_packet(packet)), link.clock)
    link._pump()
    del link.send
    again = Session(link, "10.0.1.1", "10.0.100.2", 5201, rng=random.Random(5))
    assert again.connect() is not None  # the server still accepts
