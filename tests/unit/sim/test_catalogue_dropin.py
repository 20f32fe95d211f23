"""Middleboxes from the catalogue (middleboxes/) drop into simulated links unchanged."""

from __future__ import annotations

import random

import pytest

from middleboxes.contract import Middlebox
from middleboxes.registry import build_middlebox
from testbed.net.params import LinkParams
from testbed.sim.network import SimNetwork
from testbed.wire.types import Dss, Packet
from tests.unit.sim.toy_endpoints import Burst, Sink, data_packet


def run_through(box: Middlebox, count: int = 10, codec: bool = True) -> list[tuple[float, Packet]]:
    network = SimNetwork(1, codec=codec)
    sink = Sink()
    packets = [data_packet("10.0.0.1", "10.0.0.2", 1000 + i * 100, 100) for i in range(count)]
    for packet in packets:
        packet.tcp.options.append(Dss(data_ack=1, dsn=5000 + packet.tcp.seq, subflow_seq=1,
                                      data_len=100))
    sender = network.add_endpoint("a", Burst(packets))
    network.add_link("ab", sender, network.add_endpoint("b", sink), LinkParams(delay_ms=2),
                     a_address="10.0.0.1", b_address="10.0.0.2", middleboxes=[box])
    network.run()
    return sink.received


def test_catalogue_delay_box_holds_and_the_simulator_releases_on_time() -> None:
    box = build_middlebox("delay", {"match": ["data"], "delay_ms": 30.0}, random.Random(1))
    received = run_through(box)
    assert len(received) == 10
    assert [when for when, _ in received] == pytest.approx([0.032] * 10)


def test_catalogue_strip_options_removes_dss_in_flight() -> None:
    box = build_middlebox("strip_options", {"what": ["dss"], "packets": ["data"]},
                          random.Random(1))
    received = run_through(box, count=3)
    assert all(packet.tcp.find(Dss) is None for _, packet in received)
    assert box.counters.changed == 3


def test_catalogue_drop_every_nth_data_segment() -> None:
    box = build_middlebox("drop", {"match": ["every_nth_data"], "every_nth": 3},
                          random.Random(1))
    received = run_through(box, count=9, codec=False)
    assert len(received) == 6 and box.counters.dropped == 3
