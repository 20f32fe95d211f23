"""The named testbed topologies run in the simulator: same addresses, routes and bumps."""

from __future__ import annotations

import pytest

from testbed.sim.topology import TopologyError, network_from_topology
from tests.unit.sim.toy_endpoints import Burst, DropMatching, Echo, Sink, data_packet
from topologies import build_topology

SERVER = "10.0.100.2"


def test_two_path_keeps_each_source_on_its_own_path_both_ways() -> None:
    topology = build_topology("two_path", {"path_a": {"delay_ms": 5.0},
                                           "path_b": {"delay_ms": 20.0}})
    client = Burst([data_packet("10.0.1.1", SERVER, 1, 100), data_packet("10.0.2.1", SERVER, 2, 100)])
    network = network_from_topology(topology, {"client": client, "server": Echo()}, seed=1)
    network.run()
    echoes = {packet.tcp.seq: when for when, packet in client.received}
    serialization = 2 * 140 * 8 / 100e6  # 140-byte packets, 100 Mbit/s access links, both ways
    assert echoes[1] == pytest.approx(0.010 + serialization)
    assert echoes[2] == pytest.approx(0.040 + serialization)
    links = network.counters()["links"]
    for path, core in (("a", "core_a"), ("b", "core_b")):
        assert links[path]["upstream"]["packets_out"] == 1  # type: ignore[index]
        assert links[path]["downstream"]["packets_out"] == 1  # type: ignore[index]
        assert links[core]["upstream"]["packets_out"] == 1  # type: ignore[index]


def test_middleboxes_sit_at_their_bump_node() -> None:
    topology = build_topology("two_path")
    dropper = DropMatching(lambda packet: True)
    client = Burst([data_packet("10.0.1.1", SERVER, 1, 100), data_packet("10.0.2.1", SERVER, 2, 100)])
    network = network_from_topology(topology, {"client": client, "server": Echo()},
                                    middleboxes={"mb_b": [dropper]})
    network.run()
    assert [packet.tcp.seq for _, packet in client.received] == [1]
    assert dropper.counters.dropped == 1


def test_topology_link_parameters_and_queue_carry_over() -> None:
    topology = build_topology("two_path", {"rate_mbit": 20.0, "delay_ms": 10.0,
                                           "loss_pct": 1.0})
    network = network_from_topology(topology, {"client": Sink(), "server": Sink()})
    params = network.link("a").shapers[next(iter(network.link("a").shapers))].params
    assert (params.rate_mbit, params.delay_ms, params.loss_pct) == (20.0, 10.0, 1.0)
    assert params.queue_pkts == topology.links["a"].params.effective_queue_pkts()


def test_unsupported_or_incomplete_requests_are_refused_by_name() -> None:
    with pytest.raises(TopologyError, match="no endpoint given for host 'server'"):
        network_from_topology(build_topology("two_path"), {"client": Sink()})
    with pytest.raises(TopologyError, match="masquerades"):
        network_from_topology(build_topology("nat_home"), {"client": Sink(), "server": Sink()})
    with pytest.raises(TopologyError, match="not middlebox nodes"):
        network_from_topology(build_topology("two_path"), {"client": Sink(), "server": Sink()},
                              middleboxes={"ra": []})
